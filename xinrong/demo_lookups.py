"""The demo's private-lookup steps: one applicant decided without the bureau learning who,
the portfolio's size classes (企业划型), and a batch run a month later that finds the new
watch events. Called by :mod:`xinrong.demo`."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from bank_node.batch import batch_job
from bank_node.lookup import lookup_job
from bank_node.training import predict_job
from bureau_node.server import BureauNode
from protocols.vertical_lr import TrainingLimits

PRODUCTS = ["size_class", "headcount", "watch", "registration"]
Say = Any


def decide_one(
    address: str, bank_id: str, bank_tls: Path, model_dir: Path, applicants: Path, workdir: Path
) -> dict[str, Any]:
    """The first applicant alone, scored privately: the bureau's default policy would not
    reveal an intersection of one, and here it learns only that one ID was looked up."""
    table = pacsv.read_csv(
        applicants, convert_options=pacsv.ConvertOptions(column_types={"uscc": pa.string()})
    ).slice(0, 1)
    one = workdir / "one-applicant.csv"
    pacsv.write_csv(table, one)
    started = time.perf_counter()
    predict_job(address, model_dir, one, "uscc", workdir / "one-decision.csv", bank_id,
                quiet=True, tls_dir=bank_tls, workers=0)  # fmt: skip
    seconds = time.perf_counter() - started
    decision = pacsv.read_csv(workdir / "one-decision.csv").to_pylist()[0]
    return {"score": decision["score"], "seconds": round(seconds, 3)}


def portfolio_sizes(
    address: str, bank_id: str, bank_tls: Path, portfolio: Path, workdir: Path
) -> dict[str, int]:
    """The size class of every client, looked up privately: counts by class."""
    out = workdir / "portfolio-size-classes.csv"
    lookup_job(address, portfolio, "uscc", ["size_class"], out, bank_id, tls_dir=bank_tls,
               say=lambda text: None)  # fmt: skip
    classes = pacsv.read_csv(out).column("size_class_zh").to_pylist()
    return dict(Counter(c or "(未知 unknown)" for c in classes).most_common())


def batch_run(
    address: str, bank_id: str, bank_tls: Path, portfolio: Path, model_dir: Path, out: Path
) -> dict[str, Any]:
    outcome = batch_job(portfolio, "uscc", model_dir, out, bank_id, address, products=PRODUCTS,
                        tls_dir=bank_tls, workers=0, quiet=True, say=lambda text: None)  # fmt: skip
    return {"exit_status": outcome.exit_status, **outcome.summary}


def month_two(
    city: dict[str, Path],
    state_dir: Path,
    tls: Path,
    bank_id: str,
    bank_tls: Path,
    portfolio: Path,
    model_dir: Path,
    runs: Path,
    workers: int | None,
    allow_test_keys: bool,
) -> dict[str, Any]:
    """The bureau restarted on the city's files a month on (same state: keys and models
    kept), and the bank's batch run against the first month's."""
    with BureauNode(
        data=city["bureau"],
        id_column="uscc",
        state_dir=state_dir,
        workers=workers,
        training_limits=TrainingLimits(allow_test_keys=allow_test_keys),
        tls_dir=tls,
        graph=city.get("graph"),
        registry=city["registry"],
        events=city["events"],
    ) as node:
        address = f"127.0.0.1:{node.start('127.0.0.1:0')}"
        return batch_run(address, bank_id, bank_tls, portfolio, model_dir, runs)


def alert_counts(run: Path) -> dict[str, int]:
    alerts = pacsv.read_csv(run / "alerts.csv").column("kind").to_pylist()
    return dict(Counter(alerts).most_common())
