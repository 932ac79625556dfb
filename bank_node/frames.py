"""Tables in and out of the Python API: pandas DataFrames or pyarrow Tables in, DataFrames
out when pandas is installed (pyarrow Tables otherwise). pandas is optional
(``pip install 'xinrong[pandas]'``); the nodes never need it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from node_runtime import tables
from protocols.errors import InputDataError


def as_table(data: Any, id_column: str, options: tables.ReadOptions | None = None) -> pa.Table:
    """A pyarrow Table of ``data`` (a DataFrame, a pyarrow Table, or a CSV, TSV, Excel or
    Parquet file's path, read with ``options``) with its ID column as text, as the file
    reader gives it.

    IDs must arrive as text or integers: a float column (pandas turns integers with gaps into
    floats) would turn ``123`` into ``"123.0"`` and silently match nothing."""
    if isinstance(data, str | Path):
        return tables.read_table(data, id_column, options=options)
    if isinstance(data, pa.Table):
        table = data
    elif _is_dataframe(data):
        table = pa.Table.from_pandas(data, preserve_index=False)
    else:
        raise InputDataError(
            f"expected a pandas DataFrame, a pyarrow Table or a file's path, not "
            f"{type(data).__name__}"
        )
    if id_column not in table.column_names:
        shown = ", ".join(table.column_names[:20])
        raise InputDataError(f"no column named {id_column!r}; the table has: {shown}")
    if table.num_rows == 0:
        raise InputDataError("the table has no rows")
    kind = table.schema.field(id_column).type
    if pa.types.is_floating(kind):
        raise InputDataError(
            f"the ID column {id_column!r} holds floating-point numbers: read the IDs as text "
            f"(pandas.read_csv(..., dtype={{{id_column!r}: str}}))"
        )
    if not pa.types.is_string(kind):
        if not (pa.types.is_integer(kind) or pa.types.is_large_string(kind)):
            raise InputDataError(f"the ID column {id_column!r} must hold text, not {kind}")
        index = table.column_names.index(id_column)
        table = table.set_column(index, id_column, table.column(id_column).cast(pa.string()))
    return table


def _is_dataframe(data: Any) -> bool:
    module = type(data).__module__
    return module.split(".")[0] == "pandas" and type(data).__name__ == "DataFrame"


def output(table: pa.Table) -> Any:
    """A DataFrame when pandas is installed, else the pyarrow Table itself."""
    try:
        import pandas  # noqa: F401
    except ImportError:
        return table
    return table.to_pandas()


def records(data: Any) -> list[dict[str, Any]]:
    """The rows of a DataFrame or a pyarrow Table, as dicts."""
    if isinstance(data, pa.Table):
        return data.to_pylist()
    return list(data.to_dict("records"))
