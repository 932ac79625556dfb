"""The audit log: every PSI session, training job, scoring request and refusal is a record
before the answer leaves, and any change, removal or reordering is detected."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import grpc
import pytest

from bank_node.client import BureauConnection
from bank_node.jobs import psi_job
from bank_node.training import predict_job, train_job
from bureau_node.audit import AuditLog
from bureau_node.server import BureauNode
from node_runtime.transport import model_codec as codec
from protocols import paillier as he
from protocols import vertical_lr as vlr
from protocols.optim import OptimizerConfig
from xinrong.synthetic import generate_city, write_city
from xinrong.v1 import model_pb2 as pb


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    city = write_city(generate_city(3000, 900, seed=4), root / "city")
    with BureauNode(
        city["bureau"],
        "uscc",
        root / "state",
        workers=0,
        training_limits=vlr.TrainingLimits(allow_test_keys=True),
    ) as node:
        node.start("127.0.0.1:0")
        address = f"127.0.0.1:{node.port}"
        psi_job(address, city["bank"], "uscc", root / "m.csv", "bank-a", workers=0)
        train_job(
            address,
            city["bank"],
            "uscc",
            "y",
            root / "model",
            "bank-a",
            epochs=1,
            key_bits=768,
            allow_test_keys=True,
            workers=0,
            quiet=True,
        )
        predict_job(
            address,
            root / "model",
            city["bank"],
            "uscc",
            root / "s.csv",
            "bank-a",
            workers=0,
            quiet=True,
        )
        # a plan the bureau refuses (a batch below its floor); the bank's own checks would
        # catch it first, so it is sent as a bare call
        matched = psi_job(address, city["bank"], "uscc", root / "m3.csv", "bank-a", workers=0)
        public_key, private_key = he.generate_keypair(768, allow_test_keys=True)
        plan = vlr.TrainingPlan(
            job_id="ab" * 16,
            psi_session_id=matched.session_id,
            rows=matched.intersection,
            bank_columns=3,
            validation_fraction=0.2,
            seed=1,
            batch_size=10,
            max_epochs=1,
            optimizer=OptimizerConfig(),
            bureau_features=(),
            bank_public_key=public_key,
            bank_key_proof=he.prove_key(private_key),
        )
        with BureauConnection(address, "bank-a") as connection:
            with pytest.raises(grpc.RpcError):
                connection.training.StartTraining(
                    codec.plan_to_proto(plan), timeout=60, metadata=connection.metadata
                )
            # a step of a job this bank does not have (another bank's id, a guess)
            step = pb.EncryptedResiduals(step=pb.Step(job_id="cd" * 16, epoch=0, batch=0))
            with pytest.raises(grpc.RpcError):
                list(connection.training.TrainingStep(step, metadata=connection.metadata))
    return root / "state", city


def test_what_happened_is_on_record_without_ids(served):
    state, city = served
    records = AuditLog(state).records()
    events = [(r["event"], r["outcome"]) for r in records]
    for expected in [
        ("psi", "OK"),
        ("training_started", "OK"),
        ("training_finished", "OK"),
        ("scoring", "OK"),
        ("training_started", "FAILED_PRECONDITION"),
        ("training_step", "NOT_FOUND"),
    ]:
        assert expected in events
    assert all(r["bank_id"] == "bank-a" for r in records)
    (refused,) = [r for r in records if r["outcome"] == "FAILED_PRECONDITION"]
    (probe,) = [r for r in records if r["event"] == "training_step"]
    assert "cd" * 16 in probe["details"]  # the job id it asked for
    assert json.loads(refused["details"])["peer"].startswith("ipv4:127.0.0.1:")  # who asked
    text = json.dumps(records)
    import pyarrow.csv as pacsv

    some_ids = pacsv.read_csv(city["bank"]).column("uscc").to_pylist()[:50]
    assert not any(code in text for code in some_ids)  # sizes and counts, never IDs
    count, problems = AuditLog(state).verify()
    assert count == len(records) and problems == []


def _copy(state, tmp_path):
    import shutil

    copy = tmp_path / "state"
    shutil.copytree(state, copy)
    return copy


def test_a_changed_record_is_detected(served, tmp_path):
    state = _copy(served[0], tmp_path)
    with sqlite3.connect(state / "audit.sqlite3") as db:
        db.execute("UPDATE records SET outcome = 'OK' WHERE outcome = 'FAILED_PRECONDITION'")
    _, problems = AuditLog(state).verify()
    assert problems and "was changed" in problems[0].what


def test_a_removed_record_is_detected(served, tmp_path):
    state = _copy(served[0], tmp_path)
    with sqlite3.connect(state / "audit.sqlite3") as db:
        db.execute("DELETE FROM records WHERE seq = 2")
    _, problems = AuditLog(state).verify()
    assert any("record 2 removed" in p.what for p in problems)


def test_reordered_records_and_the_command_line(served, tmp_path):
    state = _copy(served[0], tmp_path)
    with sqlite3.connect(state / "audit.sqlite3") as db:
        # swap records 2 and 3 (each keeps its content, they change places)
        db.execute("UPDATE records SET seq = -1 WHERE seq = 2")
        db.execute("UPDATE records SET seq = 2 WHERE seq = 3")
        db.execute("UPDATE records SET seq = 3 WHERE seq = -1")

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "bureau_node.cli", "audit", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    broken = run("verify", "--state-dir", str(state))
    assert broken.returncode == 1 and "BROKEN" in broken.stderr
    intact = run("verify", "--state-dir", str(served[0]))
    assert intact.returncode == 0 and json.loads(intact.stdout)["intact"]
    out = tmp_path / "audit.csv"
    exported = run(
        "export",
        "--state-dir",
        str(served[0]),
        "--since",
        "2000-01-01",
        "--format",
        "csv",
        "--out",
        str(out),
    )
    assert exported.returncode == 0
    assert out.read_text().splitlines()[0].startswith("seq,time,bank_id,event,outcome")
