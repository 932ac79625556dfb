"""Reading the parties' data files with clear errors: CSV or TSV in any common encoding
(GBK and GB18030 as Chinese banking systems and Excel on Chinese Windows export them),
Excel workbooks and Parquet, chosen by extension. Every command and the Python API read
through :func:`read_table`."""

from __future__ import annotations

import codecs
import csv
import decimal
import fcntl
import functools
import itertools
import logging
import math
import os
import re
import secrets
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from protocols.errors import InputDataError
from protocols.ids import IdReject, IdWarning

CSV_SUFFIXES = {".csv", ".txt"}
TSV_SUFFIXES = {".tsv", ".tab"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
EXCEL_SUFFIXES = {".xlsx", ".xlsm", ".xls", ".xlsb", ".ods"}
# How much of a text file the encoding is guessed from (the whole file is still decoded).
DETECT_BYTES = 1 << 20
log = logging.getLogger(__name__)

# What exports put in an empty numeric cell; in a column of numbers, a missing value.
MISSING_MARKS = (
    *("", "-", "--", "---", "—", "——", "/", "N/A", "NA", "#N/A", "NULL", "null"),
    *("暂无", "不详", "未知", "无数据"),  # "not yet available", "unknown" (twice), "no data"
    *("(空)", "（空）", "空值"),  # "(empty)", as some exports write it
)
# A unit every number of a column is written with ("79.8%", "99万元"): read in its base unit,
# as a workbook holds it (Excel keeps a cell shown as 79.8% as 0.798), so that a model fitted
# on a CSV export scores the workbook alike; mixed units stay text, and are said.
UNITS = {
    **{"%": 0.01, "‰": 0.001, "元": 1},
    **{"万": 10_000, "万元": 10_000, "亿": 100_000_000, "亿元": 100_000_000},
}
_UNITS_LONGEST_FIRST = sorted(UNITS, key=len, reverse=True)  # 万元 before 元
# Full-width forms Chinese input methods type in numbers ("72.3％", "１，１４３．００", "－5"),
# and the minus sign U+2212: folded before a cell is read as a number (a text cell is kept
# as written).
_FULL_WIDTH_NUMBER = str.maketrans("０１２３４５６７８９．，－＋％−", "0123456789.,-+%-")
# GBK and GB2312 are subsets of GB18030: decoding with the superset never fails on a
# character the narrower one has, and reads the few that exports add beyond GBK.
_WIDEN = {"gb2312": "gb18030", "gbk": "gb18030", "cp936": "gb18030", "hz": "gb18030"}


@dataclass(frozen=True)
class ReadOptions:
    """How to read a text file. ``None`` means "find out": the encoding from the bytes
    (UTF-8 first, then charset-normalizer's guess), the delimiter from the extension."""

    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None  # Excel: a sheet name (default: the first sheet)
    skip_rows: int = 0  # rows above the header (a title, notes), as exports often have
    # columns read as text whatever they hold: a model's categories, read for scoring as
    # they were read for training, whatever a later reader makes of numbers in text
    text_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise InputDataError(
                    f"unknown encoding {self.encoding!r}; try utf-8, gb18030 or big5"
                ) from None
        if not 0 <= self.skip_rows <= 1000:
            raise InputDataError(f"--skip-rows {self.skip_rows}: a number from 0 to 1000")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise InputDataError(
                f"a delimiter is one character, not {self.delimiter!r} (for a tab: $'\\t')"
            )


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES or suffix in TSV_SUFFIXES:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in EXCEL_SUFFIXES:
        return "excel"
    raise InputDataError(
        f"{path}: unknown file type {suffix!r}; use .csv, .tsv, .xlsx, .xls or .parquet"
    )


def detect_encoding(path: Path) -> str:
    """The encoding of a text file: UTF-8 (with or without a byte-order mark) when the bytes
    are valid UTF-8, else charset-normalizer's best guess, GBK widened to GB18030."""
    with path.open("rb") as handle:
        start = handle.read(len(codecs.BOM_UTF8))
        if start == codecs.BOM_UTF8:
            return "utf-8-sig"
        if start[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            return "utf-16"  # Excel's "Unicode text" export
        handle.seek(0)
        failure = _decode_failure(handle)
    if failure is None:
        return "utf-8"
    sample = failure.chunk  # the first chunk that is not UTF-8: guessed from it
    from charset_normalizer import from_bytes

    # Judged on the lines that are not plain ASCII: in a mostly-ASCII chunk a few short
    # Chinese values are too little for the detector (it guessed cp1250 for GBK).
    text = b"\n".join(line for line in sample.split(b"\n") if not line.isascii())
    best = from_bytes(text[: 1 << 16] or sample).best()
    if best is None and _decodes(sample, "gb18030"):
        # the detector gave up (a review: a 200-row GBK export with a Chinese header and a
        # few full-width IDs); GB18030 is this platform's normal case and its bytes decode
        log.warning(
            "%s: read as GB18030, which its bytes decode as (the detector could not tell; "
            "name the encoding with --encoding if its text looks wrong)",
            path,
        )
        return "gb18030"
    if best is None:
        raise InputDataError(
            f"{path}: cannot tell the file's text encoding; name it with --encoding "
            "(for example gb18030 or big5)"
        )
    name = codecs.lookup(best.encoding).name
    name = _WIDEN.get(name, name)
    if name not in _TRADITIONAL and name != "gb18030" and _decodes(sample, "gb18030"):
        # a few short Chinese values (是/否, full-width digits) among ASCII read like a
        # European or Korean code page to the detector (cp1250, cp949): GB18030 is this
        # platform's normal case. Said, since accented Latin text can decode as it too.
        log.warning(
            "%s: read as GB18030, which its bytes decode as (the detector guessed %s; name "
            "the encoding with --encoding if its text looks wrong)",
            path,
            name,
        )
        return "gb18030"
    if name not in ("gb18030", "big5"):
        log.warning("%s: read as %s (a guess; name the encoding with --encoding)", path, name)
    return name


# the detector's guesses kept even when the bytes decode as GB18030 too (Big5 text often
# does: Hong Kong and Taiwan exports)
_TRADITIONAL = {"big5", "big5hkscs", "cp950"}


def _decodes(sample: bytes, encoding: str) -> bool:
    """The sample decodes strictly (a character cut at its end is not an error)."""
    try:
        codecs.getincrementaldecoder(encoding)().decode(sample, final=False)
    except UnicodeDecodeError:
        return False
    return True


@dataclass(frozen=True)
class _DecodeFailure:
    """Where a file stops decoding: the chunk it happened in, the error (its positions
    counted from the file's start), and its line (1-based)."""

    chunk: bytes
    error: UnicodeDecodeError
    line: int


def _decode_failure(handle: BinaryIO, encoding: str = "utf-8") -> _DecodeFailure | None:
    """The first byte that does not decode as ``encoding``, or None. The whole file, a chunk
    at a time: an export can be plain ASCII for its first megabyte (its rows with Chinese
    text sorted last), and Arrow reads a column that is not UTF-8 as bytes without a word. A
    multi-byte character cut at a chunk's end is not an error, and the bytes of one cut there
    are not counted twice in the position (a review's stray byte was named one byte off)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, lines, chunk = 0, 1, b""
    try:
        while data := handle.read(DETECT_BYTES):
            chunk = data
            pending = len(decoder.getstate()[0])  # the cut character's first bytes
            try:
                decoder.decode(chunk, final=False)
            except UnicodeDecodeError as exc:
                at = max(exc.start - pending, 0)
                exc.start, exc.end = offset + at, offset + max(exc.end - pending, at + 1)
                return _DecodeFailure(chunk, exc, lines + chunk.count(b"\n", 0, at))
            offset += len(chunk)
            lines += chunk.count(b"\n")
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:  # the file ends inside a character
        exc.start, exc.end = offset, offset
        return _DecodeFailure(chunk, exc, lines)
    return None


def _failure_in(path: Path, encoding: str) -> _DecodeFailure | None:
    """``_decode_failure`` of a file, None for an encoding Python does not know."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        return None
    with path.open("rb") as handle:
        return _decode_failure(handle, encoding)


def _check_utf8(path: Path) -> None:
    """A file named UTF-8 really is, all of it."""
    with path.open("rb") as handle:
        failure = _decode_failure(handle)
    if failure is not None:
        raise failure.error


def read_table(
    path: str | Path,
    id_column: str,
    columns: list[str] | None = None,
    options: ReadOptions | None = None,
) -> pa.Table:
    """Read a data file. The ID column is always read as text, so that codes with leading
    zeros and integer ids survive unchanged. ``columns`` limits what is read (the ID column
    is always included)."""
    path = Path(path)
    options = options or ReadOptions()
    kind = _format_of(path)
    if not path.exists():
        raise InputDataError(f"{path}: no such file")
    if not path.is_file():
        raise InputDataError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise InputDataError(f"{path}: the file is empty")
    wanted = None if columns is None else list(dict.fromkeys([id_column, *columns]))
    encoding = None
    try:
        if kind == "csv":
            encoding = options.encoding or detect_encoding(path)  # detected: checked
            if options.encoding and codecs.lookup(encoding).name == "utf-8":
                _check_utf8(path)
            table = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(encoding=encoding, skip_rows=options.skip_rows),
                parse_options=pacsv.ParseOptions(delimiter=_delimiter(path, options, encoding)),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in (id_column, *options.text_columns)},
                    include_columns=wanted,
                    include_missing_columns=False,
                    # a numeric column with "-" for its empty cells stays numeric; text
                    # columns keep these marks as they are
                    null_values=[*pacsv.ConvertOptions().null_values, *MISSING_MARKS, " "],
                ),
            )
            # of a repeated name, Arrow reads the first when columns are chosen, unsaid
            header = (
                table.column_names
                if wanted is None
                else _header_names(path, kind, options, encoding)
            )
            _refuse_repeated_names(path, header, wanted)
        elif kind == "excel":
            table = _read_excel(path, (id_column, *options.text_columns), options)
            if wanted is not None:
                missing = [c for c in wanted if c not in table.column_names]
                if missing:
                    raise InputDataError(_missing(path, missing[0], table.column_names))
                table = table.select(wanted)
        else:
            schema = pq.read_schema(path)
            if id_column not in schema.names:
                raise InputDataError(_missing(path, id_column, schema.names))
            _refuse_repeated_names(path, schema.names, wanted)
            table = pq.read_table(path, columns=wanted)
    except InputDataError:
        raise
    except UnicodeDecodeError as exc:
        at = _failure_in(path, str(encoding)) if encoding else None
        where = (
            f"at byte {exc.start}" if at is None else f"line {at.line:,}, byte {at.error.start:,}"
        )
        raise InputDataError(
            f"{path}: not valid {encoding} text ({exc.reason}, {where}); name the file's "
            "encoding with --encoding, or mend that line (a stray byte, or rows appended "
            "from a file of another encoding)"
        ) from None
    except (pa.ArrowInvalid, pa.ArrowKeyError, OSError) as exc:
        message = str(exc)
        if "include_columns" in message or "No match for FieldRef" in message:
            names = _header_names(path, kind, options, encoding)
            missing = [c for c in (wanted or [id_column]) if c not in names]
            raise InputDataError(
                _missing(path, missing[0] if missing else id_column, names)
            ) from None
        if "Expected 1 columns" in message and not options.skip_rows:  # a title line first
            message += " (a title above the header? --skip-rows N passes N rows)"
        raise InputDataError(f"{path}: cannot read as {kind.upper()}: {message}") from None
    if id_column not in table.column_names:
        raise InputDataError(_missing(path, id_column, table.column_names))
    if table.num_rows == 0:
        raise InputDataError(f"{path}: the file has a header but no data rows")
    if not pa.types.is_string(table.schema.field(id_column).type):
        index = table.column_names.index(id_column)
        table = table.set_column(index, id_column, table.column(id_column).cast(pa.string()))
    if kind == "csv":
        table = _numbers_stored_as_text(table, (id_column, *options.text_columns))
    return table


