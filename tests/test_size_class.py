"""企业划型 at every boundary of every industry group.

The expectations come from this file's own transcription of the standard's article 4
(工信部联企业〔2011〕300号), not from the module's table, so a typo in either is caught.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import InputDataError
from protocols.size_class import Size, classify, industry_group

# group: (SME if under any of, medium needs all of, small needs all of); e/r/a =
# employees, revenue (万元), assets (万元)
STANDARD = {
    1: ({"r": 20000}, {"r": 500}, {"r": 50}),
    2: ({"e": 1000, "r": 40000}, {"e": 300, "r": 2000}, {"e": 20, "r": 300}),
    3: ({"r": 80000, "a": 80000}, {"r": 6000, "a": 5000}, {"r": 300, "a": 300}),
    4: ({"e": 200, "r": 40000}, {"e": 20, "r": 5000}, {"e": 5, "r": 1000}),
    5: ({"e": 300, "r": 20000}, {"e": 50, "r": 500}, {"e": 10, "r": 100}),
    6: ({"e": 1000, "r": 30000}, {"e": 300, "r": 3000}, {"e": 20, "r": 200}),
    7: ({"e": 200, "r": 30000}, {"e": 100, "r": 1000}, {"e": 20, "r": 100}),
    8: ({"e": 1000, "r": 30000}, {"e": 300, "r": 2000}, {"e": 20, "r": 100}),
    9: ({"e": 300, "r": 10000}, {"e": 100, "r": 2000}, {"e": 10, "r": 100}),
    10: ({"e": 300, "r": 10000}, {"e": 100, "r": 2000}, {"e": 10, "r": 100}),
    11: ({"e": 2000, "r": 100000}, {"e": 100, "r": 1000}, {"e": 10, "r": 100}),
    12: ({"e": 300, "r": 10000}, {"e": 100, "r": 1000}, {"e": 10, "r": 50}),
    13: ({"r": 200000, "a": 10000}, {"r": 1000, "a": 5000}, {"r": 100, "a": 2000}),
    14: ({"e": 1000, "r": 5000}, {"e": 300, "r": 1000}, {"e": 100, "r": 500}),
    15: ({"e": 300, "a": 120000}, {"e": 100, "a": 8000}, {"e": 10, "a": 100}),
    16: ({"e": 300}, {"e": 100}, {"e": 10}),
}
NAMES = {"e": "employees", "r": "revenue", "a": "assets"}


def just_below(measure: str, value: float) -> float:
    return value - 1 if measure == "e" else value - 0.01


def run(group: int, values: dict[str, float]):
    return classify(group, **{NAMES[k]: v for k, v in values.items()})


def cases():
    for group, (sme, medium, small) in STANDARD.items():
        used = set(sme) | set(medium) | set(small)
        # large: at every upper bound
        yield group, dict.fromkeys(used, 0) | sme, Size.LARGE
        for m in sme:  # under one upper bound suffices to be an SME; then medium by the rest
            values = dict(sme) | {m: just_below(m, sme[m])}
            expect = Size.MEDIUM if all(values[k] >= t for k, t in medium.items()) else None
            if expect is None:
                expect = Size.SMALL if all(values[k] >= t for k, t in small.items()) else Size.MICRO
            yield group, values, expect
        # medium: exactly at every lower bound; one under drops to small
        yield group, dict(medium), Size.MEDIUM
        for m in medium:
            yield group, dict(medium) | {m: just_below(m, medium[m])}, Size.SMALL
        # small: exactly at every lower bound; one under drops to micro
        yield group, dict(small), Size.SMALL
        for m in small:
            yield group, dict(small) | {m: just_below(m, small[m])}, Size.MICRO
        yield group, dict.fromkeys(used, 0), Size.MICRO


@pytest.mark.parametrize(("group", "values", "expected"), list(cases()))
def test_every_boundary_of_every_group(group, values, expected):
    assert run(group, values).size is expected


def test_the_rule_and_the_deciding_inputs_are_stated():
    got = classify(2, employees=350, revenue=1999)
    assert got.size is Size.SMALL
    assert got.rule == "工业: 从业人员≥20人 且 营业收入≥300万元 → 小型"
    assert got.decided_by == ("employees >= 20", "revenue >= 300")
    micro = classify(15, employees=500_000, assets=50)
    # 500,000 employees but assets under 120,000: an SME; assets under 100: micro
    assert micro.size is Size.MICRO and micro.decided_by == ("assets < 100",)
    assert micro.size.zh == "微型"


def test_a_missing_measure_the_rule_needs_is_an_error():
    with pytest.raises(InputDataError, match="revenue"):
        classify(2, employees=10)
    classify(16, employees=10)  # "other" needs only employees
    with pytest.raises(InputDataError, match="1-16"):
        classify(17, employees=1)


@pytest.mark.parametrize(
    ("code", "group"),
    [
        ("A0111", 1), ("0511", 1), ("B0610", 2), ("C3011", 2), ("D4411", 2), ("E4710", 3),
        ("F5111", 4), ("F5211", 5), ("G5311", 6), ("G5810", 6), ("G5951", 7), ("G6010", 8),
        ("H6110", 9), ("H6210", 10), ("I6311", 11), ("I6421", 11), ("I6511", 12),
        ("K7010", 13), ("701", 13), ("K7020", 14), ("K7030", 16), ("L7111", 15),
        ("L7211", 15), ("M7310", 16), ("O8011", 16), ("c3011", 2), (" 6511 ", 12),
    ],
)  # fmt: skip
def test_gbt4754_codes_map_to_groups(code, group):
    assert industry_group(code) == group


@pytest.mark.parametrize("code", ["70", "K70", "C30A1", "", "ZZ3011", "3"])
def test_unusable_industry_codes_are_errors(code):
    with pytest.raises(InputDataError):
        industry_group(code)


@given(
    st.integers(1, 16),
    st.integers(0, 5000),
    st.floats(0, 300_000, allow_nan=False),
    st.floats(0, 300_000, allow_nan=False),
    st.integers(1, 10),
)
def test_more_of_everything_never_makes_an_enterprise_smaller(group, e, r, a, factor):
    order = [Size.MICRO, Size.SMALL, Size.MEDIUM, Size.LARGE]
    before = classify(group, employees=e, revenue=r, assets=a).size
    after = classify(group, employees=e * factor, revenue=r * factor, assets=a * factor).size
    assert order.index(after) >= order.index(before)
