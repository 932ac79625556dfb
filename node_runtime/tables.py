"""Reading the parties' data files (CSV or Parquet, chosen by extension) with clear errors."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from protocols.errors import InputDataError
from protocols.ids import IdReject

CSV_SUFFIXES = {".csv", ".txt"}
PARQUET_SUFFIXES = {".parquet", ".pq"}


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise InputDataError(f"{path}: unknown file type {suffix!r}; use .csv or .parquet")


def read_table(path: str | Path, id_column: str, columns: list[str] | None = None) -> pa.Table:
    """Read a data file. The ID column is always read as text, so that codes with leading
    zeros and integer ids survive unchanged. ``columns`` limits what is read (the ID column
    is always included)."""
    path = Path(path)
    kind = _format_of(path)
    if not path.exists():
        raise InputDataError(f"{path}: no such file")
    if not path.is_file():
        raise InputDataError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise InputDataError(f"{path}: the file is empty")
    wanted = None if columns is None else list(dict.fromkeys([id_column, *columns]))
    try:
        if kind == "csv":
            table = pacsv.read_csv(
                path,
                convert_options=pacsv.ConvertOptions(
                    column_types={id_column: pa.string()},
                    include_columns=wanted,
                    include_missing_columns=False,
                ),
            )
        else:
            schema = pq.read_schema(path)
            if id_column not in schema.names:
                raise InputDataError(_missing(path, id_column, schema.names))
            table = pq.read_table(path, columns=wanted)
    except InputDataError:
        raise
    except (pa.ArrowInvalid, pa.ArrowKeyError, OSError) as exc:
        message = str(exc)
        if "include_columns" in message or "No match for FieldRef" in message:
            names = _header_names(path, kind)
            missing = [c for c in (wanted or [id_column]) if c not in names]
            raise InputDataError(
                _missing(path, missing[0] if missing else id_column, names)
            ) from None
        raise InputDataError(f"{path}: cannot read as {kind.upper()}: {message}") from None
    if id_column not in table.column_names:
        raise InputDataError(_missing(path, id_column, table.column_names))
    if table.num_rows == 0:
        raise InputDataError(f"{path}: the file has a header but no data rows")
    if not pa.types.is_string(table.schema.field(id_column).type):
        index = table.column_names.index(id_column)
        table = table.set_column(index, id_column, table.column(id_column).cast(pa.string()))
    return table


def _header_names(path: Path, kind: str) -> list[str]:
    if kind == "parquet":
        return list(pq.read_schema(path).names)
    with path.open("rb") as handle:
        reader = pacsv.open_csv(handle)
        return list(reader.schema.names)


def _missing(path: Path, column: str, names: list[str]) -> str:
    shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    return f"{path}: no column named {column!r}; the file has: {shown}"


def private_dir(path: str | Path) -> Path:
    """A directory only its owner may enter (0700 whatever the umask), parents included."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object], mode: int = 0o600) -> None:
    """Write a file so that a crash leaves the old one or the new one, never half of one.

    The temporary file has a random name and is opened with ``O_EXCL | O_NOFOLLOW``, so a
    file or symbolic link planted at a predictable name cannot redirect the write; its mode
    is set explicitly, so the umask cannot widen it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.partial")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = 0o600) -> None:
    """:func:`atomic_write` of ``data``."""
    atomic_write(path, lambda handle: handle.write(data), mode)


def write_csv(table: pa.Table, path: str | Path, mode: int = 0o600) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(
        path,
        lambda handle: pacsv.write_csv(table, handle, pacsv.WriteOptions(quoting_style="needed")),
        mode,
    )


def write_rejects(rejects: Sequence[IdReject], path: str | Path) -> None:
    """The rows whose IDs were refused: 1-based data row, the raw value, the reason."""
    write_csv(
        pa.table(
            {
                "row": pa.array([r.row for r in rejects], pa.int64()),
                "raw": pa.array([r.raw for r in rejects], pa.string()),
                "reason": pa.array([r.reason for r in rejects], pa.string()),
            }
        ),
        path,
    )
