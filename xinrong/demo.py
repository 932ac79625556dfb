"""``xinrong demo``: the whole story on a synthetic city, on this machine, with no input
from the user: a bureau node on a loopback port serving the city's enterprises and its
association graph, PSI, information values, joint training beside a bank-only model and
beside a joint model without the graph features, a scorecard, scoring of new applicants,
private lookups (one applicant decided alone, the portfolio's size classes), a batch run a
month later with its alerts, and the report."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from bank_node.jobs import psi_job
from bank_node.lookup import TABLES_ENV
from bank_node.receipts import RECEIPTS_ENV
from bank_node.toolkit import iv_job, read_iv_table, scorecard_job
from bank_node.training import predict_job, train_job
from bureau_node.server import BureauNode
from node_runtime import tables
from node_runtime.transport import certs
from protocols import paillier as he
from protocols.errors import InputDataError, PeerError
from protocols.scorecard import Scaling
from xinrong import demo_lookups as lookups
from xinrong.synthetic import generate_city, write_city

DEMO_BANK_ID = "demo-bank"
APPLICANT_SHARE = 0.2  # of the bank's clients, held back as "new applicants" to score


def _split_applicants(bank_file: Path, seed: int) -> tuple[Path, Path]:
    """The bank's history (with labels) for training, the rest as applicants (no labels)."""
    clients = pacsv.read_csv(
        bank_file, convert_options=pacsv.ConvertOptions(column_types={"uscc": pa.string()})
    )
    order = np.random.default_rng(seed).permutation(clients.num_rows)
    cut = int(clients.num_rows * (1 - APPLICANT_SHARE))
    history = clients.take(np.sort(order[:cut]))
    applicants = clients.take(np.sort(order[cut:])).drop_columns(["y"])
    history_file = bank_file.with_name("bank_history.csv")
    applicants_file = bank_file.with_name("applicants.csv")
    tables.write_csv(history, history_file)
    tables.write_csv(applicants, applicants_file)
    return history_file, applicants_file


MARKER = ".xinrong-demo"  # a directory the demo made, and may set aside for a new run