def _refuse_repeated_names(
    path: Path, names: Sequence[str], read: Sequence[str] | None = None
) -> None:
    """Each column to be read (``read``, default all) is named once, as a workbook's first
    row must name it: of two columns named alike (a hand-edited export) one would be taken
    without a word, or the run stopped with a traceback (a review)."""
    repeated = [n for n in dict.fromkeys(names) if names.count(n) > 1]
    repeated = [n for n in repeated if read is None or n in read]
    if not repeated:
        return
    name = repeated[0]
    header = "the first row" if _format_of(path) == "csv" else "the file"
    what = "no name" if name == "" else f"the name {name!r}"
    more = f" (and {len(repeated) - 1} more repeated names)" if len(repeated) > 1 else ""
    raise InputDataError(
        f"{path}: {header} must name every column once; {names.count(name)} columns have "
        f"{what}{more}: "
        + ("name or remove them" if name == "" else "rename or remove the repeats")
    )


def _numbers_stored_as_text(table: pa.Table, text_columns: Sequence[str]) -> pa.Table:
    """A CSV text column whose every cell is a number written with thousands separators (as
    Excel saves "1,143.00"), or a missing-value mark, becomes numbers, as a workbook's does:
    read as text it became a category of every amount. Other text columns are unchanged."""
    for index, name in enumerate(table.column_names):
        column = table.column(name)
        if name in text_columns or not pa.types.is_string(column.type):
            continue
        if not pc.any(pc.match_substring_regex(column, _MAYBE_NUMBERS)).as_py():
            continue  # nothing Arrow did not already parse (the common case: no pass in Python)
        converted = _excel_column(column.to_pylist(), as_text=False, name=name)
        if not pa.types.is_string(converted.type):
            table = table.set_column(index, name, converted)
    return table


