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


def read_edge_table(path: str | Path) -> pa.Table:
    """The edge file's columns, endpoints and relation as text, weight as a number."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: no such edge file")
    suffix = path.suffix.lower()
    try:
        if suffix in tables.CSV_SUFFIXES:
            table = pacsv.read_csv(
                path,
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in (*REQUIRED, *OPTIONAL)},
                ),
            )
        elif suffix in tables.PARQUET_SUFFIXES:
            present = pq.read_schema(path).names
            # ``since`` is not used by any feature: millions of dates need not be read
            table = pq.read_table(path, columns=[c for c in (*REQUIRED, "weight") if c in present])
        else:
            raise InputDataError(f"{path}: unknown file type {suffix!r}; use .csv or .parquet")
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputDataError(f"{path}: cannot read the edge file: {exc}") from None
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise InputDataError(
            f"{path}: the edge file needs columns src, dst, relation (optional since, "
            f"weight); missing {', '.join(missing)}; it has {', '.join(table.column_names)}"
        )
    return table


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


@dataclass(frozen=True)
class _Nodes:
    """What each distinct endpoint string is: a row of the enterprise file, or another node
    (a person, address or phone hash; an enterprise outside the file), numbered from 0."""

    enterprise: np.ndarray  # row of the enterprise file, -1 if not one of them
    other: np.ndarray  # number among the other nodes, -1 if not one of them
    n_others: int


def _classify(values: pa.Array, enterprise_ids: pa.Array, id_type: IdType) -> _Nodes:
    """Classify distinct endpoint strings. Most are already in their final form (an ID as the
    enterprise file has it, a lower-case hash), and distinct strings in final form are
    distinct nodes: only the rest are normalised, and matched against the others by key."""
    row = pc.index_in(values, value_set=enterprise_ids)
    enterprise = pc.fill_null(row, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    exact = pc.fill_null(pc.match_substring_regex(values, HASHED), False)
    exact = np.asarray(exact.to_numpy(zero_copy_only=False)) & (enterprise < 0)
    other = np.full(len(values), -1, dtype=np.int64)
    other[exact] = np.arange(int(exact.sum()))
    n_others = int(exact.sum())
    rest = np.flatnonzero((enterprise < 0) & ~exact)
    if not rest.size:
        return _Nodes(enterprise, other, n_others)
    raw = values.take(pa.array(rest))
    normalised = normalise_column(raw, id_type)
    found = pc.fill_null(pc.index_in(normalised, value_set=enterprise_ids), -1)
    enterprise[rest] = found.to_numpy(zero_copy_only=False).astype(np.int64)
    hash_key = pc.utf8_lower(pc.utf8_trim_whitespace(raw))
    hashed = pc.fill_null(pc.match_substring_regex(hash_key, HASHED), False)
    hashed = np.asarray(hashed.to_numpy(zero_copy_only=False))
    outside = _outside_usccs(normalised) if id_type is IdType.USCC else np.zeros_like(hashed)
    is_other = (enterprise[rest] < 0) & (hashed | outside)
    keys = pc.if_else(pa.array(hashed), hash_key, normalised).filter(pa.array(is_other))
    chosen = rest[is_other]
    # a key that is also an exact string elsewhere (an upper-case copy of a hash) is that node
    same = pc.fill_null(pc.index_in(keys, value_set=values), -1).to_numpy(zero_copy_only=False)
    same = same.astype(np.int64)
    known = (same >= 0) & (other[np.maximum(same, 0)] >= 0)
    other[chosen[known]] = other[same[known]]
    fresh_keys = keys.filter(pa.array(~known))
    distinct = pc.unique(fresh_keys)
    index = pc.index_in(fresh_keys, value_set=distinct).to_numpy(zero_copy_only=False)
    other[chosen[~known]] = n_others + index.astype(np.int64)
    return _Nodes(enterprise, other, n_others + len(distinct))


def check_edges(
    table: pa.Table | str | Path, enterprise_ids: pa.Array, id_type: IdType
) -> EdgeFile:
    """Number the nodes (enterprises by their row in the file, the others after them) and
    refuse bad edges with a reason each. Given a path, the file is read here and its endpoint
    strings are let go as soon as they are numbered (the peak memory of a large file)."""
    if not isinstance(table, pa.Table):
        table = read_edge_table(table)
    rows = table.num_rows
    # Each distinct endpoint is classified once: millions of edges share far fewer nodes.
    # (chunks of both columns encoded together share one dictionary, without a copy)
    src_text, dst_text = _text_chunks(table.column("src")), _text_chunks(table.column("dst"))
    encoded = pc.dictionary_encode(pa.chunked_array(src_text.chunks + dst_text.chunks))
    del src_text, dst_text
    table = table.drop_columns(["src", "dst"])
    dictionary = encoded.chunks[-1].dictionary if encoded.num_chunks else pa.array([], pa.string())
    indices = pa.chunked_array([chunk.indices for chunk in encoded.chunks], pa.int32())
    del encoded
    node = _node_numbers(dictionary, indices, enterprise_ids, id_type)
    n_nodes = int(node[1])
    src_node, dst_node = node[0][:rows], node[0][rows:]
    src_ok, dst_ok = src_node >= 0, dst_node >= 0

    # a handful of distinct relation strings: clean those, not millions of rows
    relations = pc.dictionary_encode(_text(table.column("relation")))
    cleaned = pc.utf8_lower(pc.utf8_trim_whitespace(relations.dictionary))
    codes = pc.fill_null(pc.index_in(cleaned, value_set=pa.array(graph.RELATIONS)), -1)
    codes = codes.to_numpy(zero_copy_only=False).astype(np.int64)
    which = relations.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    relation_code = np.where(which >= 0, codes[np.maximum(which, 0)], -1).astype(np.int8)
    relation_ok = relation_code >= 0
    weight, weight_ok = _weights(table)
    del table

    self_loop = src_ok & dst_ok & (src_node == dst_node)
    good = relation_ok & src_ok & dst_ok & weight_ok & ~self_loop
    bad = np.flatnonzero(~good)
    rejects = []
    if bad.size:
        raw = [
            dictionary.take(indices.take(pa.array(bad + offset))).to_pylist()
            for offset in (0, rows)
        ]
        relation_text = cleaned.take(pa.array(which[bad], mask=which[bad] < 0)).to_pylist()
        rejects = _rejects(
            bad, raw, relation_text, relation_ok, src_ok, dst_ok, weight_ok, self_loop
        )
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


def _node_numbers(
    dictionary: pa.Array, indices: pa.ChunkedArray, enterprise_ids: pa.Array, id_type: IdType
) -> tuple[np.ndarray, int]:
    """The node of every endpoint (-1 where invalid), and how many nodes there are."""
    nodes = _classify(dictionary, enterprise_ids, id_type)
    n_enterprises = len(enterprise_ids)
    node_of_value = np.where(
        nodes.enterprise >= 0,
        nodes.enterprise,
        np.where(nodes.other >= 0, n_enterprises + nodes.other, -1),
    )
    node = np.empty(len(indices), dtype=np.int64)
    at = 0
    for chunk in indices.chunks:
        position = chunk.fill_null(-1).to_numpy(zero_copy_only=False)
        node[at : at + position.size] = np.where(
            position >= 0, node_of_value[np.maximum(position, 0)], -1
        )
        at += position.size
    return node, n_enterprises + nodes.n_others


def _weights(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Weights as floats (NaN where none was given), and which rows' weights are usable."""
    if "weight" not in table.column_names:
        return np.full(table.num_rows, np.nan), np.ones(table.num_rows, dtype=bool)
    column = table.column("weight").combine_chunks()
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
