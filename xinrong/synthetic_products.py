"""The synthetic city's product data (issue 14), and the city a month on.

:func:`xinrong.synthetic.generate_city` calls :func:`draw_registry` for the enterprise
registry and the dated watch events its data products are made from, and :func:`advance`
once per month after the first. Everything is drawn from the latent state (``size``, distress
``c``, trouble ``g``, age), never from the label, with random streams of its own
(``[seed, 14]`` for month 1, ``[seed, 14, m, 0]`` for month ``m``), so the enterprise and bank
columns of month 1 are exactly what they were before these products existed.

Month 1 (data date :data:`MONTH_1_DATE`, 2026-11-30)
---------------------------------------------------
* ``industry_code``: a GB/T 4754-2017 class (小类) inside the city's ``industry`` category
  (:data:`INDUSTRY_CODES`); ``founded`` is the data date less ``reg_age_years``.
* ``status``: 注销 or 吊销 (revocation likelier under ``g``) for the ``deregistered``, else
  存续, 在业 (the same state, as some registries word it) or, rarely, 迁出.
* ``registered_capital_10k_cny`` is the bureau's column. ``revenue_10k_cny`` (operating
  revenue, 12 months) is the VAT invoices issued plus an uninvoiced share (null where the
  invoices are unknown). ``total_assets_10k_cny`` is the audited figure where the bureau has
  one, else, for companies, the annual report's (same law in ``size``), else null.
* ``insured_employees`` is the bureau's; 12 months ago it was ``max(1, round(now / trend))``
  where ``employee_trend_12m`` is known, 0 for firms founded since, null otherwise.
* Events: one ``abnormal_operations`` listing dated in the last 36 months for each firm with
  ``abnormal_operation = 1``; ``court_judgements_3y`` and ``admin_penalties_3y`` judgements
  and penalties dated in the last 36 months (after founding); ``serious_violation`` listings
  (rare, under ``g`` and ``c``) in the last 60 months; ``tax_arrears`` notices for some firms
  that paid no tax (under ``g`` and ``c``) in the last 24 months. The bureau's product reads a
  listing as in force for :data:`IN_FORCE_MONTHS` (abnormal operations move to the serious
  violations list after three years).

In a city of SMEs most enterprises are micro: ``generate_city(50_000, 5_000, seed=1)``
classifies 69% of its enterprises micro, 8% small, 0.4% medium and none large (of those
classified: 89% micro, 11% small, 0.5% medium); 23% cannot be classified, nearly all for want
of an insured headcount (individual businesses and firms in trouble are often not linked to
social insurance), a few for want of assets (individual businesses in construction, real
estate or leasing). Seed 2 gives the same shares to within a point.

A month on (``generate_city(..., month=m)``)
--------------------------------------------
The same enterprises, bank clients and IDs; the data date is the last day of the next month.
For each month after the first: enterprises still registered here get new events dated in
that month at the month-1 rates spread over their windows (court judgements and penalties
a Poisson rate, listings a hazard for firms not yet listed), so likelier under ``g`` and
``c``; a few are deregistered (hazard under ``c`` and ``g``; their headcount drops to 0);
insured headcounts move (hires and leavers, fewer hires under ``c``). The bureau's table
follows: ``reg_age_years``, ``insured_employees``, ``employee_trend_12m``, the 3-year counts,
``abnormal_operation`` (listed in the last 36 months) and ``deregistered`` are recomputed from
the registry and the events. The bank's clients stay the same rows and labels; their
features drift: the account ages a month, balances and inflows move a little, utilisation
moves under ``c`` and ``l``, and a few new overdue payments arrive (under ``c`` and ``l``)
while old ones leave the 12-month window.

Every event in month ``m``'s events file dated after month ``m - 1``'s data date was drawn in
month ``m``, and month ``m - 1``'s file has none of them: the events of a month are exactly
the file's events dated in it, which is what a batch run's "new watch events" must find. Each
of them changes its enterprise's ``watch`` payload: a listing comes only to a firm not listed
(its "since" date appears) and a judgement or penalty is the latest of its kind (its "last"
date moves).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from protocols.products import (
    EPOCH,
    EVENT_KINDS,
    IN_FORCE_MONTHS,
    STATUSES,
    day_number,
    months_before,
)

MONTH_1_DATE = dt.date(2026, 11, 30)
DATA_DATE_KEY = b"xinrong.data_date"
COUNT_WINDOW_MONTHS = 36  # court_judgements_3y, admin_penalties_3y

ABNORMAL, SERIOUS, COURT, TAX, PENALTY = range(len(EVENT_KINDS))
ALIVE, OPERATING, DEREGISTERED, REVOKED, MOVED_OUT = range(1, len(STATUSES) + 1)

# GB/T 4754-2017 classes (小类) per category of ``xinrong.synthetic.INDUSTRIES``, with
# shares. Their size-class groups: wholesale 4 / retail 5, industry 2, construction 3,
# leasing and business services 15, information transmission 11 / software 12,
# accommodation 9 / catering 10, transport 6 / warehousing 7 / postal 8, real-estate
# development 13 / property management 14 / other 16, agriculture 1, the rest 16.
INDUSTRY_CODES: dict[str, dict[str, float]] = {
    "wholesale_retail": {
        "F5124": 0.08,  # 肉、禽、蛋、奶及水产品批发
        "F5132": 0.08,  # 服装批发
        "F5165": 0.08,  # 建材批发
        "F5174": 0.08,  # 五金产品批发
        "F5181": 0.08,  # 贸易代理
        "F5212": 0.12,  # 超级市场零售
        "F5213": 0.12,  # 便利店零售
        "F5232": 0.12,  # 服装零售
        "F5281": 0.08,  # 五金零售
        "F5292": 0.16,  # 互联网零售
    },
    "manufacturing": {
        "C1713": 0.10,  # 棉印染精加工
        "C1819": 0.18,  # 其他机织服装制造
        "C1952": 0.14,  # 皮鞋制造
        "C2927": 0.12,  # 日用塑料制品制造
        "C3311": 0.16,  # 金属结构制造
        "C3670": 0.14,  # 汽车零部件及配件制造
        "C3982": 0.16,  # 电子电路制造
    },
    "construction": {
        "E4701": 0.30,  # 住宅房屋建筑
        "E4813": 0.15,  # 市政道路工程建筑
        "E4910": 0.15,  # 电气安装
        "E5011": 0.15,  # 公共建筑装饰和装修
        "E5012": 0.25,  # 住宅装饰和装修
    },
    "leasing_business_services": {
        "L7111": 0.15,  # 汽车租赁
        "L7212": 0.20,  # 投资与资产管理
        "L7224": 0.20,  # 供应链管理服务
        "L7259": 0.25,  # 其他广告服务
        "L7263": 0.20,  # 劳务派遣服务
    },
    "information_technology": {
        "I6429": 0.20,  # 互联网其他信息服务
        "I6513": 0.35,  # 应用软件开发
        "I6531": 0.25,  # 信息系统集成服务
        "I6550": 0.20,  # 信息技术咨询服务
    },
    "accommodation_catering": {
        "H6110": 0.08,  # 旅游饭店
        "H6121": 0.12,  # 经济型连锁酒店
        "H6210": 0.40,  # 正餐服务
        "H6220": 0.25,  # 快餐服务
        "H6241": 0.15,  # 茶馆服务
    },
    "transport_logistics": {
        "G5431": 0.35,  # 普通货物道路运输
        "G5437": 0.15,  # 城市配送
        "G5522": 0.10,  # 沿海货物运输
        "G5821": 0.20,  # 货物运输代理
        "G5920": 0.10,  # 通用仓储
        "G6020": 0.10,  # 快递服务
    },
    "real_estate": {
        "K7010": 0.35,  # 房地产开发经营
        "K7020": 0.35,  # 物业管理
        "K7030": 0.20,  # 房地产中介服务
        "K7040": 0.10,  # 房地产租赁经营
    },
    "agriculture": {
        "A0141": 0.30,  # 蔬菜种植
        "A0153": 0.25,  # 柑橘类种植
        "A0411": 0.25,  # 海水养殖
        "A0412": 0.20,  # 内陆养殖
    },
    "science_technical_services": {
        "M7320": 0.20,  # 工程和技术研究和试验发展
        "M7452": 0.25,  # 检测服务
        "M7483": 0.30,  # 工程设计活动
        "M7519": 0.25,  # 其他技术推广服务
    },
    "resident_services": {
        "O8010": 0.20,  # 家庭服务
        "O8030": 0.15,  # 洗染服务
        "O8040": 0.35,  # 理发及美容服务
        "O8111": 0.30,  # 汽车修理与维护
    },
}


def data_date(month: int) -> dt.date:
    """The data date of month ``month`` (1 is :data:`MONTH_1_DATE`): a month's last day."""
    if month < 1:
        raise ValueError("months count from 1")
    first_of_next = months_before(dt.date(2026, 12, 1), -(month - 1))
    return first_of_next - dt.timedelta(days=1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Drivers:
    """The latent state the products are drawn from (one entry per enterprise)."""

    kind_company: np.ndarray  # bool: a "91" enterprise (files annual reports with assets)
    industry: np.ndarray  # index into xinrong.synthetic.INDUSTRIES
    size: np.ndarray
    c: np.ndarray
    g: np.ndarray


@dataclass
class Products:
    """The registry and events of one month, and what the next month needs."""

    month: int
    day: int  # data date, days since 1970-01-01
    industry_code: np.ndarray  # S5
    founded: np.ndarray  # int64 days
    status: np.ndarray  # int8 codes into STATUSES (1-based)
    capital: np.ndarray
    revenue: np.ndarray  # NaN where unknown
    assets: np.ndarray
    employees: np.ndarray  # float, NaN where unknown
    employees_12m_ago: np.ndarray
    event_firm: np.ndarray  # int64 row of the enterprise
    event_kind: np.ndarray  # int8 index into EVENT_KINDS
    event_day: np.ndarray  # int64 days
    no_tax: np.ndarray  # bool: paid no tax in the 12 months before month 1 (arrears candidates)
    # month 1's headcount 12 months before and at its date (the path between them), and the
    # monthly headcounts since month 1
    path: tuple[np.ndarray, np.ndarray, int, int] = field(repr=False)
    history: list[np.ndarray] = field(repr=False)

    @property
    def date(self) -> dt.date:
        return EPOCH + dt.timedelta(days=self.day)


# --------------------------------------------------------------------------- month 1


def _column(bureau: pa.Table, name: str) -> np.ndarray:
    """A numeric bureau column as floats, NaN where null."""
    values = pc.cast(bureau.column(name), pa.float64()).to_numpy()
    return np.array(values, dtype=np.float64)


def _draw_codes(industry: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from .synthetic import INDUSTRIES

    out = np.empty(industry.shape[0], dtype="S5")
    u = np.asarray(rng.random(int(industry.size)), dtype=np.float64)
    for index, name in enumerate(INDUSTRIES):
        rows = np.flatnonzero(industry == index)
        codes = INDUSTRY_CODES[name]
        p = np.cumsum(np.array(list(codes.values()), dtype=np.float64))
        pick = np.minimum(np.searchsorted(p / p[-1], u[rows], side="right"), p.size - 1)
        out[rows] = np.array([c.encode() for c in codes], dtype="S5")[pick]
    return out


def _dated(
    firms: np.ndarray, start: np.ndarray, end: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A day uniformly in ``[start, end]`` of each firm."""
    span = np.maximum(end[firms] - start[firms], 0)
    return start[firms] + np.floor(rng.random(firms.size) * (span + 1)).astype(np.int64)


def _window_start(day: int, months: int) -> int:
    """The first day of the last ``months`` months up to ``day``."""
    return day_number(months_before(EPOCH + dt.timedelta(days=day), months)) + 1


def draw_registry(
    bureau: pa.Table, drivers: Drivers, deregistered: np.ndarray, rng: np.random.Generator
) -> Products:
    """Month 1's registry and events, consistent with the bureau's table."""
    n = bureau.num_rows
    g, size = drivers.g, drivers.size
    day = day_number(MONTH_1_DATE)
    age = _column(bureau, "reg_age_years")
    founded = day - np.round(age * 365.25).astype(np.int64)

    status = np.where(rng.random(n) < 0.2, OPERATING, ALIVE).astype(np.int8)
    status[rng.random(n) < 0.003] = MOVED_OUT
    revoked = rng.random(n) < _sigmoid(-2.0 + 0.8 * g)
    status[deregistered] = np.where(revoked[deregistered], REVOKED, DEREGISTERED)

    invoice = _column(bureau, "invoice_amount_12m_10k_cny")
    revenue = np.round(invoice * (1.0 + rng.beta(1.0, 4.0, size=n)), 2)
    assets = _column(bureau, "total_assets_10k_cny")
    reported = np.round(np.exp(np.log(300.0) + 1.2 * size + 0.5 * rng.standard_normal(n)), 2)
    assets = np.where(np.isnan(assets) & drivers.kind_company, reported, assets)

    employees = _column(bureau, "insured_employees")
    trend = _column(bureau, "employee_trend_12m")
    year_ago = _window_start(day, 12) - 1
    then = np.where(np.isnan(trend), np.nan, np.maximum(1.0, np.round(employees / trend)))
    then[~np.isnan(employees) & (founded > year_ago)] = 0.0

    no_tax = _column(bureau, "tax_paid_12m_10k_cny") == 0
    firms, kinds, days = _month_1_events(bureau, drivers, no_tax, founded, day, rng)
    return Products(
        month=1,
        day=day,
        industry_code=_draw_codes(drivers.industry, rng),
        founded=founded,
        status=status,
        capital=_column(bureau, "registered_capital_10k_cny"),
        revenue=revenue,
        assets=assets,
        employees=employees,
        employees_12m_ago=then,
        event_firm=firms,
        event_kind=kinds,
        event_day=days,
        no_tax=no_tax,
        path=(then.copy(), employees.copy(), year_ago, day),
        history=[employees.copy()],
    )


def _month_1_events(
    bureau: pa.Table,
    drivers: Drivers,
    no_tax: np.ndarray,
    founded: np.ndarray,
    day: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = bureau.num_rows
    c, g = drivers.c, drivers.g
    end = np.full(n, day, dtype=np.int64)

    def start(months: int) -> np.ndarray:
        return np.maximum(founded, _window_start(day, months))

    serious = rng.random(n) < _sigmoid(-6.5 + 1.6 * g + 0.5 * c)
    arrears = no_tax & (rng.random(n) < _sigmoid(-2.2 + 1.0 * g + 0.6 * c))
    counts = {
        ABNORMAL: (_column(bureau, "abnormal_operation") > 0).astype(np.int64),
        SERIOUS: serious.astype(np.int64),
        COURT: _column(bureau, "court_judgements_3y").astype(np.int64),
        TAX: arrears.astype(np.int64),
        PENALTY: _column(bureau, "admin_penalties_3y").astype(np.int64),
    }
    windows = {
        ABNORMAL: IN_FORCE_MONTHS["abnormal_operations"],
        SERIOUS: IN_FORCE_MONTHS["serious_violation"],
        COURT: COUNT_WINDOW_MONTHS,
        TAX: IN_FORCE_MONTHS["tax_arrears"],
        PENALTY: COUNT_WINDOW_MONTHS,
    }
    firms, kinds, days = [], [], []
    for kind, count in counts.items():
        who = np.repeat(np.arange(n), count)
        firms.append(who)
        kinds.append(np.full(who.size, kind, dtype=np.int8))
        days.append(_dated(who, start(windows[kind]), end, rng))
    return np.concatenate(firms), np.concatenate(kinds), np.concatenate(days)


# --------------------------------------------------------------------------- a month on


def advance(products: Products, drivers: Drivers, rng: np.random.Generator) -> Products:
    """The same registry one month later (see the module docstring)."""
    n = products.status.shape[0]
    c, g, size = drivers.c, drivers.g, drivers.size
    month = products.month + 1
    day = day_number(data_date(month))
    here = (products.status == ALIVE) | (products.status == OPERATING)
    first, last = products.day + 1, day

    # New events: month-1 rates spread over their windows; listings only for firms not
    # listed now (a listing is in force for its window).
    listed = {
        kind: _latest(products, kind, _window_start(day, IN_FORCE_MONTHS[name])) > 0
        for kind, name in ((ABNORMAL, "abnormal_operations"), (SERIOUS, "serious_violation"),
                           (TAX, "tax_arrears"))
    }  # fmt: skip
    arrears_rate = np.where(products.no_tax, _sigmoid(-2.2 + 1.0 * g + 0.6 * c), 0.0)
    rates = {
        COURT: (np.exp(-2.2 + 0.35 * c + 0.2 * size) + 0.3 * g) / 36.0,
        PENALTY: (np.exp(-2.5 + 0.2 * c) + 0.25 * g) / 36.0,
        ABNORMAL: np.where(listed[ABNORMAL], 0.0, _sigmoid(-4.0 + 1.5 * g + 0.7 * c) / 36.0),
        SERIOUS: np.where(listed[SERIOUS], 0.0, _sigmoid(-6.5 + 1.6 * g + 0.5 * c) / 60.0),
        TAX: np.where(listed[TAX], 0.0, 0.4 * arrears_rate / 24.0),
    }
    firms, kinds, days = [products.event_firm], [products.event_kind], [products.event_day]
    start = np.full(n, first, dtype=np.int64)
    end = np.full(n, last, dtype=np.int64)
    for kind, rate in rates.items():
        count = np.where(here, rng.poisson(rate), 0)
        if kind != COURT and kind != PENALTY:
            count = np.minimum(count, 1)
        who = np.repeat(np.arange(n), count)
        firms.append(who)
        kinds.append(np.full(who.size, kind, dtype=np.int8))
        days.append(_dated(who, start, end, rng))

    # A few firms close; their insured headcount drops to 0.
    status = products.status.copy()
    closing = here & (rng.random(n) < _sigmoid(-5.0 + 1.6 * c + 1.2 * g) / 60.0)
    revoked = rng.random(n) < _sigmoid(-2.0 + 0.8 * g)
    status[closing] = np.where(revoked[closing], REVOKED, DEREGISTERED)

    employees = _moved_headcount(products.employees, here, c, rng)
    employees[closing & ~np.isnan(employees)] = 0.0
    history = [*products.history, employees]
    return replace(
        products,
        month=month,
        day=day,
        status=status,
        employees=employees,
        employees_12m_ago=_year_ago(products, history, day),
        event_firm=np.concatenate(firms),
        event_kind=np.concatenate(kinds),
        event_day=np.concatenate(days),
        history=history,
    )


def _moved_headcount(
    employees: np.ndarray, here: np.ndarray, c: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Hires and leavers of a month at firms still registered here (others stay put)."""
    known = ~np.isnan(employees)
    now = np.where(known, employees, 0.0).astype(np.int64)
    hires = rng.poisson(0.02 * now * np.exp(-0.3 * c) + 0.01)
    leavers = rng.binomial(now, np.minimum(0.5, 0.02 * np.exp(0.3 * c)))
    moved = np.where(here, now + hires - leavers, now)
    return np.where(known, moved, np.nan)


def _year_ago(products: Products, history: list[np.ndarray], day: int) -> np.ndarray:
    """The headcount 12 months before ``day``: on the month-1 path (linear from 12 months
    before month 1 to month 1), or a later month's own headcount."""
    then1, now1, start, end = products.path
    target = _window_start(day, 12) - 1
    if target >= end:  # a month simulated since month 1
        return history[len(history) - 1 - 12].copy()
    share = (target - start) / (end - start)
    value = np.where(np.isnan(then1), np.nan, np.round(then1 + (now1 - then1) * share))
    value[~np.isnan(now1) & (products.founded > target)] = 0.0
    return value


def _latest(products: Products, kind: int, since: int) -> np.ndarray:
    """The latest day of ``kind`` per firm from ``since`` on (0 where none)."""
    chosen = (products.event_kind == kind) & (products.event_day >= since)
    out = np.zeros(products.status.shape[0], dtype=np.int64)
    np.maximum.at(out, products.event_firm[chosen], products.event_day[chosen])
    return out


def _count(products: Products, kind: int, since: int) -> np.ndarray:
    chosen = (products.event_kind == kind) & (products.event_day >= since)
    return np.bincount(products.event_firm[chosen], minlength=products.status.shape[0])


def updated_bureau(bureau: pa.Table, products: Products, month_1_age: np.ndarray) -> pa.Table:
    """The bureau's feature table of ``products``' month (month 1's table is unchanged)."""
    day = products.day
    count_start = _window_start(day, COUNT_WINDOW_MONTHS)
    in_force = _window_start(day, IN_FORCE_MONTHS["abnormal_operations"])
    abnormal = _latest(products, ABNORMAL, in_force) > 0
    now, then = products.employees, products.employees_12m_ago
    with np.errstate(divide="ignore", invalid="ignore"):
        trend = np.round(now / then, 3)
    trend_known = ~np.isnan(trend) & (then > 0) & (now > 0)
    age = np.round(month_1_age + (day - day_number(MONTH_1_DATE)) / 365.25, 2)
    changes = {
        "reg_age_years": pa.array(age, pa.float64()),
        "insured_employees": pa.array(
            np.nan_to_num(now).astype(np.int32), pa.int32(), mask=np.isnan(now)
        ),
        "employee_trend_12m": pa.array(np.nan_to_num(trend), pa.float64(), mask=~trend_known),
        "court_judgements_3y": pa.array(_count(products, COURT, count_start), pa.int32()),
        "admin_penalties_3y": pa.array(_count(products, PENALTY, count_start), pa.int32()),
        "abnormal_operation": pa.array(abnormal.astype(np.int8), pa.int8()),
    }
    if "deregistered" in bureau.column_names:
        gone = (products.status == DEREGISTERED) | (products.status == REVOKED)
        changes["deregistered"] = pa.array(gone.astype(np.int8), pa.int8())
    for name, values in changes.items():
        bureau = bureau.set_column(bureau.schema.get_field_index(name), name, values)
    return bureau


# --------------------------------------------------------------------------- bank drift


def drift_bank(
    features: dict[str, np.ndarray],
    c: np.ndarray,
    l: np.ndarray,  # noqa: E741
    months: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """The bank's client features ``months`` months on (see the module docstring)."""
    out = {k: v.copy() for k, v in features.items()}
    n = c.shape[0]
    for _ in range(months):
        e = rng.standard_normal
        out["account_age_months"] = out["account_age_months"] + 1
        for name in ("avg_balance_6m_10k_cny", "cash_inflow_6m_10k_cny"):
            moved = out[name] * np.exp(-0.02 * c - 0.02 * l + 0.08 * e(n))
            out[name] = np.round(moved, 2)
        util = out["credit_utilization"] + 0.02 * c + 0.02 * l + 0.03 * e(n)
        out["credit_utilization"] = np.round(np.clip(util, 0.0, 1.0), 3)
        overdue = out["overdue_count_12m"]
        leaving = rng.binomial(overdue, 1.0 / 12.0)
        arriving = rng.poisson(np.exp(-1.7 + 0.55 * c + 0.6 * l) / 12.0)
        out["overdue_count_12m"] = overdue - leaving + arriving
    return out


# --------------------------------------------------------------------------- tables


def registry_table(ids: pa.Array, products: Products) -> pa.Table:
    """``registry.parquet``'s table (the contract's columns), the data date in its metadata."""

    def money(values: np.ndarray) -> pa.Array:
        return pa.array(np.nan_to_num(values), pa.float64(), mask=np.isnan(values))

    def people(values: np.ndarray) -> pa.Array:
        return pa.array(np.nan_to_num(values).astype(np.int32), pa.int32(), mask=np.isnan(values))

    statuses = pa.array(STATUSES, pa.string())
    table = pa.table(
        {
            "uscc": ids,
            "industry_code": pc.cast(pa.array(products.industry_code, pa.binary(5)), pa.string()),
            "founded": pa.array(products.founded.astype(np.int32), pa.date32()),
            "status": pc.take(statuses, pa.array(products.status.astype(np.int32) - 1)),
            "registered_capital_10k_cny": money(products.capital),
            "revenue_10k_cny": money(products.revenue),
            "total_assets_10k_cny": money(products.assets),
            "insured_employees": people(products.employees),
            "insured_employees_12m_ago": people(products.employees_12m_ago),
        }
    )
    return _dated_table(table, products)


def events_table(ids: pa.Array, products: Products) -> pa.Table:
    """``events.parquet``'s table: every event up to the data date, by date then ID."""
    order = np.lexsort((products.event_firm, products.event_day))
    kinds = pa.array(EVENT_KINDS, pa.string())
    table = pa.table(
        {
            "uscc": ids.take(pa.array(products.event_firm[order])),
            "kind": pc.take(kinds, pa.array(products.event_kind[order].astype(np.int32))),
            "date": pa.array(products.event_day[order].astype(np.int32), pa.date32()),
        }
    )
    return _dated_table(table, products)


def _dated_table(table: pa.Table, products: Products) -> pa.Table:
    return table.replace_schema_metadata({DATA_DATE_KEY: products.date.isoformat().encode()})
