"""The bureau's edge file (关联关系): read, check, number the nodes, and turn it into graph
feature columns aligned with the enterprise file's rows.

Format (CSV or Parquet, by extension): ``src``, ``dst``, ``relation`` (one of
:data:`bureau_node.graph.RELATIONS`), optional ``since`` (kept for the record) and ``weight``
(a non-negative number, e.g. a guarantee's amount). An endpoint is an enterprise ID (as in the
enterprise file; a valid USCC the file does not hold is kept as a node without features) or a
hashed ID of a person, address or phone: 32 to 128 hexadecimal characters (e.g. an HMAC-SHA-256
under the bureau's key). Persons never appear in clear: an endpoint that is neither is refused.
A bad edge is reported with its row and reason, like a bad ID, and never aborts a run.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from node_runtime import tables
from protocols import uscc
from protocols.errors import InputDataError
from protocols.ids import IdReject, IdType, fixed_width_bytes, normalise_column

from . import graph

log = logging.getLogger(__name__)

REQUIRED = ("src", "dst", "relation")
OPTIONAL = ("since", "weight")
HASHED = r"^[0-9a-f]{32,128}$"
# Where the flags of the related enterprises come from (a value above 0 sets the flag);
# ``--graph-flag NAME=COLUMN`` changes them.
DEFAULT_FLAG_COLUMNS = {
    "watch_list": "abnormal_operation",
    "defendant": "court_judgements_3y",
    "deregistered": "deregistered",
}


@dataclass(frozen=True)
class EdgeFile:
    edges: graph.Edges
    n_nodes: int
    rows: int
    rejects: list[IdReject]


def _column_names(path: Path, suffix: str, encoding: str = "utf-8") -> list[str]:
    if suffix in tables.CSV_SUFFIXES:
        read = pacsv.ReadOptions(encoding=encoding)
        with pacsv.open_csv(path, read_options=read) as reader:  # the header, a first block
            return reader.schema.names
    return pq.read_schema(path).names


def read_edge_table(path: str | Path, columns: tuple[str, ...] | None = None) -> pa.Table:
    """The edge file's columns (``src``, ``dst``, ``relation`` and ``weight`` unless told),
    endpoints and relation as text, weight as a number. ``since`` is not used by any feature:
    millions of dates need not be read."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: no such edge file")
    suffix = path.suffix.lower()
    if suffix not in tables.CSV_SUFFIXES and suffix not in tables.PARQUET_SUFFIXES:
        raise InputDataError(f"{path}: unknown file type {suffix!r}; use .csv or .parquet")
    try:
        # an export of Chinese Windows is GBK: detected as the bank's files are (a review's
        # edge file with a relation 担保 and a person 张三 stopped the node)
        encoding = tables.detect_encoding(path) if suffix in tables.CSV_SUFFIXES else "utf-8"
        present = _column_names(path, suffix, encoding)
        missing = [c for c in REQUIRED if c not in present]
        if missing:
            raise InputDataError(
                f"{path}: the edge file needs columns src, dst, relation (optional since, "
                f"weight); missing {', '.join(missing)}; it has {', '.join(present)}"
            )
        wanted = [c for c in (columns or (*REQUIRED, "weight")) if c in present]
        if suffix in tables.CSV_SUFFIXES:
            return pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(encoding=encoding),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in (*REQUIRED, *OPTIONAL)},
                    include_columns=wanted,
                ),
            )
        return pq.read_table(path, columns=wanted)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputDataError(f"{path}: cannot read the edge file: {exc}") from None


def _read_column(source: pa.Table | Path, name: str) -> pa.ChunkedArray | None:
    """One column of the edge file (None if it has none): a file is read one column at a
    time, so that only one column's strings are in memory at once."""
    table = source if isinstance(source, pa.Table) else read_edge_table(source, (name,))
    return table.column(name) if name in table.column_names else None


def _required_column(source: pa.Table | Path, name: str) -> pa.ChunkedArray:
    column = _read_column(source, name)
    if column is None:
        raise InputDataError(f"the edge table has no column {name!r}")
    return column


def _text(column: pa.ChunkedArray) -> pa.Array:
    array = column.combine_chunks()
    return array if pa.types.is_string(array.type) else pc.cast(array, pa.string())