# a cell Arrow leaves as text that may still be a number: grouped digits, a unit, or a
# number at all (a column of numbers with one odd cell is said, in ``_excel_column``)
_UNIT_ALTERNATIVES = "|".join(_UNITS_LONGEST_FIRST)  # none of them a regex character
_MAYBE_NUMBERS = (
    rf",\d{{3}}|\d\s*({_UNIT_ALTERNATIVES})\s*$|^\s*[-+]?\d+(\.\d+)?\s*$"
    # full-width forms only as numbers write them: a digit, or a sign or separator beside
    # one (a review: any Chinese text with "，" had sent its column through the slow pass)
    r"|[０-９]|[0-9]，[0-9]{3}|[0-9]．[0-9]|^\s*[－−]|％\s*$"
)


def _delimiter(path: Path, options: ReadOptions, encoding: str | None = None) -> str:
    """Named, or by extension; a .csv or .txt whose header has tabs and no comma is
    tab-separated (Excel's "Unicode text" export is a tab-separated .txt)."""
    if options.delimiter is not None:
        return options.delimiter
    if path.suffix.lower() in TSV_SUFFIXES:
        return "\t"
    try:
        with open(path, encoding=encoding or "utf-8", errors="replace", newline="") as handle:
            lines = [line for line in itertools.islice(handle, options.skip_rows + 50)]
    except (OSError, LookupError):
        return ","
    header = next((ln for ln in lines[options.skip_rows :] if ln.strip()), "")
    return "\t" if "\t" in header and "," not in header else ","