def _fresh(workdir: Path, say: Any) -> None:
    """The demo runs in a directory it made (or found empty), and marks it. An earlier run's
    (marked) directory is moved aside to ``<workdir>-previous`` (a marked one of that name is
    replaced; anything else there stops the demo): a second run in it failed at step 7
    after overwriting the first's model. A directory the demo did not make is never moved,
    emptied or deleted: with files of its own it is refused."""
    workdir = workdir.resolve()
    if (workdir / MARKER).exists():
        previous = workdir.with_name(workdir.name + "-previous")
        if previous.exists() and not (previous / MARKER).exists():
            raise InputDataError(
                f"{previous} exists and is not an earlier demo's: move it, or give the demo "
                "another --workdir"
            )
        if previous.exists():
            shutil.rmtree(previous)
        workdir.rename(previous)
        say(f"    an earlier demo run was moved to {previous}")
    elif workdir.exists() and any(workdir.iterdir()):
        raise InputDataError(
            f"{workdir} holds files the demo did not make: give the demo an empty or new "
            "directory (--workdir)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("made by `xinrong demo`; moved aside by the next run\n")


@contextlib.contextmanager
def _kept_in(workdir: Path) -> Iterator[None]:
    """The bank's receipts and lookup tables under the demo's directory, not ~/.xinrong
    (where a real bank's receipts of another bureau would be mixed with the demo's)."""
    saved = {name: os.environ.get(name) for name in (RECEIPTS_ENV, TABLES_ENV)}
    os.environ[RECEIPTS_ENV] = str(workdir / "receipts")
    os.environ[TABLES_ENV] = str(workdir / "lookup-tables")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _comparison_model(say: Any, address: str, history: Path, out: Path, **options: Any) -> Any:
    """The joint model without the graph features, for the graph's lift; None when the
    bureau refuses to keep it: beside the joint model its score is a second projection of
    the same enterprises, and their difference is the graph part, which on a small city can
    read a rare graph feature (SECURITY.md, "Several models")."""
    try:
        return train_job(address, history, "uscc", "y", out, DEMO_BANK_ID, say=lambda t: None,
                         **options)  # fmt: skip
    except PeerError as exc:
        if "sums of the scores" not in str(exc):
            raise
        say(
            "    the bureau keeps no model without the graph features beside the joint one: "
            "their scores together would read graph features (SECURITY.md, 'Several models')"
        )
        return None


def run_demo(
    workdir: Path,
    enterprises: int = 50_000,
    bank_clients: int = 5_000,
    seed: int = 1,
    workers: int | None = None,
    say: Any = None,
    key_bits: int = 2048,
    allow_test_keys: bool = False,
) -> dict[str, Any]:
    """Generate, serve, match, rank, train, score, report; returns the summary (also what
    the last stdout line holds)."""
    he.check_key_bits(key_bits, allow_test_keys)  # before anything is set up, not at step 4
    say = say or (lambda text: print(text, file=sys.stderr))
    _fresh(workdir, say)
    with _kept_in(workdir):
        return _steps(workdir, enterprises, bank_clients, seed, workers, say, key_bits,
                      allow_test_keys)  # fmt: skip


def _steps(
    workdir: Path,
    enterprises: int,
    bank_clients: int,
    seed: int,
    workers: int | None,
    say: Any,
    key_bits: int,
    allow_test_keys: bool,
) -> dict[str, Any]:
    started = time.perf_counter()
    quiet = not sys.stderr.isatty()
    say(f"1/9 generating a city of {enterprises:,} enterprises and {bank_clients:,} bank clients")
    paths = write_city(generate_city(enterprises, bank_clients, seed), workdir / "data")
    history, applicants = _split_applicants(paths["bank"], seed)
    say("2/9 a private CA, certificates, and a bureau node on a loopback port (mutual TLS)")
    tls = workdir / "tls"
    if not (tls / "ca.key").exists():
        certs.init_ca(tls)
    bank_tls = Path(certs.issue_bank(tls, DEMO_BANK_ID)["dir"])
    keys: dict[str, Any] = {
        "key_bits": key_bits,
        "allow_test_keys": allow_test_keys,
        "tls_dir": bank_tls,
    }
    from protocols.vertical_lr import TrainingLimits

    # the default policy, but a day's IV budget for a few runs: one IV request over the
    # city's 38 features spends 2.375 of the default 2.5, and the demo may be run again the
    # same day in the same directory (the bureau's usage is kept in its state directory)
    config = workdir / "bureau.toml"
    config.write_text(f"[banks.{DEMO_BANK_ID}]\niv_rho_per_day = 25\n", encoding="utf-8")
    with BureauNode(
        data=paths["bureau"],
        id_column="uscc",
        state_dir=workdir / "bureau-state",
        workers=workers,
        training_limits=TrainingLimits(allow_test_keys=allow_test_keys),
        tls_dir=tls,
        graph=paths["graph"],
        registry=paths["registry"],
        events=paths["events"],
        config=config,
    ) as node:
        port = node.start("127.0.0.1:0")
        address = f"127.0.0.1:{port}"
        say(f"3/9 private set intersection with the bureau at {address}")
        matched = psi_job(
            bureau=address,
            data=history,
            id_column="uscc",
            out=workdir / "matched.csv",
            bank_id=DEMO_BANK_ID,
            workers=workers,
            tls_dir=bank_tls,
        )
        say(
            f"    the bureau knows {matched.intersection:,} of the bank's "
            f"{matched.bank_ids:,} clients ({matched.rejected} invalid IDs)"
        )
        say("4/9 information value of every feature (the bureau sees no label)")
        iv_table = workdir / "iv.csv"
        iv = iv_job(
            address,
            history,
            "uscc",
            "y",
            iv_table,
            DEMO_BANK_ID,
            workers=workers,
            quiet=quiet,
            say=lambda text: None,
            **keys,
        )
        ranked = read_iv_table(iv_table)
        top_bureau = [r for r in ranked if r["party"] == "bureau"][:5]
        for r in top_bureau:  # +- how far the bureau's privacy noise moves it
            say(f"    {r['feature']:<28} IV {r['iv']:.3f} ±{r['iv_sd']:.3f} ({r['strength']})")
        top_graph = [r for r in ranked if r["feature"].startswith("graph_")][:3]
        for r in top_graph:
            say(
                f"    graph: {r['feature']:<28} IV {r['iv']:.3f} ±{r['iv_sd']:.3f} "
                f"({r['strength']})"
            )
        say("5/9 training the joint model under Paillier encryption, and a bank-only model")
        model_dir = workdir / "model"
        trained = train_job(
            address,
            history,
            "uscc",
            "y",
            model_dir,
            DEMO_BANK_ID,
            compare_bank_only=True,
            seed=seed,
            workers=workers,
            quiet=quiet,
            say=lambda text: say("    " + text) if text.startswith("epoch") else None,
            **keys,
        )
        assert node.features is not None
        own = [n for n in node.features.names if not n.startswith("graph_")]
        say("    and the same joint model without the bureau's graph features")
        without_graph = _comparison_model(
            say,
            address,
            history,
            workdir / "model-without-graph",
            bureau_features=own,
            seed=seed,
            workers=workers,
            quiet=quiet,
            **keys,
        )
        say("6/9 scorecard and scoring of new applicants")
        scorecard_job(
            model_dir,
            DEMO_BANK_ID,
            Scaling(),
            bureau=address,
            say=lambda t: None,
            tls_dir=bank_tls,
        )
        scored = predict_job(
            address,
            model_dir,
            applicants,
            "uscc",
            workdir / "scores.csv",
            DEMO_BANK_ID,
            workers=workers,
            quiet=quiet,
            points=True,
            tls_dir=bank_tls,
        )
        say("7/9 private lookups: the bureau learns how many enterprises, never which")
        one = lookups.decide_one(address, DEMO_BANK_ID, bank_tls, model_dir, applicants, workdir)
        say(f"    one applicant decided alone: default probability {one['score']:.3f} "
            f"({one['seconds'] * 1000:.0f} ms with the bank-node command)")  # fmt: skip
        sizes = lookups.portfolio_sizes(address, DEMO_BANK_ID, bank_tls, history, workdir)
        say("    the portfolio's size classes (企业划型): "
            + ", ".join(f"{k} {v:,}" for k, v in sizes.items()))  # fmt: skip
        runs = workdir / "runs"
        lookups.batch_run(address, DEMO_BANK_ID, bank_tls, history, model_dir, runs / "month-1")
    say("8/9 a month later: the bureau's data move on, the bank's batch run re-checks its clients")
    month2 = write_city(
        generate_city(enterprises, bank_clients, seed, month=2), workdir / "data-month-2"
    )
    later = lookups.month_two(month2, workdir / "bureau-state", tls, DEMO_BANK_ID, bank_tls,
                              month2["bank"], model_dir, runs / "month-2", workers,
                              allow_test_keys)  # fmt: skip
    kinds = lookups.alert_counts(runs / "month-2")
    say(f"    {later['alerts']:,} alerts (exit status {later['exit_status']}): "
        + ", ".join(f"{k} {v:,}" for k, v in kinds.items())
        + f"; {runs / 'month-2' / 'alerts.csv'}")  # fmt: skip
    say("9/9 writing the report")
    from bank_node.report import build_report

    report = workdir / "report.html"
    no_graph = None
    if without_graph is not None:
        no_graph = {
            "auc": without_graph["validation_auc"],
            "ks": without_graph["validation_ks"],
            "log_loss": without_graph["validation_log_loss"],
            "rows": without_graph["validation_rows"],
        }
    build_report(
        model_dir,
        report,
        iv_table=iv_table,
        title="Xinrong demo: joint credit model",
        compare={"Joint model without graph features": no_graph} if no_graph else None,
    )
    joint, bank_only = trained["validation_auc"], trained["bank_only_auc"]
    lift = None if joint is None or bank_only is None else round(joint - bank_only, 4)
    graph_lift = None
    if joint is not None and no_graph is not None and no_graph["auc"] is not None:
        graph_lift = joint - no_graph["auc"]
    without = (
        f" and {no_graph['auc']:.3f} without the graph features ({graph_lift:+.3f})"
        if no_graph is not None and graph_lift is not None
        else ""
    )
    say(
        f"Joint model validation AUC {joint:.3f} against {bank_only:.3f} for the bank alone "
        f"(+{lift:.3f}){without}; {scored['rows']:,} applicants scored "
        f"({scored['bureau_matched']:,} known to the bureau) in {workdir / 'scores.csv'}; "
        f"report: {report}"
    )
    return {
        "workdir": str(workdir),
        "matched": matched.intersection,
        "bank_clients": matched.bank_ids,
        "top_bureau_features": [{"feature": r["feature"], "iv": r["iv"]} for r in top_bureau],
        "bank_only_auc": bank_only,
        "joint_auc": joint,
        "auc_lift": lift,
        "joint_auc_without_graph": None if no_graph is None else no_graph["auc"],
        "graph_auc_lift": None if graph_lift is None else round(graph_lift, 4),
        "top_graph_features": [{"feature": r["feature"], "iv": r["iv"]} for r in top_graph],
        "joint_ks": trained["validation_ks"],
        "model_id": trained["model_id"],
        "epochs": trained["epochs"],
        "applicants_scored": scored["rows"],
        "scores": str(workdir / "scores.csv"),
        "iv_table": str(iv_table),
        "report": str(report),
        "iv_seconds": iv["seconds"],
        "one_applicant": one,
        "portfolio_size_classes": sizes,
        "batch_alerts_month_2": kinds,
        "batch_run_month_2": str(runs / "month-2"),
        "seconds": round(time.perf_counter() - started, 1),
    }