def _text_chunks(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return column if pa.types.is_string(column.type) else pc.cast(column, pa.string())


def _outside_usccs(normalised: pa.Array) -> np.ndarray:
    """Which normalised endpoints are valid USCCs (enterprises the file may not hold)."""
    lengths = pc.fill_null(pc.utf8_length(normalised), 0).to_numpy(zero_copy_only=False)
    ascii_ok = pc.fill_null(pc.string_is_ascii(normalised), False).to_numpy(zero_copy_only=False)
    mask = ascii_ok & (lengths == uscc.LENGTH)
    candidates = np.flatnonzero(mask)
    if candidates.size:
        codes = fixed_width_bytes(normalised.take(pa.array(candidates)), uscc.LENGTH)
        mask[candidates] = uscc.check_many(codes)
    return mask


# An endpoint's node number until the hashed IDs of both columns are numbered
_INVALID, _HASHED, _REST = -1, -2, -3


@dataclass
class _Endpoints:
    """One endpoint column, numbered as far as it can be alone: an enterprise of the file by
    its row; a hashed ID in final form (lower-case hex) marked _HASHED and any other string
    marked _REST, their strings kept (in row order) until both columns are read."""

    node: np.ndarray
    hashed: pa.ChunkedArray
    rest: pa.ChunkedArray


def _endpoints(column: pa.ChunkedArray, enterprise_ids: pa.Array, dtype: type) -> _Endpoints:
    values = _text_chunks(column)
    row = pc.index_in(values, value_set=enterprise_ids, skip_nulls=True)
    node = pc.fill_null(row, _INVALID).to_numpy(zero_copy_only=False).astype(dtype)
    del row
    # the enterprises of the file are most endpoints: only the others are looked at further
    others = values.filter(pa.array(node < 0))
    hashed = pc.fill_null(pc.match_substring_regex(others, HASHED), False)
    rest = pc.and_(pc.invert(hashed), pc.is_valid(others))
    marks = np.where(hashed.to_numpy(zero_copy_only=False), _HASHED, _INVALID)
    node[node < 0] = np.where(rest.to_numpy(zero_copy_only=False), _REST, marks)
    return _Endpoints(node, others.filter(hashed), others.filter(rest))


def _number_others(
    src: _Endpoints, dst: _Endpoints, enterprise_ids: pa.Array, id_type: IdType
) -> int:
    """Number the endpoints that are not enterprises of the file, in both columns in place,
    after the enterprises and in order of first appearance (src column first); return how
    many nodes there are."""
    n_enterprises = len(enterprise_ids)
    # one hash table for the distinct hashed IDs only (a third of the endpoint strings)
    hashed = pa.chunked_array(src.hashed.chunks + dst.hashed.chunks, pa.string())
    encoded = pc.dictionary_encode(hashed)
    del hashed
    hashes = encoded.chunks[-1].dictionary if encoded.num_chunks else pa.array([], pa.string())
    node = n_enterprises + _indices(encoded)
    del encoded
    src.hashed = dst.hashed = pa.chunked_array([], pa.string())  # numbered: let go
    _fill(src, dst, _HASHED, node)
    rest = pa.chunked_array(src.rest.chunks + dst.rest.chunks, pa.string())
    if not len(rest):
        return n_enterprises + len(hashes)
    encoded = pc.dictionary_encode(rest)
    del rest
    src.rest = dst.rest = pa.chunked_array([], pa.string())
    value_node, n_fresh = _classify_rest(
        encoded.chunks[-1].dictionary, enterprise_ids, id_type, hashes
    )
    index = _indices(encoded)
    _fill(src, dst, _REST, np.where(index >= 0, value_node[np.maximum(index, 0)], _INVALID))
    return n_enterprises + len(hashes) + n_fresh


def _indices(encoded: pa.ChunkedArray) -> np.ndarray:
    if not encoded.num_chunks:
        return np.zeros(0, dtype=np.int64)
    parts = [c.indices.fill_null(-1).to_numpy(zero_copy_only=False) for c in encoded.chunks]
    return np.concatenate(parts).astype(np.int64)


def _fill(src: _Endpoints, dst: _Endpoints, mark: int, node: np.ndarray) -> None:
    """Replace the marks in src then dst (in row order) by ``node``'s numbers, in order."""
    at = 0
    for ends in (src, dst):
        where = np.flatnonzero(ends.node == mark)
        ends.node[where] = node[at : at + where.size]
        at += where.size


def _classify_rest(
    raw: pa.Array, enterprise_ids: pa.Array, id_type: IdType, hashes: pa.Array
) -> tuple[np.ndarray, int]:
    """The nodes of distinct endpoint strings not in final form (an ID in another case or
    spacing, a hashed ID in upper case, an enterprise outside the file, or something
    refused: -1), and how many new nodes they add after the ``hashes``. Normalised, they are
    matched against the enterprises and the hashed IDs in final form by key."""
    n_enterprises, n_hashes = len(enterprise_ids), len(hashes)
    normalised = normalise_column(raw, id_type)
    found = pc.index_in(normalised, value_set=enterprise_ids, skip_nulls=True)
    enterprise = pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    hash_key = pc.utf8_lower(pc.utf8_trim_whitespace(raw))
    hashed = pc.fill_null(pc.match_substring_regex(hash_key, HASHED), False)
    hashed = np.asarray(hashed.to_numpy(zero_copy_only=False))
    outside = _outside_usccs(normalised) if id_type is IdType.USCC else np.zeros_like(hashed)
    is_other = (enterprise < 0) & (hashed | outside)
    keys = pc.if_else(pa.array(hashed), hash_key, normalised).filter(pa.array(is_other))
    # a key that is a hashed ID in final form elsewhere (an upper-case copy) is that node
    same = pc.fill_null(pc.index_in(keys, value_set=hashes), -1).to_numpy(zero_copy_only=False)
    same = same.astype(np.int64)
    known = same >= 0
    fresh_keys = keys.filter(pa.array(~known))
    distinct = pc.unique(fresh_keys)
    fresh = pc.index_in(fresh_keys, value_set=distinct).to_numpy(zero_copy_only=False)
    other = np.full(len(raw), -1, dtype=np.int64)
    chosen = np.flatnonzero(is_other)
    other[chosen[known]] = same[known]
    other[chosen[~known]] = n_hashes + fresh.astype(np.int64)
    node = np.where(enterprise >= 0, enterprise, np.where(other >= 0, n_enterprises + other, -1))
    return node, len(distinct)


def check_edges(
    table: pa.Table | str | Path, enterprise_ids: pa.Array, id_type: IdType
) -> EdgeFile:
    """Number the nodes (enterprises by their row in the file, the others after them) and
    refuse bad edges with a reason each. Given a path, the file is read one column at a
    time, and each endpoint column's strings are let go as soon as it is numbered: the
    strings are most of the memory of a large file."""
    source = table if isinstance(table, pa.Table) else Path(table)
    src = _required_column(source, "src")
    rows = len(src)
    dtype = np.int32 if len(enterprise_ids) + 2 * rows < 2**31 else np.int64
    src_ends = _endpoints(src, enterprise_ids, dtype)
    del src
    dst = _required_column(source, "dst")
    dst_ends = _endpoints(dst, enterprise_ids, dtype)
    del dst
    n_nodes = _number_others(src_ends, dst_ends, enterprise_ids, id_type)
    src_node, dst_node = src_ends.node, dst_ends.node
    del src_ends, dst_ends
    src_ok, dst_ok = src_node >= 0, dst_node >= 0

    # a handful of distinct relation strings: clean those, not millions of rows
    relation_column = _required_column(source, "relation")
    relations = pc.dictionary_encode(_text(relation_column))
    del relation_column
    cleaned = pc.utf8_lower(pc.utf8_trim_whitespace(relations.dictionary))
    codes = pc.fill_null(pc.index_in(cleaned, value_set=pa.array(graph.RELATIONS)), -1)
    codes = codes.to_numpy(zero_copy_only=False).astype(np.int64)
    which = relations.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    del relations
    relation_code = np.where(which >= 0, codes[np.maximum(which, 0)], -1).astype(np.int8)
    relation_ok = relation_code >= 0
    weight, weight_ok = _weights(_read_column(source, "weight"), rows)

    self_loop = src_ok & dst_ok & (src_node == dst_node)
    good = relation_ok & src_ok & dst_ok & weight_ok & ~self_loop
    bad = np.flatnonzero(~good)
    rejects = []
    if bad.size:  # the endpoints' text again, for the refused rows only
        raw = [
            _text_chunks(_required_column(source, end)).take(pa.array(bad)).to_pylist()
            for end in ("src", "dst")
        ]
        relation_text = cleaned.take(pa.array(which[bad], mask=which[bad] < 0)).to_pylist()
        rejects = _rejects(
            bad, raw, relation_text, relation_ok, src_ok, dst_ok, weight_ok, self_loop
        )
    # pyarrow's allocator keeps what the strings used, for its own reuse: hand it back, for
    # numpy computes the features next
    pa.default_memory_pool().release_unused()
    return EdgeFile(
        edges=graph.Edges(
            src=src_node[good],
            dst=dst_node[good],
            relation=relation_code[good],
            weight=weight[good],
        ),
        n_nodes=n_nodes,
        rows=rows,
        rejects=rejects,
    )


def _weights(weights: pa.ChunkedArray | None, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights as floats (NaN where none was given), and which rows' weights are usable."""
    if weights is None:
        return np.full(rows, np.nan), np.ones(rows, dtype=bool)
    column = weights.combine_chunks()
    given = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False))
    if pa.types.is_string(column.type):
        column = pc.utf8_trim_whitespace(column)
        given &= ~np.asarray(pc.equal(column, "").fill_null(True).to_numpy(zero_copy_only=False))
        parsed = np.full(len(column), np.nan)
        text = np.asarray(column.to_pylist(), dtype=object)
        for i in np.flatnonzero(given):  # only rows that have a weight; usually all numbers
            try:
                parsed[i] = float(text[i])
            except ValueError:
                parsed[i] = -1.0
    else:
        parsed = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    ok = ~given | (np.isfinite(parsed) & (parsed >= 0))
    return np.where(given & ok, parsed, np.nan), ok