def _read_excel(path: Path, text_columns: Sequence[str], options: ReadOptions) -> pa.Table:
    """The first sheet (or ``sheet``) of a workbook: the first row (after ``skip_rows``) is
    the header; a column of numbers only becomes numbers (integers when all are whole),
    anything else text, and ``text_columns`` (the ID column first) text always."""
    id_column, sheet, skip_rows = text_columns[0], options.sheet, options.skip_rows
    from python_calamine import CalamineWorkbook

    try:
        book = CalamineWorkbook.from_path(str(path))
        names = book.sheet_names
        if sheet is not None and sheet not in names:
            raise InputDataError(f"{path}: no sheet named {sheet!r}; it has {', '.join(names)}")
        rows = book.get_sheet_by_name(sheet or names[0]).to_python(skip_empty_area=True)
    except InputDataError:
        raise
    except Exception as exc:  # noqa: BLE001 - calamine raises its own error types
        raise InputDataError(f"{path}: cannot read as a workbook: {exc}") from None
    rows = rows[skip_rows:]
    if not rows:
        raise InputDataError(f"{path}: the sheet is empty")
    header = [_cell_text(h) for h in rows[0]]
    if sheet is None and len(names) > 1 and id_column not in header:
        raise InputDataError(
            f"{path}: its first sheet {names[0]!r} has no column {id_column!r}; the workbook "
            f"has the sheets {', '.join(map(repr, names))}: name the data's with --sheet"
        )
    if len(set(header)) != len(header) or "" in header:
        raise InputDataError(
            f"{path}: the first row must name every column once: {header}"
            + ("" if skip_rows else " (a title above the header? --skip-rows N passes N rows)")
        )
    body = [list(r) + [""] * (len(header) - len(r)) for r in rows[1:]]
    if id_column in header:
        _say_ids_stored_as_numbers(path, id_column, [r[header.index(id_column)] for r in body])
    data = {
        name: _excel_column([r[i] for r in body], as_text=name in text_columns, name=name)
        for i, name in enumerate(header)
    }
    return pa.table(data)


