"""The bureau's data products: its registry and watch events, as fixed-width payloads.

Two files beside the enterprise file (issue 14's contract): ``registry.parquet``, one row per
enterprise (``uscc``, ``industry_code``, ``founded``, ``status``,
``registered_capital_10k_cny``, ``revenue_10k_cny``, ``total_assets_10k_cny``,
``insured_employees``, ``insured_employees_12m_ago``), and ``events.parquet``, one row per
dated event (``uscc``, ``kind``, ``date``). Both carry their data date in the parquet metadata
key ``xinrong.data_date``.

A bad row never aborts a load: it is left out (the enterprise then has no entry) and reported
with its row number and reason, like a bad ID (:attr:`ProductData.registry_rejects`,
:attr:`ProductData.event_rejects`). A missing file, a missing column, a column of the wrong
type or a missing or disagreeing data date is an :class:`InputDataError`.

The payloads (:mod:`protocols.products`) are computed once, vectorised, at load:

- ``size_class``: the 2011 standard on the industry group of ``industry_code``, employees
  = ``insured_employees`` (the social-insurance headcount), revenue and assets as given;
- ``headcount``: ``insured_employees`` and its change since ``insured_employees_12m_ago``;
- ``watch``: for abnormal operations, serious violations and tax arrears, the latest listing
  in force (:data:`protocols.products.IN_FORCE_MONTHS`); court judgements and administrative
  penalties in the 12 months up to the data date, and the latest of each in the file;
- ``registration``: status, founding date (none if before 1970-01-02, which a payload cannot
  hold), industry code, registered-capital band.

:attr:`ProductData.version` is a hash of every payload and ID, so it changes whenever any
payload does (a bank's cached table of the old version no longer opens: the keys name it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from protocols import products as P
from protocols import uscc
from protocols.errors import InputDataError
from protocols.ids import IdReject, IdType, fixed_width_bytes, normalise_column
from protocols.size_class import industry_group

log = logging.getLogger(__name__)

DATA_DATE_KEY = b"xinrong.data_date"
REGISTRY_COLUMNS = {
    "uscc": "string",
    "industry_code": "string",
    "founded": "date",
    "status": "string",
    "registered_capital_10k_cny": "number",
    "revenue_10k_cny": "number",
    "total_assets_10k_cny": "number",
    "insured_employees": "number",
    "insured_employees_12m_ago": "number",
}
EVENT_COLUMNS = {"uscc": "string", "kind": "string", "date": "date"}

# GB/T 4754-2017: the section letter of each division (大类, two digits).
_SECTIONS = (
    ("A", 1, 5), ("B", 6, 12), ("C", 13, 43), ("D", 44, 46), ("E", 47, 50), ("F", 51, 52),
    ("G", 53, 60), ("H", 61, 62), ("I", 63, 65), ("J", 66, 69), ("K", 70, 70), ("L", 71, 72),
    ("M", 73, 75), ("N", 76, 79), ("O", 80, 82), ("P", 83, 83), ("Q", 84, 85), ("R", 86, 90),
    ("S", 91, 96), ("T", 97, 97),
)  # fmt: skip
SECTION_OF_DIVISION = {d: letter for letter, lo, hi in _SECTIONS for d in range(lo, hi + 1)}


@dataclass(frozen=True)
class _Checked:
    """Which rows are bad, with the reason of each bad row."""

    bad: np.ndarray
    reason: np.ndarray  # object array of str (meaningful where bad)


class ProductData:
    """The bureau's product payloads, loaded from its registry and events files."""

    def __init__(
        self,
        ids: pa.Array,
        payloads: dict[str, np.ndarray],
        data_date: dt.date,
        registry_rejects: list[IdReject],
        event_rejects: list[IdReject],
    ) -> None:
        self._ids = ids
        self._payloads = payloads
        self.data_date = data_date
        self.registry_rejects = registry_rejects
        self.event_rejects = event_rejects
        self.version = _version(ids, payloads, data_date)

    @classmethod
    def load(cls, registry: str | Path, events: str | Path | None = None) -> ProductData:
        """Read and check both files (``events`` None: no watch events, every list empty)."""
        table, data_date = _read(Path(registry), REGISTRY_COLUMNS)
        ids, fields, registry_rejects = _registry(table, data_date)
        event_rejects: list[IdReject] = []
        watch = _no_events(len(ids))
        if events is not None:
            event_table, event_date = _read(Path(events), EVENT_COLUMNS)
            if event_date != data_date:
                raise InputDataError(
                    f"{events} has data date {event_date}, {registry} {data_date}: the two "
                    "files must be exported together"
                )
            watch, event_rejects = _events(event_table, ids, data_date)
        for name, rejects in (("registry", registry_rejects), ("events", event_rejects)):
            if rejects:
                first = rejects[0]
                log.warning(
                    "product %s file: %d rows left out (first: row %d, %s: %s)",
                    name, len(rejects), first.row, first.raw, first.reason,
                )  # fmt: skip
        payloads = {product: _encode(product, fields, watch) for product in P.PRODUCTS}
        return cls(ids, payloads, data_date, registry_rejects, event_rejects)

    @property
    def ids(self) -> pa.Array:
        """The enterprises with payloads (normalised IDs), in the registry's order."""
        return self._ids

    def payloads(
        self, product: str, ids: pa.Array | pa.ChunkedArray | list[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The payloads of ``ids`` (as :func:`protocols.ids.prepare_ids` normalises them):
        an ``(n, PAYLOAD_BYTES[product])`` uint8 array (zeros where absent) and which IDs
        have an entry."""
        if product not in self._payloads:
            raise InputDataError(
                f"unknown product {product!r}; the products are {', '.join(P.PRODUCTS)}"
            )
        if isinstance(ids, list):
            ids = pa.array(ids, pa.string())
        positions = pc.index_in(ids, value_set=self._ids)
        present = positions.is_valid().to_numpy(zero_copy_only=False)
        rows = pc.fill_null(positions, 0).to_numpy(zero_copy_only=False)
        table = self._payloads[product]
        out = table[rows] if len(table) else np.zeros((len(rows), table.shape[1]), np.uint8)
        out[~present] = 0
        return out, present


# --------------------------------------------------------------------------- reading


def _read(path: Path, expected: dict[str, str]) -> tuple[pa.Table, dt.date]:
    if not path.exists():
        raise InputDataError(f"product file {path} does not exist")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputDataError(f"product file {path} is not a readable parquet file: {exc}") from exc
    missing = [name for name in expected if name not in table.column_names]
    if missing:
        raise InputDataError(
            f"{path} lacks the columns {', '.join(missing)} (it needs {', '.join(expected)})"
        )
    for name, kind in expected.items():
        type_ = table.schema.field(name).type
        ok = {
            "string": pa.types.is_string(type_) or pa.types.is_large_string(type_),
            "date": pa.types.is_date(type_) or pa.types.is_timestamp(type_),
            "number": pa.types.is_integer(type_) or pa.types.is_floating(type_),
        }[kind]
        if not ok:
            raise InputDataError(f"{path}: column {name!r} is {type_}, a {kind} column is needed")
    metadata = table.schema.metadata or {}
    if DATA_DATE_KEY not in metadata:
        raise InputDataError(
            f"{path} has no data date: write it in the parquet metadata key "
            f"{DATA_DATE_KEY.decode()} as an ISO date"
        )
    try:
        data_date = dt.date.fromisoformat(metadata[DATA_DATE_KEY].decode())
    except ValueError as exc:
        raise InputDataError(f"{path}: data date {metadata[DATA_DATE_KEY]!r} is not ISO") from exc
    P.day_number(data_date)  # representable in a payload
    return table, data_date


def _numbers(table: pa.Table, name: str) -> np.ndarray:
    return np.array(pc.cast(table.column(name), pa.float64()).to_numpy(), dtype=np.float64)


def _days(table: pa.Table, name: str) -> np.ndarray:
    """Days since 1970-01-01 (int64), -2**40 where null."""
    column = pc.cast(table.column(name), pa.date32())
    days = pc.cast(column, pa.int32())
    return pc.fill_null(days, -(2**31)).to_numpy().astype(np.int64)


def _text(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name).combine_chunks()
    return pc.utf8_trim_whitespace(pc.cast(column, pa.string()))


def _rejects(table: pa.Table, bad: np.ndarray, reason: np.ndarray, shown: str) -> list[IdReject]:
    rows = np.flatnonzero(bad)
    if not rows.size:
        return []
    raw = table.column(shown).take(pa.array(rows)).to_pylist()
    return [
        IdReject(int(row) + 1, "" if value is None else str(value), str(reason[row]))
        for row, value in zip(rows.tolist(), raw)
    ]


def _first_reason(checks: list[tuple[np.ndarray, str | np.ndarray]], n: int) -> _Checked:
    """Rows bad under any check, each with the reason of its first failed check."""
    bad = np.zeros(n, dtype=bool)
    reason = np.full(n, "", dtype=object)
    for failed, why in checks:
        new = failed & ~bad
        reason[new] = why[new] if isinstance(why, np.ndarray) else why
        bad |= failed
    return _Checked(bad, reason)


# --------------------------------------------------------------------------- registry


def _ids(table: pa.Table) -> tuple[pa.Array, _Checked]:
    """Normalised IDs; rows with an invalid ID or one that an earlier row has."""
    raw = table.column("uscc").combine_chunks()
    ids = normalise_column(raw, IdType.USCC)
    n = len(ids)
    lengths = pc.fill_null(pc.binary_length(ids), 0).to_numpy(zero_copy_only=False)
    ascii_ = pc.fill_null(pc.string_is_ascii(ids), False).to_numpy(zero_copy_only=False)
    valid = ascii_ & (lengths == uscc.LENGTH)
    candidates = np.flatnonzero(valid)
    valid[candidates] = uscc.check_many(fixed_width_bytes(ids.take(candidates), uscc.LENGTH))
    reason = np.full(n, "uscc appears on an earlier row", dtype=object)
    for row in np.flatnonzero(~valid).tolist():
        code = ids[row].as_py()
        reason[row] = f"uscc: {uscc.problem(code) or 'invalid'}" if code else "uscc is empty"
    # a dictionary numbers values in order of first appearance: a row is an ID's first
    # exactly when its number exceeds every number before it
    valid_rows = np.flatnonzero(valid)
    position = pc.dictionary_encode(ids.take(valid_rows)).indices.to_numpy().astype(np.int64)
    before = np.maximum.accumulate(np.concatenate([[-1], position[:-1]]))
    repeated = np.zeros(n, dtype=bool)
    repeated[valid_rows] = position <= before
    return ids, _Checked(~valid | repeated, reason)


def _industry(codes: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the code as 5 bytes, its size-class group, bad, reason (one check per
    distinct code: a registry has a few hundred)."""
    encoded = pc.dictionary_encode(pc.ascii_upper(codes))
    distinct = encoded.dictionary.to_pylist()
    group = np.zeros(len(distinct) + 1, dtype=np.uint8)
    stored = np.zeros(len(distinct) + 1, dtype="S5")
    problem = np.full(len(distinct) + 1, "industry_code: empty", dtype=object)
    for index, code in enumerate(distinct):
        problem[index] = _industry_problem(code)
        if not problem[index]:
            group[index] = industry_group(code)
            stored[index] = code.encode("ascii").ljust(P.INDUSTRY_CODE_BYTES)
    which = pc.fill_null(encoded.indices, len(distinct)).to_numpy(zero_copy_only=False)
    reason = problem[which]
    return stored[which], group[which], reason != "", reason


def _industry_problem(code: str) -> str:
    if not (P.INDUSTRY_CODE_PATTERN.match(code.encode("ascii", "replace"))):
        return (
            f"industry_code {code!r} is not a GB/T 4754-2017 code (a section letter and 2-4 "
            "digits, e.g. C3311)"
        )
    division = int(code[1:3])
    section = SECTION_OF_DIVISION.get(division)
    if section != code[0]:
        where = f"section {section}" if section else "no section"
        return f"industry_code {code!r}: division {division:02d} belongs to {where}"
    try:
        industry_group(code)
    except InputDataError as exc:
        return str(exc)
    return ""


def _registry(
    table: pa.Table, data_date: dt.date
) -> tuple[pa.Array, dict[str, np.ndarray], list[IdReject]]:
    n = table.num_rows
    ids, id_check = _ids(table)
    code, group, code_bad, code_reason = _industry(_text(table, "industry_code"))
    founded = _days(table, "founded")
    day = P.day_number(data_date)
    status = pc.index_in(_text(table, "status"), value_set=pa.array(P.STATUSES))
    status_code = pc.fill_null(status, -1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
    numbers = {name: _numbers(table, name) for name, kind in REGISTRY_COLUMNS.items()
               if kind == "number"}  # fmt: skip
    negative = np.zeros(n, dtype=bool)
    negative_reason = np.full(n, "", dtype=object)
    for name, values in numbers.items():
        now = ~negative & (values < 0)
        negative_reason[now] = f"{name} is negative"
        negative |= now
    checked = _first_reason(
        [
            (id_check.bad, id_check.reason),
            (code_bad, code_reason),
            (founded < -(2**30), "founded is empty"),
            (founded > day, f"founded after the data date {data_date}"),
            (status_code == 0, f"status is not one of {'/'.join(P.STATUSES)}"),
            (negative, negative_reason),
        ],
        n,
    )
    keep = ~checked.bad
    rejects = _rejects(table, checked.bad, checked.reason, "uscc")
    founded_kept = founded[keep]
    founded_kept = np.where((founded_kept > 0) & (founded_kept <= 0xFFFF), founded_kept, 0)
    if (founded_kept == 0).any():
        log.info("%d founding dates before 1970-01-02 are published as unknown",
                 int((founded_kept == 0).sum()))  # fmt: skip
    fields = {
        "group": group[keep],
        "industry_code": code[keep],
        "founded": founded_kept,
        "status": status_code[keep],
        **{name: values[keep] for name, values in numbers.items()},
    }
    return ids.filter(pa.array(keep)), fields, rejects


# --------------------------------------------------------------------------- events


def _no_events(n: int) -> dict[str, np.ndarray]:
    zeros = np.zeros(n, dtype=np.int64)
    return {name: zeros for name in P.field_names("watch")}


def _events(
    table: pa.Table, ids: pa.Array, data_date: dt.date
) -> tuple[dict[str, np.ndarray], list[IdReject]]:
    n = table.num_rows
    normalised = normalise_column(table.column("uscc").combine_chunks(), IdType.USCC)
    firm = pc.index_in(normalised, value_set=ids)
    firm_rows = pc.fill_null(firm, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    kind = pc.index_in(_text(table, "kind"), value_set=pa.array(P.EVENT_KINDS))
    kind_code = pc.fill_null(kind, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    day = _days(table, "date")
    today = P.day_number(data_date)
    checked = _first_reason(
        [
            (firm_rows < 0, "uscc is not an enterprise of the registry (or its row was left out)"),
            (kind_code < 0, f"kind is not one of {', '.join(P.EVENT_KINDS)}"),
            (day < -(2**30), "date is empty"),
            (day > today, f"dated after the data date {data_date}"),
            (day <= 0, "dated before 1970-01-02"),
        ],
        n,
    )
    rejects = _rejects(table, checked.bad, checked.reason, "uscc")
    keep = ~checked.bad
    return _watch(firm_rows[keep], kind_code[keep], day[keep], len(ids), data_date), rejects


def _watch(
    firm: np.ndarray, kind: np.ndarray, day: np.ndarray, n: int, data_date: dt.date
) -> dict[str, np.ndarray]:
    """The watch fields per enterprise from its events."""

    def since(months: int) -> int:
        return P.day_number(P.months_before(data_date, months)) + 1

    def latest(name: str, start: int = 0) -> np.ndarray:
        chosen = (kind == P.EVENT_KINDS.index(name)) & (day >= start)
        out = np.zeros(n, dtype=np.int64)
        np.maximum.at(out, firm[chosen], day[chosen])
        return out

    def count(name: str) -> np.ndarray:
        chosen = (kind == P.EVENT_KINDS.index(name)) & (day >= since(P.WATCH_COUNT_MONTHS))
        return np.minimum(np.bincount(firm[chosen], minlength=n), P.MAX_COUNT)

    in_force = {name: since(months) for name, months in P.IN_FORCE_MONTHS.items()}
    return {
        "abnormal_since": latest("abnormal_operations", in_force["abnormal_operations"]),
        "serious_since": latest("serious_violation", in_force["serious_violation"]),
        "court_12m": count("court_judgement"),
        "court_last": latest("court_judgement"),
        "tax_arrears_since": latest("tax_arrears", in_force["tax_arrears"]),
        "penalties_12m": count("admin_penalty"),
        "penalty_last": latest("admin_penalty"),
    }


# --------------------------------------------------------------------------- payloads


def _encode(
    product: str, fields: dict[str, np.ndarray], watch: dict[str, np.ndarray]
) -> np.ndarray:
    """One product's payloads; its data date is the table's (``ProductData.data_date``)."""
    employees = fields["insured_employees"]
    if product == "size_class":
        classes = P.classify_many(
            fields["group"], employees, fields["revenue_10k_cny"], fields["total_assets_10k_cny"]
        )
        return P.encode(product, classes)
    if product == "headcount":
        known = ~np.isnan(employees)
        ago = fields["insured_employees_12m_ago"]
        change = np.clip(np.nan_to_num(employees - ago), P.NONE_CHANGE + 1, 2**31 - 1)
        headcount = np.minimum(np.nan_to_num(employees), P.NONE_HEADCOUNT - 1)
        return P.encode(
            product,
            {
                "band": P.band_index("employees", employees),
                "headcount": np.where(known, headcount, P.NONE_HEADCOUNT).astype(np.uint32),
                "change_12m": np.where(known & ~np.isnan(ago), change, P.NONE_CHANGE),
            },
        )
    if product == "watch":
        return P.encode(product, watch)
    return P.encode(
        product,
        {
            "status": fields["status"],
            "founded": fields["founded"],
            "industry_code": fields["industry_code"],
            "capital_band": P.band_index("capital", fields["registered_capital_10k_cny"]),
        },
    )


def _version(ids: pa.Array, payloads: dict[str, np.ndarray], data_date: dt.date) -> int:
    """A 63-bit content hash of the IDs, the data date and every payload."""
    digest = hashlib.blake2b(digest_size=8, person=b"xinrong-products")
    digest.update(data_date.isoformat().encode())
    for buffer in ids.buffers():
        if buffer is not None:
            digest.update(buffer)
    for product in P.PRODUCTS:
        digest.update(product.encode())
        digest.update(np.ascontiguousarray(payloads[product]).tobytes())
    return int.from_bytes(digest.digest(), "little") >> 1