def _rejects(
    bad: np.ndarray,
    raw: list[list[str | None]],
    relation: list[str | None],
    relation_ok: np.ndarray,
    src_ok: np.ndarray,
    dst_ok: np.ndarray,
    weight_ok: np.ndarray,
    self_loop: np.ndarray,
) -> list[IdReject]:
    src, dst = raw
    out = []
    for i, row in enumerate(bad.tolist()):
        if not relation_ok[row]:
            reason = f"unknown relation {relation[i]!r}; use one of {', '.join(graph.RELATIONS)}"
        elif not src_ok[row] or not dst_ok[row]:
            end = "src" if not src_ok[row] else "dst"
            reason = (
                f"{end} is neither an enterprise ID nor a hashed ID (32 to 128 hexadecimal "
                "characters); persons, addresses and phones must be hashed, never in clear"
            )
        elif self_loop[row]:
            reason = "src and dst are the same node"
        elif not weight_ok[row]:
            reason = "weight must be a non-negative number"
        else:  # pragma: no cover - every refused row has one of the reasons above
            reason = "invalid"
        text = f"{src[i] or ''} -> {dst[i] or ''} ({relation[i] or ''})"
        out.append(IdReject(row + 1, text, reason))
    return out


def flag_arrays(features: pa.Table, columns: dict[str, str]) -> dict[str, np.ndarray]:
    """Boolean flags per enterprise row from the enterprise file's columns (value > 0); a
    flag whose column the file lacks is left out, with a warning."""
    out = {}
    for flag, column in columns.items():
        if column not in features.column_names:
            log.warning("graph flag %s: the enterprise file has no column %r", flag, column)
            continue
        values = pc.cast(features.column(column), pa.float64())
        out[flag] = pc.fill_null(pc.greater(values, 0.0), False).to_numpy(zero_copy_only=False)
    return out