def _say_ids_stored_as_numbers(path: Path, id_column: str, cells: list[Any]) -> None:
    """Excel keeps 15 significant digits of a number: an 18-digit USCC typed as a number
    has lost its last digits, and failed its check character with no word of why."""
    long = [c for c in cells if isinstance(c, int | float) and abs(c) >= 1e15]
    if long:
        log.warning(
            "%s: %d IDs in %r are stored by Excel as numbers (e.g. %s): Excel keeps 15 "
            "significant digits, so their last digits are lost; format the column as text "
            "and enter them again, or export them as text",
            path, len(long), id_column, _cell_text(long[0]),
        )  # fmt: skip


def _cell_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # an ID typed as a number shows no ".0" in Excel
    return str(value).strip()


# thousands separators where they belong: "1,143.00", "-12,000"
_GROUPED = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$")


def _number(value: Any) -> int | float | None:
    """A cell's number: a number, or text that is one (Excel's "number stored as text",
    thousands separators allowed); None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    text = str(value).strip()
    if "," in text:
        if not _GROUPED.match(text):
            return None  # "3011,3012": a list of codes, not 30113012
        text = text.replace(",", "")
    if text.lstrip("-")[:1] == "0" and text.lstrip("-")[1:2].isdigit():
        return None  # "007": a code kept as text for its leading zero, not a number
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _excel_column(values: list[Any], as_text: bool, name: str = "") -> pa.Array:
    """Text, or numbers when every cell is a number, a number stored as text (with one unit
    for the whole column, ``UNITS``), or a mark of a missing value (blank, "-", "--",
    "/"...: what exports put in an empty numeric cell). A column of numbers but for a few
    cells stays text, a category, and says which cells."""
    if not as_text:
        folded = [v.translate(_FULL_WIDTH_NUMBER) if isinstance(v, str) else v for v in values]
        marked = [v is None or str(v).strip() in MISSING_MARKS for v in folded]
        unit = _common_unit([v for v, m in zip(folded, marked, strict=True) if not m])
        cells = [str(v).strip()[: -len(unit)] if unit and isinstance(v, str) else v for v in folded]
        numbers = [None if m else _number(v) for v, m in zip(cells, marked, strict=True)]
        if unit:
            numbers = [None if n is None else _in_base_unit(n, UNITS[unit]) for n in numbers]
        present = [n for n in numbers if n is not None]
        unmarked = marked.count(False)
        # mostly numbers (half or more): said with its odd cells, whatever their share
        if present and len(present) < unmarked and len(present) >= 0.5 * unmarked:
            odd = sorted({str(v).strip() for v, n, m in zip(values, numbers, marked, strict=True)
                          if n is None and not m})  # fmt: skip
            log.warning(
                "column %r: %d of %d values are numbers but %d are not (%s): it is read as "
                "text, a category of every value; make those cells empty (or a missing mark "
                "such as --) to read it as numbers",
                name, len(present), unmarked, unmarked - len(present),
                ", ".join(map(repr, odd[:5])) + (", ..." if len(odd) > 5 else ""),
            )  # fmt: skip
        if not unit and len(present) < unmarked:
            _say_mixed_units(name, [v for v, m in zip(folded, marked, strict=True) if not m])
        if present and len(present) == unmarked:  # every unmarked cell a number
            if all(float(n).is_integer() for n in present):
                return pa.array([None if n is None else int(n) for n in numbers], pa.int64())
            return pa.array([None if n is None else float(n) for n in numbers], pa.float64())
    return pa.array([None if v == "" or v is None else _cell_text(v) for v in values], pa.string())


def _in_base_unit(number: int | float, factor: int | float) -> int | float:
    """99 (万元) -> 990000; 79.8 (%) -> 0.798 (to the nearest double, as Excel holds it)."""
    if isinstance(factor, int) and isinstance(number, int):
        return number * factor
    return float(decimal.Decimal(repr(number)) * decimal.Decimal(repr(factor)))


def _say_mixed_units(name: str, cells: list[Any]) -> None:
    """A column of numbers in several units ("99万元", "1.2亿元") stays text: said."""
    units: set[str] = set()
    for cell in cells:
        text = str(cell).strip()
        unit = next((u for u in _UNITS_LONGEST_FIRST if text.endswith(u)), "")
        if not unit or _number(text[: -len(unit)]) is None:
            return
        units.add(unit)
    if len(units) > 1:
        examples = ", ".join(repr(str(c).strip()) for c in cells[:3])
        log.warning(
            "column %r: numbers in %d units (%s; e.g. %s): it is read as text, a category of "
            "every value; write the column in one unit to read it as numbers",
            name, len(units), ", ".join(sorted(units)), examples,
        )  # fmt: skip


def _common_unit(cells: list[Any]) -> str:
    """The unit every cell of a column ends with (``UNITS``, longest first), or ""."""
    texts = [str(c).strip() for c in cells if isinstance(c, str)]
    if not texts or len(texts) < len(cells):
        return ""
    for unit in _UNITS_LONGEST_FIRST:
        if all(t.endswith(unit) and _number(t[: -len(unit)]) is not None for t in texts):
            return unit
    return ""


def _header_names(path: Path, kind: str, options: ReadOptions, encoding: str | None) -> list[str]:
    if kind == "parquet":
        return list(pq.read_schema(path).names)
    with path.open("rb") as handle:
        reader = pacsv.open_csv(
            handle,
            read_options=pacsv.ReadOptions(
                encoding=encoding or "utf-8", skip_rows=options.skip_rows
            ),
            parse_options=pacsv.ParseOptions(delimiter=_delimiter(path, options, encoding)),
        )
        return list(reader.schema.names)


def _near(name: str) -> str:
    """A header as a person reads it: full-width brackets and spaces folded (NFKC), spaces
    at either end dropped, case folded."""
    return unicodedata.normalize("NFKC", name).strip().casefold()


def _missing(path: Path, column: str, names: list[str]) -> str:
    shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    # the difference a review could not see: full-width brackets, a trailing space
    alike = [n for n in names if _near(n) == _near(column)]
    if alike:
        return (
            f"{path}: no column named {column!r}; the file has {alike[0]!r}, which differs "
            "only in full-width characters, spaces at its ends or case: rename the header"
        )
    hint = ""
    if len(names) <= 2 and any(c in "".join(names) for c in ";|"):
        sep = ";" if ";" in "".join(names) else "|"
        hint = f" (the file is separated by {sep!r}? pass --delimiter '{sep}')"
    elif len(names) <= 2:
        hint = " (a title above the header? --skip-rows N passes N rows)"
    return f"{path}: no column named {column!r}; the file has: {shown}{hint}"


class LockHeld(Exception):
    """Another process holds the lock; ``holder`` is what it wrote in the file."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def take_lock(path: str | Path) -> int:
    """An exclusive lock on the file ``path`` (made 0600 if need be), taken at once or
    refused (:class:`LockHeld`, naming the holder); the file then names this process. The
    lock goes with the descriptor returned, and with the process however it ends."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)  # whatever the umask
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise LockHeld(holder) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}\n".encode())
    return fd


def private_dir(path: str | Path) -> Path:
    """A directory only its owner may enter (0700 whatever the umask), parents included."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def atomic_write(
    path: str | Path, write: Callable[[BinaryIO], object], mode: int = 0o600, sync: bool = True
) -> None:
    """Write a file so that a crash leaves the old one or the new one, never half of one
    (``sync=False``: a crash of the process, not of the machine; no fsync, for counters
    whose every change is also on a durable record).

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
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = 0o600, sync: bool = True) -> None:
    """:func:`atomic_write` of ``data``."""
    atomic_write(path, lambda handle: handle.write(data), mode, sync)


def write_csv(table: pa.Table, path: str | Path, mode: int = 0o600) -> None:
    """UTF-8 with a byte-order mark: Excel on Chinese Windows reads a CSV without one as GBK
    and shows its Chinese headers, names and reason codes garbled; Arrow, pandas and this
    reader skip the mark."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(handle: BinaryIO) -> None:
        handle.write(codecs.BOM_UTF8)
        pacsv.write_csv(table, handle, pacsv.WriteOptions(quoting_style="needed"))

    atomic_write(path, write, mode)


