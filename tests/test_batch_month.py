"""A batch run a month later finds exactly the watch events the synthetic city's generator
dated in that month (issue 14): two real nodes over loopback, private scoring and private
product lookups, the bureau restarted on the second month's files over the same state."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from bank_node.batch import batch_job
from bank_node.training import train_job
from bureau_node.audit import AuditLog
from bureau_node.server import BureauNode
from protocols import vertical_lr as vlr
from protocols.ids import IdType, normalise_column
from xinrong.synthetic import generate_city, write_city

PRODUCTS = ["size_class", "headcount", "watch", "registration"]
SEED = 11


def serve(paths: dict, state) -> BureauNode:  # noqa: ANN001
    node = BureauNode(
        paths["bureau"],
        "uscc",
        state,
        workers=0,
        training_limits=vlr.TrainingLimits(allow_test_keys=True),
        registry=paths["registry"],
        events=paths["events"],
    )
    node.start("127.0.0.1:0")
    return node


@pytest.fixture(autouse=True)
def _tables_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XINRONG_TABLES_DIR", str(tmp_path / "tables"))


def test_the_second_months_alerts_are_the_generators_events(tmp_path):
    month1 = write_city(generate_city(6000, 1500, SEED, graph=False), tmp_path / "m1")
    month2 = write_city(generate_city(6000, 1500, SEED, graph=False, month=2), tmp_path / "m2")
    state, runs, model = tmp_path / "state", tmp_path / "runs", tmp_path / "model"
    portfolio = tmp_path / "portfolio.csv"
    clients = pacsv.read_csv(
        month1["bank"], convert_options=pacsv.ConvertOptions(column_types={"uscc": pa.string()})
    )
    pacsv.write_csv(clients.drop_columns(["y"]), portfolio)

    node = serve(month1, state)
    try:
        address = f"127.0.0.1:{node.port}"
        train_job(address, month1["bank"], "uscc", "y", model, "bank-a", epochs=2, seed=1,
                  key_bits=768, allow_test_keys=True, workers=0, quiet=True)  # fmt: skip
        first = batch_job(portfolio, "uscc", model, runs / "2026-11", "bank-a", address,
                          products=PRODUCTS, workers=0, quiet=True)  # fmt: skip
        assert first.exit_status == 0 and first.summary["baseline"]
    finally:
        node.stop()

    node = serve(month2, state)  # the bureau's data a month on; its keys and models kept
    try:
        address = f"127.0.0.1:{node.port}"
        second = batch_job(portfolio, "uscc", model, runs / "2026-12", "bank-a", address,
                           products=PRODUCTS, workers=0, quiet=True)  # fmt: skip
    finally:
        node.stop()

    # what the generator wrote: the events dated in the second month, of the portfolio
    events = pq.read_table(month2["events"])
    month_start = dt.date(2026, 12, 1)
    dated = pc.greater_equal(events["date"], pa.scalar(month_start, pa.date32()))
    new = events.filter(dated)
    ids = set(normalise_column(clients["uscc"].combine_chunks(), IdType.USCC).to_pylist())
    expected = {
        (u, k) for u, k in zip(new["uscc"].to_pylist(), new["kind"].to_pylist()) if u in ids
    }
    assert len(expected) >= 10  # the city gives the test something to find

    alerts = pacsv.read_csv(
        runs / "2026-12" / "alerts.csv",
        convert_options=pacsv.ConvertOptions(column_types={"id": pa.string()}),
    )
    found = {
        (a["id"], a["kind"].removeprefix("watch_"))
        for a in alerts.to_pylist()
        if a["kind"].startswith("watch_")
    }
    assert found == expected
    assert second.exit_status == 3
    summary = json.loads((runs / "2026-12" / "summary.json").read_text())
    assert summary["previous"] == str(runs / "2026-11")

    # the bureau's new data ended the bank's key epoch: last month's points open none of the
    # new tables (a review read each enterprise's events from its change of score, for
    # free), so the second month's tables are whole downloads, looked up again
    records = AuditLog(state).records()
    fetched = [json.loads(r["details"]) for r in records if r["event"] == "lookup_table"]
    first_month, second_month = fetched[: len(fetched) // 2], fetched[len(fetched) // 2 :]
    assert {f["product"] for f in second_month} == {f["product"] for f in first_month}
    assert all(f["since_version"] == 0 for f in fetched)
    epochs = {f["key_epoch"] for f in first_month}, {f["key_epoch"] for f in second_month}
    assert len(epochs[0]) == len(epochs[1]) == 1 and epochs[1] == {epochs[0].pop() + 1}
    rotated = [json.loads(r["details"]) for r in records if r["event"] == "key_rotated"]
    assert [r["cause"] for r in rotated] == ["data"]