@dataclass(frozen=True)
class GraphSummary:
    source: str
    sha256: str
    rows: int
    edges: int  # accepted
    rejected: int
    nodes: int
    features: int
    seconds: float


def graph_columns(
    edge_path: str | Path,
    features: pa.Table,
    enterprise_ids: pa.Array,
    id_type: IdType,
    flag_columns: dict[str, str],
    rejects_path: Path | None = None,
) -> tuple[pa.Table, GraphSummary]:
    """The graph features as a table aligned with the enterprise file's rows."""
    started = time.perf_counter()
    edge_path = Path(edge_path)
    checked = check_edges(edge_path, enterprise_ids, id_type)
    if rejects_path is not None:
        tables.write_rejects(checked.rejects, rejects_path)
    if checked.rejects:
        log.warning(
            "%d of %d edges refused (first: row %d, %s)%s",
            len(checked.rejects),
            checked.rows,
            checked.rejects[0].row,
            checked.rejects[0].reason,
            f"; all in {rejects_path}" if rejects_path else "",
        )
    flags = flag_arrays(features, flag_columns)
    values = graph.graph_features(len(enterprise_ids), checked.n_nodes, checked.edges, flags)
    order = graph.feature_descriptions(tuple(flags))
    columns = {}
    for name in order:
        array = values[name]
        columns[name] = pa.array(array, pa.float64(), mask=np.isnan(array))
    summary = GraphSummary(
        source=str(edge_path.resolve()),
        sha256=_sha256(edge_path),
        rows=checked.rows,
        edges=int(checked.edges.src.size),
        rejected=len(checked.rejects),
        nodes=checked.n_nodes,
        features=len(columns),
        seconds=round(time.perf_counter() - started, 3),
    )
    log.info(
        "graph features: %d edges of %d (%d refused), %d nodes, %.1f s",
        summary.edges,
        summary.rows,
        summary.rejected,
        summary.nodes,
        summary.seconds,
    )
    return pa.table(columns), summary


def _sha256(path: Path) -> str:
    from .store import file_sha256

    return file_sha256(path)


def summary_json(summary: GraphSummary) -> str:
    return json.dumps(summary.__dict__, indent=2)