def source_lines(
    path: str | Path, rows: int, options: ReadOptions | None = None
) -> np.ndarray | None:
    """Where each data row that :func:`read_table` reads stands in the file, 1-based as an
    editor (a CSV's line) or Excel (a sheet's row) numbers it: element ``r - 1`` for data
    row ``r``. The two differ once a file has a title, blank lines (which the CSV reader
    passes over) or a row whose quoted cell spans lines. ``None`` when the file cannot be
    followed line by line (Parquet has no lines), or when what is found here is not the
    ``rows`` data rows read (a CSV Python's reader parses otherwise than Arrow's)."""
    path = Path(path)
    options = options or ReadOptions()
    try:
        kind = _format_of(path)
        if kind == "excel":
            lines = _sheet_rows(path, options)
        elif kind == "csv":
            lines = _csv_lines(path, options)
        else:
            return None
    except (InputDataError, OSError, UnicodeDecodeError, csv.Error, LookupError):
        return None
    return lines if lines is not None and lines.size == rows else None


class Whereabouts:
    """Where data rows stand in their file, for messages: ``where([3, 7])`` is ``"; lines
    5, 9 in the file"`` (sheet rows for a workbook), or "" when the file has no lines or
    they match the data rows anyway. The file is followed only when a message asks."""

    def __init__(self, path: str | Path, rows: int, options: ReadOptions | None = None) -> None:
        self.path, self.rows, self.options = Path(path), rows, options

    @functools.cached_property
    def lines(self) -> np.ndarray | None:
        """:func:`source_lines` of the file, followed on first use."""
        return source_lines(self.path, self.rows, self.options)

    def __call__(self, data_rows: Sequence[int]) -> str:
        lines = self.lines
        if lines is None or not data_rows:
            return ""
        shown = [int(lines[r - 1]) for r in data_rows[:10]]
        if all(line == r + 1 for line, r in zip(shown, data_rows, strict=False)):
            return ""  # a plain file: line = data row + 1, as the header is line 1
        unit = "sheet row" if _format_of(self.path) == "excel" else "line"
        unit += "s" if len(data_rows) > 1 else ""
        more = " ..." if len(data_rows) > 10 else ""
        return f"; {unit} {', '.join(map(str, shown))}{more} in the file"


