"""The platform's data products as fixed-width payloads (issue 14; design notes section 8).

A product is one payload per enterprise, sealed by :mod:`protocols.lookup`. Every payload of a
product has the same length, :data:`PAYLOAD_BYTES`, so a table's entry sizes say nothing about
an enterprise. Fields are little-endian: small enums and bands as one-byte indices (0 = none),
dates as ``uint16`` days since 1970-01-01 (0 = none; the data date is the table's, not in
the payload), counts as ``uint16`` (saturating),
the industry code as 5 ASCII bytes.

- ``size_class`` (5 bytes): size (0 none, 1 large, 2 medium, 3 small, 4 micro), industry group
  (1-16 of the 2011 standard), employees band, revenue band, assets band. The rule
  text is not sent: it follows from the group and the bands (below), and the receiver checks
  that the size agrees with them.
- ``headcount`` (9 bytes): employees band, insured employees now (``uint32``, all ones =
  none), change over 12 months (``int32``, its minimum = none).
- ``watch`` (14 bytes): abnormal operations since, serious violation since, court judgements
  as defendant in 12 months, last court judgement, tax arrears since, administrative
  penalties in 12 months, last administrative penalty.
- ``registration`` (9 bytes): status (1-5, :data:`STATUSES`), founding date, GB/T 4754-2017
  industry code (a section letter and 2-4 digits, space-padded), registered-capital band.

Each decoded product also has its ``*_data_date``: the table's data date, which
:func:`decode` takes as an argument.

Bands. Employees, revenue and assets bands are cut at every bound the standard sets for any
industry group (read from :data:`protocols.size_class.RULES`), so no band straddles a bound:
a band says on which side of each of the standard's thresholds the enterprise lies, which is
what a credit officer checks a size class against, and nothing finer. The size class itself
is :func:`protocols.size_class.classify` of the group and each band's lower bound (exact,
because every value of a band compares with every bound as its lower bound does). Capital
bands are the registry's customary steps. Texts read like the standard: "20-49人" means 20
or more and under 50; "300-1999万元" means 300 or more and under 2000 万元 (10,000 yuan).

Employees are the social-insurance headcount (参保人数), the platform's measure of 从业人员.

What a bank learns from an entry: exactly these fields of an enterprise whose ID it holds,
as of the data date. A curious bank with legitimate inputs can look up any enterprise whose
ID it knows (USCCs are public), so a product may only carry what the bureau sells per
enterprise: revenue and assets never leave as figures, only as the band between two of the
standard's bounds (with the class, that is what the class already implies to within a band);
the headcount is exact, being the product. Two lookups a month apart show what changed in
that month (new events, a new band): that is what batch runs are for. Entries are all of a
length, so the table itself tells nothing about any enterprise.

Pure functions, no I/O. :func:`decode` takes a payload from the other party and refuses a
wrong length, an out-of-range code or a size class that its own bands contradict.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache

import numpy as np

from .errors import InputDataError, ProtocolViolation
from .size_class import RULE_OF_GROUP, RULES, Measure, Size, classify

PRODUCTS = ("size_class", "headcount", "watch", "registration")

SIZES: tuple[Size | None, ...] = (None, Size.LARGE, Size.MEDIUM, Size.SMALL, Size.MICRO)
SIZE_CODE = {size: code for code, size in enumerate(SIZES) if size is not None}
# The registry's words: 存续 (in existence), 在业 (operating), 注销 (deregistered), 吊销
# (licence revoked), 迁出 (moved to another registry).
STATUSES = ("存续", "在业", "注销", "吊销", "迁出")
EVENT_KINDS = (
    "abnormal_operations",
    "serious_violation",
    "court_judgement",
    "tax_arrears",
    "admin_penalty",
)

# How long a listing stays in force, in months: the watch product's "since" is the latest
# listing of its kind within that window (an abnormal-operations listing moves to the serious
# violations list after three years; a serious-violation listing is lifted after five; tax
# arrears are published while they last, read here as two years).
IN_FORCE_MONTHS = {"abnormal_operations": 36, "serious_violation": 60, "tax_arrears": 24}
WATCH_COUNT_MONTHS = 12  # court judgements and penalties "in 12 months"

EPOCH = dt.date(1970, 1, 1)
NONE_DATE = 0
NONE_HEADCOUNT = 0xFFFFFFFF
NONE_CHANGE = -(2**31)
MAX_COUNT = 0xFFFF
INDUSTRY_CODE_BYTES = 5

_DTYPES = {
    "size_class": np.dtype(
        [
            ("size", "u1"),
            ("group", "u1"),
            ("employees_band", "u1"),
            ("revenue_band", "u1"),
            ("assets_band", "u1"),
        ]
    ),
    "headcount": np.dtype([("band", "u1"), ("headcount", "<u4"), ("change_12m", "<i4")]),
    "watch": np.dtype(
        [
            ("abnormal_since", "<u2"),
            ("serious_since", "<u2"),
            ("court_12m", "<u2"),
            ("court_last", "<u2"),
            ("tax_arrears_since", "<u2"),
            ("penalties_12m", "<u2"),
            ("penalty_last", "<u2"),
        ]
    ),
    "registration": np.dtype(
        [
            ("status", "u1"),
            ("founded", "<u2"),
            ("industry_code", f"S{INDUSTRY_CODE_BYTES}"),
            ("capital_band", "u1"),
        ]
    ),
}
PAYLOAD_BYTES = {product: dtype.itemsize for product, dtype in _DTYPES.items()}

_COLUMNS = {
    "size_class": [
        "size_class",
        "size_class_zh",
        "size_class_industry_group",
        "size_class_rule",
        "size_class_employees_band",
        "size_class_revenue_band",
        "size_class_assets_band",
        "size_class_data_date",
    ],
    "headcount": ["headcount_band", "headcount", "headcount_change_12m", "headcount_data_date"],
    "watch": [
        "watch_abnormal_operations_since",
        "watch_serious_violation_since",
        "watch_court_judgements_12m",
        "watch_last_court_judgement",
        "watch_tax_arrears_since",
        "watch_admin_penalties_12m",
        "watch_last_admin_penalty",
        "watch_data_date",
    ],
    "registration": [
        "registration_status",
        "registration_founded",
        "registration_industry_code",
        "registration_capital_band",
        "registration_data_date",
    ],
}


# --------------------------------------------------------------------------- bands


def _edges(measure: Measure) -> tuple[int, ...]:
    """Every bound the standard sets on ``measure`` in any group, ascending."""
    bounds = {
        t
        for rule in RULES
        for part in (rule.sme_under, rule.medium_at_least, rule.small_at_least)
        for m, t in part
        if m is measure
    }
    return (0, *sorted(bounds))


BAND_EDGES: dict[str, tuple[int, ...]] = {
    "employees": _edges(Measure.EMPLOYEES),
    "revenue": _edges(Measure.REVENUE),
    "assets": _edges(Measure.ASSETS),
    # Registered capital, 万元: the registry's customary steps (not a bound of the standard).
    "capital": (0, 10, 50, 100, 500, 1000, 5000, 10000),
}
_UNITS = {"employees": "人", "revenue": "万元", "assets": "万元", "capital": "万元"}


def band_text(kind: str, band: int) -> str | None:
    """The text of band index ``band`` (1-based; 0 is none) of ``kind``."""
    if band == 0:
        return None
    edges, unit = BAND_EDGES[kind], _UNITS[kind]
    low = edges[band - 1]
    if band == len(edges):
        return f"{low}{unit}及以上"
    return f"{low}-{edges[band] - 1}{unit}"


def band_index(kind: str, values: np.ndarray) -> np.ndarray:
    """Band indices (``uint8``, 1-based, 0 where the value is NaN) of non-negative values."""
    values = np.asarray(values, dtype=np.float64)
    known = ~np.isnan(values)
    if (values[known] < 0).any():
        raise InputDataError(f"{kind} cannot be negative")
    edges = np.asarray(BAND_EDGES[kind], dtype=np.float64)
    index = np.searchsorted(edges, np.where(known, values, 0.0), side="right")
    return np.where(known, index, 0).astype(np.uint8)


def _band_low(kind: str, band: int) -> float | None:
    return None if band == 0 else float(BAND_EDGES[kind][band - 1])


# --------------------------------------------------------------------------- size class


@lru_cache(maxsize=65536)
def _classified(group: int, employees: int, revenue: int, assets: int) -> tuple[int, str]:
    """Size code and rule text of a group and bands (one :func:`classify` per combination)."""
    rule = RULE_OF_GROUP[group]
    try:
        result = classify(
            group,
            employees=_band_low("employees", employees),
            revenue=_band_low("revenue", revenue),
            assets=_band_low("assets", assets),
        )
    except InputDataError:
        bands = {Measure.EMPLOYEES: employees, Measure.REVENUE: revenue, Measure.ASSETS: assets}
        missing = "、".join(m.zh for m in Measure if m in rule.measures and bands[m] == 0)
        return 0, f"{rule.name_zh}: 缺{missing}数据, 未划型"
    return SIZE_CODE[result.size], result.rule


def classify_many(
    groups: np.ndarray, employees: np.ndarray, revenue: np.ndarray, assets: np.ndarray
) -> dict[str, np.ndarray]:
    """Size codes and bands of many enterprises (employees in people, money in 万元, NaN
    where unknown): the payload fields of ``size_class`` but the data date. Vectorised: the
    standard is applied once per distinct (group, bands) combination, a few hundred."""
    groups = np.asarray(groups, dtype=np.int64)
    if groups.size and (groups.min() < 1 or groups.max() > len(RULES)):
        raise InputDataError("industry groups must be 1-16")
    bands = np.stack(
        [
            groups.astype(np.uint8),
            band_index("employees", employees),
            band_index("revenue", revenue),
            band_index("assets", assets),
        ],
        axis=1,
    )
    # One number per combination, and the standard applied to those that occur: O(n).
    radix = [len(RULES) + 1, *(len(BAND_EDGES[k]) + 1 for k in ("employees", "revenue", "assets"))]
    key = np.zeros(groups.size, dtype=np.int64)
    for column, base in enumerate(radix):
        key = key * base + bands[:, column]
    size_of_key = np.zeros(int(np.prod(radix)), dtype=np.uint8)
    for k in np.flatnonzero(np.bincount(key, minlength=size_of_key.size)).tolist():
        combo = np.unravel_index(k, radix)
        size_of_key[k] = _classified(*(int(x) for x in combo))[0]
    return {
        "size": size_of_key[key],
        "group": bands[:, 0],
        "employees_band": bands[:, 1],
        "revenue_band": bands[:, 2],
        "assets_band": bands[:, 3],
    }


# --------------------------------------------------------------------------- dates


def day_number(date: dt.date | None) -> int:
    """Days since 1970-01-01 as a payload stores them (0 for none)."""
    if date is None:
        return NONE_DATE
    days = (date - EPOCH).days
    if not 0 < days <= 0xFFFF:
        raise InputDataError(f"{date} cannot be stored: payload dates run 1970-01-02 to 2149")
    return days


def _date(days: int) -> dt.date | None:
    return None if days == NONE_DATE else EPOCH + dt.timedelta(days=int(days))


def months_before(date: dt.date, months: int) -> dt.date:
    """The same day ``months`` calendar months earlier (the month's last day if shorter):
    the start of a "last N months" window, which excludes it."""
    index = date.year * 12 + date.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    next_first = dt.date(year + month // 12, month % 12 + 1, 1)
    return dt.date(year, month, min(date.day, (next_first - dt.timedelta(days=1)).day))


# --------------------------------------------------------------------------- encoding


def encode(product: str, fields: dict[str, np.ndarray]) -> np.ndarray:
    """Payloads ``(n, PAYLOAD_BYTES[product])`` uint8 from field arrays named as in the
    product's layout (see the module docstring; codes, bands and day numbers, not texts).
    The bureau's vectorised encoder: 2,000,000 payloads are one numpy copy per field."""
    dtype = _layout(product)
    missing = [name for name in dtype.names or () if name not in fields]
    if missing:
        raise ValueError(f"{product}: fields missing: {', '.join(missing)}")
    n = len(next(iter(fields.values()))) if fields else 0
    out = np.zeros(n, dtype=dtype)
    for name in dtype.names or ():
        out[name] = fields[name]
    return out.view(np.uint8).reshape(n, dtype.itemsize)


def field_names(product: str) -> tuple[str, ...]:
    """The payload layout's field names of ``product``, in order."""
    return tuple(_layout(product).names or ())


def _layout(product: str) -> np.dtype:
    if product not in _DTYPES:
        raise ValueError(f"unknown product {product!r}; the products are {', '.join(PRODUCTS)}")
    return _DTYPES[product]


# --------------------------------------------------------------------------- decoding


def columns(product: str) -> list[str]:
    """The decoded column names of ``product``, in order."""
    _layout(product)
    return list(_COLUMNS[product])


# A GB/T 4754 code as a payload holds it: a section letter and 2-4 digits (space-padded).
INDUSTRY_CODE_PATTERN = re.compile(rb"^[A-T][0-9]{2,4}$")


def decode(product: str, payload: bytes, data_date: dt.date) -> dict[str, object]:
    """The columns of one payload of a table with this data date (the table's, not the
    payload's: an entry that did not change keeps its bytes from one month's table to the
    next, which is what lets a bank update a kept table with the changes only). It came from
    the other party: a wrong length, a code out of range or fields that contradict each
    other raise :class:`ProtocolViolation`."""
    dtype = _layout(product)
    if len(payload) != dtype.itemsize:
        raise ProtocolViolation(
            f"a {product} payload has {dtype.itemsize} bytes, this one {len(payload)}"
        )
    record = np.frombuffer(payload, dtype=dtype)[0]
    values = {name: record[name] for name in dtype.names or ()}
    values["data_date"] = day_number(data_date)
    if int(values["data_date"]) == NONE_DATE:
        raise ProtocolViolation(f"a {product} table without its data date")
    decoded = _DECODERS[product](values)
    return dict(zip(_COLUMNS[product], decoded))


def _band(kind: str, value: int, what: str) -> int:
    if value > len(BAND_EDGES[kind]):
        raise ProtocolViolation(f"{what}: band {value} is not one of 0-{len(BAND_EDGES[kind])}")
    return int(value)


def _decode_size_class(v: dict) -> tuple[object, ...]:
    size, group = int(v["size"]), int(v["group"])
    if size >= len(SIZES):
        raise ProtocolViolation(f"size_class: size code {size} is not one of 0-4")
    if group not in RULE_OF_GROUP:
        raise ProtocolViolation(f"size_class: industry group {group} is not one of 1-16")
    employees = _band("employees", int(v["employees_band"]), "size_class employees")
    revenue = _band("revenue", int(v["revenue_band"]), "size_class revenue")
    assets = _band("assets", int(v["assets_band"]), "size_class assets")
    expected, rule = _classified(group, employees, revenue, assets)
    if expected != size:
        raise ProtocolViolation(
            f"size_class: size code {size} contradicts its own bands (they give {expected})"
        )
    klass = SIZES[size]
    return (
        None if klass is None else klass.value,
        None if klass is None else klass.zh,
        RULE_OF_GROUP[group].name_zh,
        rule,
        band_text("employees", employees),
        band_text("revenue", revenue),
        band_text("assets", assets),
        _date(int(v["data_date"])),
    )


def _decode_headcount(v: dict) -> tuple[object, ...]:
    band = _band("employees", int(v["band"]), "headcount")
    count = int(v["headcount"])
    change = int(v["change_12m"])
    if count == NONE_HEADCOUNT:
        if band != 0 or change != NONE_CHANGE:
            raise ProtocolViolation("headcount: a band or change without a headcount")
        headcount = None
    else:
        if band != int(band_index("employees", np.array([count]))[0]):
            raise ProtocolViolation(f"headcount: band {band} does not hold {count} employees")
        headcount = count
    if change != NONE_CHANGE and headcount is not None and change > headcount:
        raise ProtocolViolation("headcount: grew by more than its present headcount")
    return (
        band_text("employees", band),
        headcount,
        None if change == NONE_CHANGE else change,
        _date(int(v["data_date"])),
    )


def _decode_watch(v: dict) -> tuple[object, ...]:
    dates = ("abnormal_since", "serious_since", "court_last", "tax_arrears_since", "penalty_last")
    if any(int(v[name]) > int(v["data_date"]) for name in dates):
        raise ProtocolViolation("watch: an event dated after the payload's data date")
    for count, last in (("court_12m", "court_last"), ("penalties_12m", "penalty_last")):
        if int(v[count]) and int(v[last]) == NONE_DATE:
            raise ProtocolViolation(f"watch: {int(v[count])} events in 12 months but no last date")
    return (
        _date(int(v["abnormal_since"])),
        _date(int(v["serious_since"])),
        int(v["court_12m"]),
        _date(int(v["court_last"])),
        _date(int(v["tax_arrears_since"])),
        int(v["penalties_12m"]),
        _date(int(v["penalty_last"])),
        _date(int(v["data_date"])),
    )


def _decode_registration(v: dict) -> tuple[object, ...]:
    status = int(v["status"])
    if not 1 <= status <= len(STATUSES):
        raise ProtocolViolation(f"registration: status code {status} is not one of 1-5")
    if int(v["founded"]) > int(v["data_date"]):
        raise ProtocolViolation("registration: founded after the payload's data date")
    # numpy strips trailing NULs of an S5 field: take the raw bytes back to their width
    code = bytes(v["industry_code"]).ljust(INDUSTRY_CODE_BYTES, b"\0")
    if not INDUSTRY_CODE_PATTERN.match(code.rstrip(b" ")):
        raise ProtocolViolation(f"registration: {code!r} is not a GB/T 4754 industry code")
    return (
        STATUSES[status - 1],
        _date(int(v["founded"])),
        code.decode("ascii").rstrip(" "),
        band_text("capital", _band("capital", int(v["capital_band"]), "registration capital")),
        _date(int(v["data_date"])),
    )


_DECODERS = {
    "size_class": _decode_size_class,
    "headcount": _decode_headcount,
    "watch": _decode_watch,
    "registration": _decode_registration,
}
