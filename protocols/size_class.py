"""Enterprise size classification (企业划型) by the 2011 standard.

《中小企业划型标准规定》(工信部联企业〔2011〕300号, issued by MIIT, NBS, NDRC and MOF on
2011-06-18). For each of sixteen industry groups the standard names an upper bound under which
an enterprise is small, medium or micro (bounds joined by "or": under either one suffices;
otherwise it is large), and lower bounds for medium and for small joined by "and": an
enterprise that fails one of them drops a class, and micro is what is left. Employees
(从业人员) are people, operating revenue (营业收入) and total assets (资产总额) are in 万元
(10,000 yuan); "及以上" is >= and "以下" is <.

Industry groups come from GB/T 4754-2017 codes, mapped as the National Bureau of Statistics
maps them in 《统计上大中小微型企业划分办法（2017）》 (the same groups; that document
lists the divisions of each). The mapping is this module's :func:`industry_group`.

Pure functions, no I/O: the bureau computes a class per enterprise and publishes it (with the
rule and the inputs' bands that decided it) as a data product.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum

from .errors import InputDataError


class Size(Enum):
    LARGE = "large"
    MEDIUM = "medium"
    SMALL = "small"
    MICRO = "micro"

    @property
    def zh(self) -> str:
        return {"large": "大型", "medium": "中型", "small": "小型", "micro": "微型"}[self.value]


class Measure(Enum):
    EMPLOYEES = "employees"
    REVENUE = "revenue"
    ASSETS = "assets"

    @property
    def zh(self) -> str:
        return {"employees": "从业人员", "revenue": "营业收入", "assets": "资产总额"}[self.value]

    @property
    def unit_zh(self) -> str:
        return "人" if self is Measure.EMPLOYEES else "万元"


E, R, A = Measure.EMPLOYEES, Measure.REVENUE, Measure.ASSETS


@dataclass(frozen=True)
class Rule:
    """One industry group's bounds: ``sme_under`` (any one suffices), ``medium_at_least`` and
    ``small_at_least`` (all of them needed)."""

    group: int
    name_zh: str
    name_en: str
    sme_under: tuple[tuple[Measure, int], ...]
    medium_at_least: tuple[tuple[Measure, int], ...]
    small_at_least: tuple[tuple[Measure, int], ...]

    @property
    def measures(self) -> set[Measure]:
        used = self.sme_under + self.medium_at_least + self.small_at_least
        return {m for m, _ in used}


# The standard's article 4, items (一) to (十六), in its order.
RULES: tuple[Rule, ...] = (
    Rule(1, "农、林、牧、渔业", "agriculture, forestry, animal husbandry, fishery",
         ((R, 20000),), ((R, 500),), ((R, 50),)),
    Rule(2, "工业", "industry", ((E, 1000), (R, 40000)), ((E, 300), (R, 2000)),
         ((E, 20), (R, 300))),
    Rule(3, "建筑业", "construction", ((R, 80000), (A, 80000)), ((R, 6000), (A, 5000)),
         ((R, 300), (A, 300))),
    Rule(4, "批发业", "wholesale", ((E, 200), (R, 40000)), ((E, 20), (R, 5000)),
         ((E, 5), (R, 1000))),
    Rule(5, "零售业", "retail", ((E, 300), (R, 20000)), ((E, 50), (R, 500)),
         ((E, 10), (R, 100))),
    Rule(6, "交通运输业", "transport", ((E, 1000), (R, 30000)), ((E, 300), (R, 3000)),
         ((E, 20), (R, 200))),
    Rule(7, "仓储业", "warehousing", ((E, 200), (R, 30000)), ((E, 100), (R, 1000)),
         ((E, 20), (R, 100))),
    Rule(8, "邮政业", "postal services", ((E, 1000), (R, 30000)), ((E, 300), (R, 2000)),
         ((E, 20), (R, 100))),
    Rule(9, "住宿业", "accommodation", ((E, 300), (R, 10000)), ((E, 100), (R, 2000)),
         ((E, 10), (R, 100))),
    Rule(10, "餐饮业", "catering", ((E, 300), (R, 10000)), ((E, 100), (R, 2000)),
         ((E, 10), (R, 100))),
    Rule(11, "信息传输业", "information transmission", ((E, 2000), (R, 100000)),
         ((E, 100), (R, 1000)), ((E, 10), (R, 100))),
    Rule(12, "软件和信息技术服务业", "software and information technology services",
         ((E, 300), (R, 10000)), ((E, 100), (R, 1000)), ((E, 10), (R, 50))),
    Rule(13, "房地产开发经营", "real-estate development", ((R, 200000), (A, 10000)),
         ((R, 1000), (A, 5000)), ((R, 100), (A, 2000))),
    Rule(14, "物业管理", "property management", ((E, 1000), (R, 5000)),
         ((E, 300), (R, 1000)), ((E, 100), (R, 500))),
    Rule(15, "租赁和商务服务业", "leasing and business services", ((E, 300), (A, 120000)),
         ((E, 100), (A, 8000)), ((E, 10), (A, 100))),
    Rule(16, "其他未列明行业", "other industries", ((E, 300),), ((E, 100),), ((E, 10),)),
)  # fmt: skip
RULE_OF_GROUP = {rule.group: rule for rule in RULES}
OTHER = 16

# GB/T 4754-2017 divisions (大类, two digits) to groups; real estate (70) needs the group
# (中类, three digits): 701 development, 702 property management, the rest "other".
_DIVISION_GROUPS: dict[range, int] = {
    range(1, 6): 1,  # A 农、林、牧、渔业
    range(6, 47): 2,  # B 采矿业, C 制造业, D 电力、热力、燃气及水生产和供应业
    range(47, 51): 3,  # E 建筑业
    range(51, 52): 4,  # F 批发业
    range(52, 53): 5,  # F 零售业
    range(53, 59): 6,  # G 交通运输业 (铁路、道路、水上、航空、管道运输, 多式联运和运输代理)
    range(59, 60): 7,  # G 装卸搬运和仓储业
    range(60, 61): 8,  # G 邮政业
    range(61, 62): 9,  # H 住宿业
    range(62, 63): 10,  # H 餐饮业
    range(63, 65): 11,  # I 电信、广播电视和卫星传输服务; 互联网和相关服务
    range(65, 66): 12,  # I 软件和信息技术服务业
    range(71, 73): 15,  # L 租赁和商务服务业
}
_CODE = re.compile(r"^([A-T])?(\d{2,4})$")


def industry_group(code: str) -> int:
    """The standard's industry group (1-16) of a GB/T 4754-2017 code such as ``C3011``,
    ``3011``, ``701`` or ``I65``; codes of no listed group are group 16 (其他未列明行业)."""
    match = _CODE.match(code.strip().upper())
    if match is None:
        raise InputDataError(
            f"{code!r} is not a GB/T 4754 industry code (an optional section letter, then 2-4 "
            "digits, e.g. C3011)"
        )
    digits = match.group(2)
    division = int(digits[:2])
    if division == 70:
        if len(digits) < 3:
            raise InputDataError(
                f"industry code {code!r}: real estate (70) needs its group digit: 701 is "
                "development (房地产开发经营), 702 property management (物业管理)"
            )
        return {"1": 13, "2": 14}.get(digits[2], OTHER)
    for divisions, group in _DIVISION_GROUPS.items():
        if division in divisions:
            return group
    return OTHER


@dataclass(frozen=True)
class Classification:
    size: Size
    group: int
    rule: str  # the deciding comparisons, in Chinese, as a credit officer reads them
    decided_by: tuple[str, ...]  # e.g. ("employees >= 300", "revenue < 2000")

    @property
    def rule_name(self) -> str:
        return RULE_OF_GROUP[self.group].name_zh


def _value(measure: Measure, values: dict[Measure, float | None], group: int) -> float:
    value = values[measure]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise InputDataError(
            f"{RULE_OF_GROUP[group].name_zh} (group {group}) is classified by {measure.value} "
            f"({measure.zh}), which is missing"
        )
    if value < 0:
        raise InputDataError(f"{measure.value} cannot be negative (got {value})")
    return float(value)


def _text(measure: Measure, op: str, threshold: int) -> str:
    return f"{measure.zh}{op}{threshold}{measure.unit_zh}"


def classify(
    group: int,
    employees: float | None = None,
    revenue: float | None = None,
    assets: float | None = None,
) -> Classification:
    """The size class of one enterprise of industry ``group`` (see :func:`industry_group`);
    ``revenue`` and ``assets`` in 万元. A measure the group's rule uses must be present."""
    if group not in RULE_OF_GROUP:
        raise InputDataError(f"industry group {group} is not one of the standard's 1-16")
    rule = RULE_OF_GROUP[group]
    values = {E: employees, R: revenue, A: assets}
    v = {m: _value(m, values, group) for m in rule.measures}

    under = [(m, t) for m, t in rule.sme_under if v[m] < t]
    if not under:
        decided = tuple(f"{m.value} >= {t}" for m, t in rule.sme_under)
        text = " 且 ".join(_text(m, "≥", t) for m, t in rule.sme_under)
        return Classification(Size.LARGE, group, f"{rule.name_zh}: {text} → 大型", decided)
    for size, bounds in ((Size.MEDIUM, rule.medium_at_least), (Size.SMALL, rule.small_at_least)):
        failed = [(m, t) for m, t in bounds if v[m] < t]
        if not failed:
            decided = tuple(f"{m.value} >= {t}" for m, t in bounds)
            text = " 且 ".join(_text(m, "≥", t) for m, t in bounds)
            return Classification(size, group, f"{rule.name_zh}: {text} → {size.zh}", decided)
    failed = [(m, t) for m, t in rule.small_at_least if v[m] < t]
    decided = tuple(f"{m.value} < {t}" for m, t in failed)
    text = " 或 ".join(_text(m, "<", t) for m, t in failed)
    return Classification(Size.MICRO, group, f"{rule.name_zh}: {text} → 微型", decided)
