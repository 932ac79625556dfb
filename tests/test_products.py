"""The data products: payload codecs (protocols.products) and the bureau's product files
(bureau_node.products), on hand-made enterprises and on the synthetic city."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bureau_node.products import ProductData
from protocols import products as P
from protocols.errors import InputDataError, ProtocolViolation
from protocols.size_class import RULES, classify, industry_group
from xinrong.synthetic import generate_city, write_city

DAY = dt.date(2026, 11, 30)
D = P.day_number(DAY)
NAN = float("nan")


def one(product: str, **fields: object) -> bytes:
    """One payload from field values (the encoder takes arrays)."""
    payloads = P.encode(product, {k: np.array([v]) for k, v in fields.items()})
    assert payloads.shape == (1, P.PAYLOAD_BYTES[product])
    return payloads[0].tobytes()


def size_payload(code: str, employees=NAN, revenue=NAN, assets=NAN) -> dict[str, object]:
    fields = P.classify_many(
        np.array([industry_group(code)]),
        np.array([employees], float),
        np.array([revenue], float),
        np.array([assets], float),
    )
    payload = P.encode("size_class", fields)[0].tobytes()
    return P.decode("size_class", payload, DAY)


# --------------------------------------------------------------------------- known answers


@pytest.mark.parametrize(
    ("code", "inputs", "size", "rule", "bands"),
    [
        (
            "C3311",
            {"employees": 25, "revenue": 500},
            "small",
            "工业: 从业人员≥20人 且 营业收入≥300万元 → 小型",
            ("20-49人", "500-999万元", None),
        ),
        (
            "F5212",
            {"employees": 8, "revenue": 2000},
            "micro",
            "零售业: 从业人员<10人 → 微型",
            ("5-9人", "2000-2999万元", None),
        ),
        (
            "E4701",
            {"revenue": 7000, "assets": 6000},
            "medium",
            "建筑业: 营业收入≥6000万元 且 资产总额≥5000万元 → 中型",
            (None, "6000-9999万元", "5000-7999万元"),
        ),
        (
            "K7010",
            {"revenue": 250000, "assets": 12000, "employees": 40},
            "large",
            "房地产开发经营: 营业收入≥200000万元 且 资产总额≥10000万元 → 大型",
            ("20-49人", "200000万元及以上", "10000-79999万元"),
        ),
        (
            "L7212",
            {"employees": 150, "assets": 7999.5},
            "small",
            "租赁和商务服务业: 从业人员≥10人 且 资产总额≥100万元 → 小型",
            ("100-199人", None, "5000-7999万元"),
        ),
        (
            "F5181",
            {"employees": 4, "revenue": 999.99},
            "micro",
            "批发业: 从业人员<5人 或 营业收入<1000万元 → 微型",
            ("0-4人", "500-999万元", None),
        ),
    ],
)
def test_hand_made_enterprises_get_their_class_rule_and_bands(code, inputs, size, rule, bands):
    decoded = size_payload(code, **inputs)
    assert decoded["size_class"] == size
    assert decoded["size_class_zh"] == {"large": "大型", "medium": "中型", "small": "小型",
                                        "micro": "微型"}[size]  # fmt: skip
    assert decoded["size_class_rule"] == rule
    assert (
        decoded["size_class_employees_band"],
        decoded["size_class_revenue_band"],
        decoded["size_class_assets_band"],
    ) == bands
    assert decoded["size_class_data_date"] == DAY


def test_a_missing_measure_leaves_the_class_open_and_says_which():
    decoded = size_payload("I6513", revenue=800)
    assert decoded["size_class"] is None and decoded["size_class_zh"] is None
    assert decoded["size_class_industry_group"] == "软件和信息技术服务业"
    assert decoded["size_class_rule"] == "软件和信息技术服务业: 缺从业人员数据, 未划型"


def test_bands_are_cut_at_every_bound_of_the_standard():
    kinds = {"employees": "EMPLOYEES", "revenue": "REVENUE", "assets": "ASSETS"}
    for rule in RULES:
        for part in (rule.sme_under, rule.medium_at_least, rule.small_at_least):
            for measure, bound in part:
                kind = next(k for k, v in kinds.items() if v == measure.name)
                assert bound in P.BAND_EDGES[kind], (rule.group, measure, bound)
    assert P.band_text("employees", 1) == "0-4人"
    assert P.band_text("employees", len(P.BAND_EDGES["employees"])) == "2000人及以上"
    assert P.band_text("revenue", 0) is None


def test_payload_sizes_are_the_contract():
    assert P.PAYLOAD_BYTES == {"size_class": 5, "headcount": 9, "watch": 14, "registration": 9}
    for product in P.PRODUCTS:
        assert len(P.columns(product)) == len(set(P.columns(product)))


def test_months_before_clips_to_the_month_end():
    assert P.months_before(dt.date(2027, 3, 31), 1) == dt.date(2027, 2, 28)
    assert P.months_before(dt.date(2026, 11, 30), 12) == dt.date(2025, 11, 30)
    assert P.months_before(dt.date(2026, 11, 30), -1) == dt.date(2026, 12, 30)


# --------------------------------------------------------------------------- round trips

amounts = st.one_of(st.none(), st.floats(0, 300_000, allow_nan=False))
days = st.one_of(st.none(), st.integers(1, D))


@settings(max_examples=300, deadline=None)
@given(group=st.integers(1, 16), employees=amounts, revenue=amounts, assets=amounts)
def test_size_class_round_trip_agrees_with_the_standard(group, employees, revenue, assets):
    values = [NAN if v is None else v for v in (employees, revenue, assets)]
    fields = P.classify_many(np.array([group]), *(np.array([v]) for v in values))
    decoded = P.decode("size_class", one("size_class", **{k: v[0] for k, v in fields.items()}),
                       DAY)  # fmt: skip
    try:
        expected = classify(group, employees, revenue, assets)
    except InputDataError:
        assert decoded["size_class"] is None
        assert decoded["size_class_rule"].endswith("未划型")
    else:
        assert decoded["size_class"] == expected.size.value
        assert decoded["size_class_rule"] == expected.rule
    assert decoded["size_class_industry_group"] == RULES[group - 1].name_zh
    for kind, value in zip(("employees", "revenue", "assets"), (employees, revenue, assets)):
        text = decoded[f"size_class_{kind}_band"]
        if value is None:
            assert text is None
        else:
            low = float(text.split("-")[0].rstrip("人万元及以上"))
            assert low <= value


@settings(max_examples=200, deadline=None)
@given(
    headcount=st.one_of(st.none(), st.integers(0, 10**6)),
    ago=st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_headcount_round_trip(headcount, ago):
    known = headcount is not None
    change = headcount - ago if known and ago is not None else P.NONE_CHANGE
    payload = one(
        "headcount",
        band=P.band_index("employees", np.array([NAN if headcount is None else headcount]))[0],
        headcount=P.NONE_HEADCOUNT if headcount is None else headcount,
        change_12m=change,
        data_date=D,
    )
    decoded = P.decode("headcount", payload, DAY)
    assert decoded["headcount"] == headcount
    assert decoded["headcount_change_12m"] == (None if change == P.NONE_CHANGE else change)
    assert (decoded["headcount_band"] is None) == (headcount is None)
    assert decoded["headcount_data_date"] == DAY


@settings(max_examples=200, deadline=None)
@given(
    dates=st.lists(days, min_size=5, max_size=5),
    counts=st.lists(st.integers(0, P.MAX_COUNT), min_size=2, max_size=2),
)
def test_watch_round_trip(dates, counts):
    abnormal, serious, court_last, tax, penalty_last = dates
    court = counts[0] if court_last else 0
    penalties = counts[1] if penalty_last else 0
    payload = one(
        "watch",
        abnormal_since=abnormal or 0,
        serious_since=serious or 0,
        court_12m=court,
        court_last=court_last or 0,
        tax_arrears_since=tax or 0,
        penalties_12m=penalties,
        penalty_last=penalty_last or 0,
        data_date=D,
    )
    decoded = P.decode("watch", payload, DAY)

    def date(day):
        return None if day is None else P.EPOCH + dt.timedelta(days=day)

    assert list(decoded.values()) == [
        date(abnormal), date(serious), court, date(court_last), date(tax), penalties,
        date(penalty_last), DAY,
    ]  # fmt: skip


codes = st.builds(
    lambda letter, digits: letter + digits,
    st.sampled_from("ABCDEFGHIJKLMNOPQRST"),
    st.from_regex(r"\A[0-9]{2,4}\Z"),
)


@settings(max_examples=200, deadline=None)
@given(
    status=st.integers(1, 5),
    founded=days,
    code=codes,
    capital=st.one_of(st.none(), st.floats(0, 10**6, allow_nan=False)),
)
def test_registration_round_trip(status, founded, code, capital):
    band = P.band_index("capital", np.array([NAN if capital is None else capital]))[0]
    payload = one(
        "registration",
        status=status,
        founded=founded or 0,
        industry_code=code.ljust(5).encode(),
        capital_band=band,
        data_date=D,
    )
    decoded = P.decode("registration", payload, DAY)
    assert decoded["registration_status"] == P.STATUSES[status - 1]
    assert decoded["registration_founded"] == (
        None if founded is None else P.EPOCH + dt.timedelta(days=founded)
    )
    assert decoded["registration_industry_code"] == code
    assert (decoded["registration_capital_band"] is None) == (capital is None)


# --------------------------------------------------------------------------- refusals


def good(product: str) -> dict[str, object]:
    return {
        "size_class": {"size": 4, "group": 2, "employees_band": 2, "revenue_band": 3,
                       "assets_band": 0, "data_date": D},
        "headcount": {"band": 2, "headcount": 6, "change_12m": -1, "data_date": D},
        "watch": {"abnormal_since": D - 5, "serious_since": 0, "court_12m": 1,
                  "court_last": D - 9, "tax_arrears_since": 0, "penalties_12m": 0,
                  "penalty_last": 0, "data_date": D},
        "registration": {"status": 1, "founded": D - 900, "industry_code": b"C3311",
                         "capital_band": 3, "data_date": D},
    }[product]  # fmt: skip


@pytest.mark.parametrize("product", P.PRODUCTS)
def test_good_payloads_decode_and_wrong_lengths_are_refused(product):
    payload = one(product, **good(product))
    decoded = P.decode(product, payload, DAY)
    assert list(decoded) == P.columns(product)
    assert decoded[f"{product}_data_date"] == DAY  # the table's data date
    for wrong in (payload[:-1], payload + b"\0", b""):
        with pytest.raises(ProtocolViolation, match="bytes"):
            P.decode(product, wrong, DAY)


@pytest.mark.parametrize(
    ("product", "change", "message"),
    [
        ("size_class", {"size": 5}, "size code"),
        ("size_class", {"group": 0}, "industry group"),
        ("size_class", {"group": 17}, "industry group"),
        ("size_class", {"employees_band": 11}, "band"),
        ("size_class", {"revenue_band": 19}, "band"),
        ("size_class", {"assets_band": 10}, "band"),
        ("size_class", {"size": 1}, "contradicts"),
        ("size_class", {"revenue_band": 0}, "contradicts"),
        ("headcount", {"band": 5}, "does not hold"),
        ("headcount", {"band": 12}, "band"),
        ("headcount", {"change_12m": 7}, "grew by more"),
        ("headcount", {"headcount": P.NONE_HEADCOUNT}, "without a headcount"),
        ("watch", {"court_last": D + 1}, "after"),
        ("watch", {"penalties_12m": 2}, "no last date"),
        ("registration", {"status": 0}, "status"),
        ("registration", {"status": 6}, "status"),
        ("registration", {"industry_code": b"c3311"}, "industry code"),
        ("registration", {"industry_code": b"C3\x0011"}, "industry code"),
        ("registration", {"industry_code": b"C3"}, "industry code"),
        ("registration", {"capital_band": 9}, "band"),
        ("registration", {"founded": D + 1}, "founded after"),
    ],
)
def test_bad_codes_are_refused(product, change, message):
    with pytest.raises(ProtocolViolation, match=message):
        P.decode(product, one(product, **{**good(product), **change}), DAY)


def test_unknown_products_are_refused():
    with pytest.raises(ValueError, match="unknown product"):
        P.columns("credit_score")


# --------------------------------------------------------------------------- the bureau


def _usccs(count: int) -> list[str]:
    from xinrong.synthetic import generate_usccs

    return generate_usccs(count, np.random.default_rng(7)).astype(str).tolist()


def _write(path, columns: dict[str, pa.Array], date: str | None = "2026-11-30") -> None:
    table = pa.table(columns)
    if date is not None:
        table = table.replace_schema_metadata({b"xinrong.data_date": date.encode()})
    pq.write_table(table, path)


def _registry(ids: list[str], **overrides: list) -> dict[str, pa.Array]:
    n = len(ids)
    columns = {
        "uscc": ids,
        "industry_code": ["C3311"] * n,
        "founded": [dt.date(2020, 1, 1)] * n,
        "status": ["存续"] * n,
        "registered_capital_10k_cny": [100.0] * n,
        "revenue_10k_cny": [500.0] * n,
        "total_assets_10k_cny": [None] * n,
        "insured_employees": [25] * n,
        "insured_employees_12m_ago": [20] * n,
    }
    columns.update(overrides)
    types = {"founded": pa.date32(), "total_assets_10k_cny": pa.float64()}
    return {k: pa.array(v, types.get(k)) for k, v in columns.items()}


def test_bad_rows_are_reported_and_left_out(tmp_path):
    ids = _usccs(10)
    ids[1] = ids[1][:-1] + ("0" if ids[1][-1] != "0" else "1")  # wrong check character
    ids[2] = ids[0].lower()  # the same enterprise again, once normalised
    good_day, future = dt.date(2020, 1, 1), dt.date(2027, 1, 1)
    registry = _registry(
        ids,
        industry_code=["C3311"] * 3 + ["X1", "F3311", "K70"] + ["C3311"] * 3 + [" f5212 "],
        founded=[good_day] * 6 + [future] + [good_day] * 3,
        status=["存续"] * 7 + ["倒闭", "存续", "在业"],
        revenue_10k_cny=[500.0] * 8 + [-1.0, 500.0],
    )
    _write(tmp_path / "registry.parquet", registry)
    events = {
        "uscc": [ids[0], ids[9], ids[1], ids[0], ids[0]],
        "kind": ["court_judgement", "abnormal_operations", "court_judgement", "riot",
                 "admin_penalty"],
        "date": pa.array([dt.date(2026, 5, 1), dt.date(2026, 1, 1), dt.date(2026, 5, 1),
                          dt.date(2026, 5, 1), dt.date(2026, 12, 1)], pa.date32()),
    }  # fmt: skip
    _write(tmp_path / "events.parquet", events)
    data = ProductData.load(tmp_path / "registry.parquet", tmp_path / "events.parquet")
    reasons = {r.row: r.reason for r in data.registry_rejects}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert "check" in reasons[2] and "earlier row" in reasons[3]
    assert "not a GB/T 4754" in reasons[4] and "belongs to section C" in reasons[5]
    assert "group digit" in reasons[6] and "after the data date" in reasons[7]
    assert "status" in reasons[8] and "revenue_10k_cny is negative" in reasons[9]
    assert data.registry_rejects[0].raw == ids[1]
    event_reasons = {r.row: r.reason for r in data.event_rejects}
    assert sorted(event_reasons) == [3, 4, 5]
    assert "not an enterprise" in event_reasons[3] and "kind" in event_reasons[4]
    assert "after the data date" in event_reasons[5]

    payloads, present = data.payloads("watch", [ids[0], ids[9], ids[1], "nobody"])
    assert present.tolist() == [True, True, False, False]
    assert not payloads[2:].any()
    first, last = (P.decode("watch", row.tobytes(), data.data_date) for row in payloads[:2])
    assert first["watch_court_judgements_12m"] == 1
    assert first["watch_last_court_judgement"] == dt.date(2026, 5, 1)
    assert first["watch_admin_penalties_12m"] == 0  # the future one was refused
    assert last["watch_abnormal_operations_since"] == dt.date(2026, 1, 1)
    registration = P.decode(
        "registration", data.payloads("registration", [ids[9]])[0][0].tobytes(), data.data_date
    )
    assert registration["registration_industry_code"] == "F5212"
    assert registration["registration_status"] == "在业"


def test_watch_windows(tmp_path):
    ids = _usccs(1)
    _write(tmp_path / "r.parquet", _registry(ids))
    dates = [dt.date(2023, 11, 30), dt.date(2023, 12, 1), dt.date(2025, 11, 30),
             dt.date(2025, 12, 1), dt.date(2021, 12, 1)]  # fmt: skip
    _write(
        tmp_path / "e.parquet",
        {
            "uscc": ids * 5,
            "kind": [
                "abnormal_operations",
                "tax_arrears",
                "court_judgement",
                "court_judgement",
                "serious_violation",
            ],  # fmt: skip
            "date": pa.array(dates, pa.date32()),
        },
    )
    data = ProductData.load(tmp_path / "r.parquet", tmp_path / "e.parquet")
    watch = P.decode("watch", data.payloads("watch", ids)[0][0].tobytes(), data.data_date)
    assert watch["watch_abnormal_operations_since"] is None  # 36 months and a day: moved on
    assert watch["watch_tax_arrears_since"] is None  # tax arrears read for 24 months
    assert watch["watch_serious_violation_since"] == dt.date(2021, 12, 1)  # 60 months
    assert watch["watch_court_judgements_12m"] == 1  # 2025-11-30 is 12 months back: out
    assert watch["watch_last_court_judgement"] == dt.date(2025, 12, 1)


def test_file_level_problems_are_typed_errors(tmp_path):
    ids = _usccs(2)
    registry = _registry(ids)
    with pytest.raises(InputDataError, match="does not exist"):
        ProductData.load(tmp_path / "none.parquet")
    _write(tmp_path / "nodate.parquet", registry, date=None)
    with pytest.raises(InputDataError, match="no data date"):
        ProductData.load(tmp_path / "nodate.parquet")
    _write(tmp_path / "lacking.parquet", {k: v for k, v in registry.items() if k != "status"})
    with pytest.raises(InputDataError, match="lacks the columns status"):
        ProductData.load(tmp_path / "lacking.parquet")
    _write(tmp_path / "typed.parquet", {**registry, "founded": pa.array(["2020-01-01"] * 2)})
    with pytest.raises(InputDataError, match="'founded' is string"):
        ProductData.load(tmp_path / "typed.parquet")
    _write(tmp_path / "r.parquet", registry)
    _write(tmp_path / "e.parquet", {"uscc": ids, "kind": ["tax_arrears"] * 2,
                                    "date": pa.array([dt.date(2026, 1, 1)] * 2, pa.date32())},
           date="2026-12-31")  # fmt: skip
    with pytest.raises(InputDataError, match="exported together"):
        ProductData.load(tmp_path / "r.parquet", tmp_path / "e.parquet")


def test_version_changes_with_any_payload(tmp_path):
    ids = _usccs(3)
    _write(tmp_path / "a.parquet", _registry(ids))
    _write(tmp_path / "b.parquet", _registry(ids, insured_employees_12m_ago=[20, 21, 20]))
    _write(tmp_path / "c.parquet", _registry(ids), date="2026-12-31")
    versions = {ProductData.load(tmp_path / f"{x}.parquet").version for x in "abc"}
    assert len(versions) == 3
    assert ProductData.load(tmp_path / "a.parquet").version in versions


# --------------------------------------------------------------------------- the city


@pytest.fixture(scope="module")
def city_data(tmp_path_factory):
    city = generate_city(20_000, 2_000, seed=5)
    paths = write_city(city, tmp_path_factory.mktemp("city"))
    return city, ProductData.load(paths["registry"], paths["events"])


def test_the_city_products_agree_with_its_features(city_data):
    city, data = city_data
    assert not data.registry_rejects and not data.event_rejects
    assert data.data_date == city.data_date == dt.date(2026, 11, 30)
    bureau = city.bureau
    ids = bureau.column("uscc").combine_chunks()
    decoded = {
        product: [
            P.decode(product, row.tobytes(), data.data_date)
            for row in data.payloads(product, ids)[0]
        ]
        for product in ("headcount", "watch", "registration")
    }
    employees = bureau.column("insured_employees").to_pylist()
    assert [d["headcount"] for d in decoded["headcount"]] == employees
    abnormal = bureau.column("abnormal_operation").to_pylist()
    assert [d["watch_abnormal_operations_since"] is not None for d in decoded["watch"]] == [
        bool(a) for a in abnormal
    ]
    gone = [d["registration_status"] in ("注销", "吊销") for d in decoded["registration"]]
    assert gone == [bool(x) for x in bureau.column("deregistered").to_pylist()]
    court_3y = np.array(bureau.column("court_judgements_3y").to_pylist())
    court_12m = np.array([d["watch_court_judgements_12m"] for d in decoded["watch"]])
    assert (court_12m <= court_3y).all() and court_12m.sum() > 0.2 * court_3y.sum()


def test_size_classes_of_a_city_of_smes(city_data):
    city, data = city_data
    payloads, present = data.payloads("size_class", city.bureau.column("uscc"))
    assert present.all()
    sizes = payloads[:, 0]
    share = np.bincount(sizes, minlength=5) / sizes.size
    unknown, large, medium, small, micro = share
    assert micro > 0.65 and 0.05 < small < 0.2 and medium < 0.05 and large < 0.005
    assert unknown < 0.3  # no insured headcount (or assets) for the group's measure
    classified = share[1:].sum()
    assert (small + micro) / classified > 0.95


def test_payloads_of_many_ids_in_order(city_data):
    city, data = city_data
    ids = city.bureau.column("uscc").combine_chunks()
    shuffled = ids.take(pa.array(np.random.default_rng(3).permutation(len(ids))[:500]))
    asked = pa.concat_arrays([shuffled, pa.array(["91350100MA0000000X", None], pa.string())])
    payloads, present = data.payloads("registration", asked)
    assert present.tolist() == [True] * 500 + [False, False]
    registry = city.registry
    where = pc.index_in(shuffled, value_set=registry.column("uscc").combine_chunks())
    codes = registry.column("industry_code").take(where).to_pylist()
    assert [P.decode("registration", p.tobytes(), data.data_date)["registration_industry_code"]
            for p in payloads[:500]] == codes  # fmt: skip


def test_every_new_event_of_a_month_changes_its_watch_entry(tmp_path):
    cities = {m: generate_city(8_000, 500, seed=9, month=m) for m in (1, 2)}
    data = {
        m: ProductData.load(
            **{
                k: v
                for k, v in write_city(c, tmp_path / str(m)).items()
                if k in ("registry", "events")
            }
        )  # fmt: skip
        for m, c in cities.items()
    }
    assert data[1].version != data[2].version
    events = cities[2].events
    new = events.filter(pc.greater(events.column("date"), pa.scalar(DAY, pa.date32())))
    assert new.num_rows > 50
    hit = pc.unique(new.column("uscc"))
    before, _ = data[1].payloads("watch", hit)
    after, _ = data[2].payloads("watch", hit)
    for old, fresh, uscc in zip(before, after, hit.to_pylist()):
        old_watch = P.decode("watch", old.tobytes(), data[1].data_date)
        new_watch = P.decode("watch", fresh.tobytes(), data[2].data_date)
        kinds = set(new.filter(pc.equal(new.column("uscc"), uscc)).column("kind").to_pylist())
        for kind, column in (
            ("abnormal_operations", "watch_abnormal_operations_since"),
            ("serious_violation", "watch_serious_violation_since"),
            ("tax_arrears", "watch_tax_arrears_since"),
            ("court_judgement", "watch_last_court_judgement"),
            ("admin_penalty", "watch_last_admin_penalty"),
        ):
            if kind in kinds:
                assert new_watch[column] > DAY and new_watch[column] != old_watch[column]


def test_an_entry_that_opens_but_does_not_decode_is_taken_as_not_held():
    """A bureau that made one enterprise's sealed entry unreadable would learn, if the bank
    stopped there, that the bank looked that enterprise up (the calls that follow do not
    come). The bank takes the entry as not held, says so, and goes on."""
    from types import SimpleNamespace

    from bank_node.lookup import look_up

    said: list[str] = []

    class Opened:  # what the bank's lookup client returns once the entries are opened
        say = staticmethod(said.append)

        def open(self, products, ids):
            bad = one("size_class", **(good("size_class") | {"size": 5}))
            return {"size_class": [one("size_class", **good("size_class")), None, bad]}

        def info(self, product):
            return SimpleNamespace(data_date=DAY.isoformat())

    got = look_up(None, ["a", "b", "c"], ["size_class"], client=Opened())
    assert got.column("size_class_data_date").to_pylist() == [DAY, None, None]
    assert any("1 entries of the bureau's size_class table" in s for s in said)
