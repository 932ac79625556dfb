"""The bank's Python API: the README's example from a plain script over mutual TLS,
DataFrame and pyarrow inputs, typed errors, and an executor that never re-imports the
caller's main module."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

import bank_node
from bureau_node.server import BureauNode
from node_runtime import progress
from node_runtime.cli_common import distribution_version
from node_runtime.transport import certs
from protocols import vertical_lr as vlr
from protocols.errors import InputDataError, PeerError
from xinrong.synthetic import generate_city, generate_usccs, write_city

ROOT = Path(__file__).resolve().parent.parent


def run_script(path: Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Runs a .py file in its own interpreter, as a user would (not under pytest)."""
    return subprocess.run(
        [sys.executable, str(path)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_a_pool_from_a_script_without_a_main_guard_does_not_rerun_the_script(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            from node_runtime.parallel import make_executor
            from protocols import paillier as he

            print("top level", flush=True)
            pool = make_executor(2)
            pids = {pool.submit(os.getpid).result() for _ in range(6)}
            public_key, private_key = he.generate_keypair(768, allow_test_keys=True)
            sent = he.OwnerEncryptor(private_key).encrypt_many(list(range(200)), pool)
            back = [he.decrypt(private_key, c) for c in sent]
            pool.shutdown()
            print("in workers", os.getpid() not in pids, back == list(range(200)))
            """
        )
    )
    done = run_script(script, tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    # the script's top level ran once, in its own process, and the workers did the work
    assert done.stdout.splitlines() == ["top level", "in workers True True"]


# -- the README's example, from a plain script, over mutual TLS ----------------------------

README = ROOT / "README.md"
PLACEHOLDER = "bureau.example.org:50051"


def readme_example() -> str:
    """The Python block under the README's "Python API" heading, as it stands."""
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> Path:
    """A bank's working directory as the README assumes it: clients.csv, applicants.csv and
    ./tls/banks/my-bank (here the CA lives beside it)."""
    root = tmp_path_factory.mktemp("bank")
    city = write_city(generate_city(4000, 1200, seed=11), root / "city")
    clients = pacsv.read_csv(
        city["bank"], convert_options=pacsv.ConvertOptions(column_types={"uscc": pa.string()})
    )
    pacsv.write_csv(clients, root / "clients.csv")
    applicants = clients.drop_columns(["y"]).slice(0, 150)
    strangers = generate_usccs(3, np.random.default_rng(8)).astype(str).tolist()
    extra = pa.table(
        {n: pa.nulls(4, applicants.schema.field(n).type) for n in applicants.column_names}
    ).set_column(0, "uscc", pa.array([strangers[0], "not-a-code", *strangers[1:]], pa.string()))
    pacsv.write_csv(pa.concat_tables([applicants, extra]), root / "applicants.csv")
    certs.init_ca(root / "tls")
    certs.issue_bank(root / "tls", "my-bank")
    certs.issue_bank(root / "tls", "other-bank")
    (root / "city").joinpath("bureau.path").write_text(str(city["bureau"]))
    (root / "city").joinpath("registry.path").write_text(str(city["registry"]))
    (root / "city").joinpath("events.path").write_text(str(city["events"]))
    return root


@pytest.fixture(scope="module")
def bureau_node(room, tmp_path_factory):
    data = Path((room / "city" / "bureau.path").read_text())
    with BureauNode(
        data,
        "uscc",
        tmp_path_factory.mktemp("state"),
        workers=0,
        tls_dir=room / "tls",
        training_limits=vlr.TrainingLimits(allow_test_keys=True),  # the README uses 2048
        registry=Path((room / "city" / "registry.path").read_text()),
        events=Path((room / "city" / "events.path").read_text()),
    ) as node:
        node.start("127.0.0.1:0")
        yield node


@pytest.fixture(scope="module")
def example_run(room, bureau_node):
    source = readme_example()
    assert source.count(PLACEHOLDER) == 2 and "__main__" not in source
    script = room / "example.py"
    script.write_text(source.replace(PLACEHOLDER, f"127.0.0.1:{bureau_node.port}"))
    done = run_script(script, room, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_the_readme_example_runs_from_a_plain_script_over_mutual_tls(room, example_run):
    model = json.loads((room / "model" / "model.json").read_text())
    metrics = model["metrics"]
    for split in ("train", "validation"):
        assert {"auc", "ks", "log_loss"} <= set(metrics[split])
        assert 0.6 < metrics[split]["auc"] <= 1 and 0 < metrics[split]["ks"] <= 1
    assert 1 <= len(model["history"]) <= 5
    assert "train_loss" in example_run.stdout and "auc" in example_run.stdout
    known = re.search(r"the bureau knows (\d+) of 1200 clients", example_run.stdout)
    assert known and 800 < int(known.group(1)) <= 1200
    # one prediction per applicant, in the applicants' order, the unknown flagged not dropped
    applicants = pacsv.read_csv(
        room / "applicants.csv",
        convert_options=pacsv.ConvertOptions(column_types={"uscc": pa.string()}),
    )
    scores = pd.read_csv(room / "scores.csv", dtype={"uscc": str})
    reasons = [f"{side}reason_{i}" for side in ("", "bureau_") for i in (1, 2, 3)]
    assert list(scores.columns) == ["uscc", "score", "bureau_matched", *reasons]
    assert scores["uscc"].tolist() == applicants.column("uscc").to_pylist()
    assert scores["score"].between(0, 1).all()
    assert scores["bureau_matched"].iloc[:150].sum() > 100
    assert not scores["bureau_matched"].iloc[150:].any()
    # the saved model, loaded in a new session, scores everyone the same
    again = pd.read_csv(room / "scores-again.csv", dtype={"uscc": str})
    assert again["uscc"].tolist() == scores["uscc"].tolist()
    assert np.allclose(again["score"], scores["score"], rtol=0, atol=1e-12)
    iv = pd.read_csv(room / "iv.csv")
    assert set(iv["party"]) == {"bank", "bureau"} and (iv["iv"] >= 0).all()
    # the clients' size classes, looked up privately: every client, in order
    sizes = pd.read_csv(room / "size-classes.csv", dtype={"uscc": str})
    assert list(sizes.columns[:3]) == ["uscc", "size_class", "size_class_zh"]
    assert (
        sizes["uscc"].tolist()
        == pd.read_csv(room / "clients.csv", dtype={"uscc": str})["uscc"].tolist()
    )
    assert set(sizes["size_class_zh"].dropna()) <= {"大型", "中型", "小型", "微型"}
    assert sizes["size_class"].notna().sum() > 800


# -- in memory: DataFrames and pyarrow Tables, typed errors --------------------------------


@pytest.fixture()
def bureau(room, bureau_node):
    with bank_node.connect(
        f"127.0.0.1:{bureau_node.port}", tls_dir=room / "tls" / "banks" / "my-bank", workers=0
    ) as session:
        yield session


def clients_table(room: Path) -> pa.Table:
    return pacsv.read_csv(
        room / "clients.csv",
        convert_options=pacsv.ConvertOptions(column_types={"uscc": pa.string()}),
    )


def test_dataframes_and_pyarrow_tables_give_the_same_answers(room, bureau, monkeypatch):
    table = clients_table(room)
    from_frame = bureau.psi(table.to_pandas(), id_column="uscc")
    assert isinstance(from_frame, pd.DataFrame) and list(from_frame.columns) == ["uscc"]
    assert 800 < len(from_frame) <= table.num_rows
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    from_table = bureau.psi(table, id_column="uscc")
    assert isinstance(from_table, pa.Table)
    assert from_table.column("uscc").to_pylist() == from_frame["uscc"].tolist()
    catalogue = bureau.features()
    assert isinstance(catalogue, pa.Table) and catalogue.num_rows == 17
    assert catalogue.column_names == ["name", "kind", "description", "public"]


def test_a_gbk_file_is_read_with_the_encoding_named(room, bureau, tmp_path):
    """The bank's files are GBK; the API reads a path as ``bank-node --encoding`` does."""
    table = clients_table(room).slice(0, 400)
    frame = table.to_pandas().rename(columns={"uscc": "统一社会信用代码"})
    frame["行业"] = "制造业"
    path = tmp_path / "客户.csv"
    frame.to_csv(path, index=False, encoding="gbk")
    column = "统一社会信用代码"
    expected = bureau.psi(table, id_column="uscc")["uscc"].tolist()
    assert bureau.psi(path, id_column=column, encoding="gbk")[column].tolist() == expected
    with pytest.raises(InputDataError, match="not valid utf-8"):
        bureau.psi(path, id_column=column, encoding="utf-8")
    with pytest.raises(InputDataError, match="unknown encoding"):
        bureau.psi(path, id_column=column, encoding="gbk2")


def test_a_saved_model_predicts_and_keeps_its_scorecard(room, bureau, example_run, tmp_path):
    model = bank_node.load(room / "model", bureau)
    applicants = pacsv.read_csv(
        room / "applicants.csv",
        convert_options=pacsv.ConvertOptions(column_types={"uscc": pa.string()}),
    )
    from_frame = model.predict_proba(applicants.to_pandas())
    from_table = model.predict_proba(applicants)
    assert from_frame["score"].tolist() == from_table["score"].tolist()
    assert len(from_frame) == applicants.num_rows
    assert model.metrics["validation"]["auc"] > 0.6
    assert list(model.history.columns) == ["epoch", "train_loss", "validation_loss", "seconds"]
    with pytest.raises(InputDataError, match="no scorecard"):
        model.predict_proba(applicants, points=True)
    with pytest.raises(InputDataError, match="no column 'account_age_months'|account_age"):
        model.predict_proba(applicants.drop_columns(["account_age_months"]))
    card = model.scorecard(base_score=600, pdo=50, base_odds=20)
    assert card["feature"].iloc[0] == "(base points)" and len(card) > 5
    with_points = model.predict_proba(applicants, points=True)
    assert with_points["score"].tolist() == from_table["score"].tolist()
    # more points, better odds: the points fall as the probability of default rises
    assert np.corrcoef(with_points["points"], with_points["score"])[0, 1] < -0.5
    saved = model.save(tmp_path / "copy")
    reloaded = bank_node.load(saved, bureau).predict_proba(applicants, points=True)
    assert reloaded["points"].tolist() == with_points["points"].tolist()
    assert (saved / "scorecard.csv").exists() and (saved / "evaluation.csv").exists()


def test_errors_are_typed_and_say_what_to_do(room, bureau, bureau_node, tmp_path):
    address = f"127.0.0.1:{bureau_node.port}"
    tls = room / "tls" / "banks" / "my-bank"
    with pytest.raises(InputDataError, match="mutual TLS"):
        bank_node.connect(address)
    with pytest.raises(InputDataError, match="loopback only"):
        bank_node.connect("bureau.example.org:50051", insecure=True)
    with pytest.raises(InputDataError, match="not 'other-bank'"):
        bank_node.connect(address, tls_dir=tls, bank_id="other-bank")
    with pytest.raises(PeerError, match="cannot connect to the bureau"):
        bank_node.connect("127.0.0.1:1", tls_dir=tls, connect_timeout=1)
    table = clients_table(room)
    with pytest.raises(InputDataError, match="no column named 'id'"):
        bureau.psi(table, id_column="id")
    with pytest.raises(InputDataError, match="read the IDs as text"):
        bureau.psi(pd.DataFrame({"uscc": [1.5, 2.0]}), id_column="uscc")
    with pytest.raises(InputDataError, match="DataFrame, a pyarrow Table or a file's path"):
        bureau.psi([["91350100M000100Y43"]], id_column="uscc")
    with pytest.raises(InputDataError, match="no such file"):
        bureau.psi(room / "missing.csv", id_column="uscc")
    bad = table.set_column(table.column_names.index("y"), "y", pa.array([2] * table.num_rows))
    with pytest.raises(InputDataError, match="must hold 0 or 1"):
        bureau.train(bad, id_column="uscc", label="y")
    with pytest.raises(bank_node.XinrongError, match="from 2048 to 4096"):
        bureau.train(table, id_column="uscc", label="y", key_bits=512)
    with pytest.raises(InputDataError, match="no model here"):
        bank_node.load(tmp_path, bureau)
    # all of them are what the command lines turn into one line
    assert issubclass(InputDataError, bank_node.XinrongError)


def test_import_is_light_and_versioned():
    code = (
        "import sys, bank_node; "
        "print(bank_node.__version__, any(m in sys.modules for m in "
        "('grpc', 'pyarrow', 'numpy', 'sklearn', 'pandas')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    version, heavy = done.stdout.split()
    assert version == distribution_version() and heavy == "False"
    assert bank_node.__doc__ and "connect" in bank_node.__all__


WITHOUT_PANDAS = """
import importlib.abc, json, sys

class NoPandas(importlib.abc.MetaPathFinder):  # as if pandas were not installed
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("No module named 'pandas'", name=name)

sys.meta_path.insert(0, NoPandas())
import pyarrow as pa
import pyarrow.csv as pacsv
import bank_node

address, tls_dir, model_dir = sys.argv[1:4]
table = pacsv.read_csv(
    "clients.csv", convert_options=pacsv.ConvertOptions(column_types={"uscc": pa.string()})
)
epochs = []
with bank_node.connect(address, tls_dir=tls_dir, workers=0) as bureau:
    model = bureau.train(
        table, id_column="uscc", label="y", epochs=2, seed=3, key_bits=768,
        allow_test_keys=True, model_dir=model_dir, on_epoch=lambda r: epochs.append(r.epoch),
    )
    scores = model.predict_proba(table.drop_columns(["y"]).slice(0, 40))
print(json.dumps({
    "pandas_loaded": "pandas" in sys.modules,
    "types": [type(model.history).__name__, type(scores).__name__],
    "epochs": epochs,
    "history": model.history.column("epoch").to_pylist(),
    "rows": model.summary["rows"],
    "train_auc": model.metrics["train"]["auc"],
    "model_id": model.model_id,
    "ids": scores.column("uscc").to_pylist(),
}))
"""


def test_training_on_a_pyarrow_table_without_pandas(room, bureau_node, tmp_path):
    script = tmp_path / "no_pandas.py"
    script.write_text(WITHOUT_PANDAS)
    address = f"127.0.0.1:{bureau_node.port}"
    tls = room / "tls" / "banks" / "my-bank"
    done = subprocess.run(
        [sys.executable, str(script), address, str(tls), str(tmp_path / "m")],
        cwd=room,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["pandas_loaded"] is False and out["types"] == ["Table", "Table"]
    assert 1 <= len(out["epochs"]) <= 2 and out["history"] == [e + 1 for e in out["epochs"]]
    assert out["rows"] > 800 and out["train_auc"] > 0.6
    # model_dir holds the model as the command lines write it, and no checkpoint (it held a key)
    saved = json.loads((tmp_path / "m" / "model.json").read_text())
    assert saved["model_id"] == out["model_id"]
    assert not (tmp_path / "m" / "checkpoint.json").exists()
    assert out["ids"] == clients_table(room).column("uscc").to_pylist()[:40]


def test_progress_bars_show_in_a_terminal_or_a_notebook(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert not progress.visible()
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    assert progress.visible()