def _csv_lines(path: Path, options: ReadOptions) -> np.ndarray | None:
    """Arrow's reading, followed with Python's: the first ``skip_rows`` records go (blank
    lines among them), then blank lines are passed over, the first record left is the
    header and each record after it a data row, starting on the line after the last one's
    end."""
    encoding = options.encoding or detect_encoding(path)
    starts: list[int] = []
    with open(path, encoding=encoding, newline="") as handle:
        reader = csv.reader(handle, delimiter=_delimiter(path, options, encoding))
        ended, header_seen = 0, False
        for number, record in enumerate(reader):
            start, ended = ended + 1, reader.line_num
            if number < options.skip_rows or not record:
                continue
            if header_seen:
                starts.append(start)
            header_seen = True
    return np.array(starts, dtype=np.int64)


def _sheet_rows(path: Path, options: ReadOptions) -> np.ndarray | None:
    """A workbook keeps its blank rows as rows; only the empty area above the first used
    cell, the skipped rows and the header come before data row 1."""
    from python_calamine import CalamineWorkbook

    book = CalamineWorkbook.from_path(str(path))
    sheet = book.get_sheet_by_name(options.sheet or book.sheet_names[0])
    if sheet.start is None:
        return None
    first = sheet.start[0] + options.skip_rows + 2  # 0-based start, the header, 1-based
    return np.arange(first, first + max(sheet.height - options.skip_rows - 1, 0), dtype=np.int64)


def write_rejects(
    rejects: Sequence[IdReject],
    path: str | Path,
    warnings: Sequence[IdWarning] = (),
    where: Whereabouts | None = None,
) -> None:
    """The rows whose IDs were refused (1-based data row, the raw value, the reason) and,
    with an empty reason, the rows kept whose IDs break a structure rule (``warnings``).
    With ``where`` (the file they were read from), the ``line`` column says where each
    stands in it, as an editor or Excel numbers it; the file is followed only when there
    is a row to place."""
    rows = sorted(
        [(r.row, r.raw, r.reason, "") for r in rejects]
        + [(w.row, w.raw, "", w.warning) for w in warnings]
    )
    lines = where.lines if where is not None and rows else None
    write_csv(
        pa.table(
            {
                "row": pa.array([r[0] for r in rows], pa.int64()),
                "line": pa.array(
                    [None if lines is None else int(lines[r[0] - 1]) for r in rows], pa.int64()
                ),
                "raw": pa.array([r[1] for r in rows], pa.string()),
                "reason": pa.array([r[2] for r in rows], pa.string()),
                "warnings": pa.array([r[3] for r in rows], pa.string()),
            }
        ),
        path,
    )
