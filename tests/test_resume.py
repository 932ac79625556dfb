"""Interrupted between two epochs, with the bureau restarted on its state directory,
`train --resume` ends with the same model, up to the fixed point (1e-3), as an
uninterrupted run with the same seed. Killed in the middle of an epoch (SIGKILL, real
processes), after the bureau decrypted steps of it, the job cannot be resumed: a re-run of
those steps would need a second decryption of each, so the bureau refuses and both sides
delete their checkpoints (which hold the job's keys)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bank_node.training import load_model, train_job
from bureau_node.models import ModelStore
from bureau_node.server import BureauNode
from protocols import vertical_lr as vlr
from xinrong.synthetic import generate_city, write_city

SETTINGS = [
    "--epochs",
    "4",
    "--patience",
    "99",
    "--seed",
    "3",
    "--key-bits",
    "768",
    "--allow-test-keys",
    "--insecure",
    "--bank-id",
    "bank-r",
    "--workers",
    "0",
]


def _serve(city, state: Path, listen: str = "127.0.0.1:0") -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bureau_node.cli",
            "serve",
            "--data",
            str(city["bureau"]),
            "--id-column",
            "uscc",
            "--state-dir",
            str(state),
            "--listen",
            listen,
            "--insecure",
            "--allow-test-keys",
            "--workers",
            "0",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, f"127.0.0.1:{json.loads(process.stdout.readline())['port']}"


def _train(address: str, city, model: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bank_node.cli",
            "train",
            "--bureau",
            address,
            *extra,
            *SETTINGS,
            "--model-dir",
            str(model),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as a terminal has it: a suite run in the background of a shell inherits
        # SIGINT ignored, and the bank rightly leaves an ignored SIGINT alone
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_epoch(model: Path, epoch: int, process: subprocess.Popen) -> str:
    deadline = time.monotonic() + 300
    path = model / "checkpoint.json"
    while time.monotonic() < deadline:
        if path.exists():
            state = json.loads(path.read_text())
            if state["epoch"] >= epoch:
                return state["job_id"]
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint in time")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    city = write_city(generate_city(4000, 1500, seed=21), root / "city")
    with BureauNode(
        city["bureau"],
        "uscc",
        root / "ref-state",
        workers=0,
        training_limits=vlr.TrainingLimits(allow_test_keys=True),
    ) as node:
        node.start("127.0.0.1:0")
        summary = train_job(
            f"127.0.0.1:{node.port}",
            city["bank"],
            "uscc",
            "y",
            root / "ref",
            "bank-r",
            epochs=4,
            patience=99,
            seed=3,
            key_bits=768,
            allow_test_keys=True,
            workers=0,
            quiet=True,
        )
    bureau_half = ModelStore(root / "ref-state").root / "bank-r" / f"{summary['model_id']}.json"
    return root, city, load_model(root / "ref"), json.loads(bureau_half.read_text())


def _same_model(model_dir: Path, state: Path, reference) -> None:
    _, _, bank_ref, bureau_ref = reference
    bank = load_model(model_dir)
    bureau = json.loads(
        (ModelStore(state).root / "bank-r" / f"{bank['model_id']}.json").read_text()
    )
    # equal up to the fixed point: each run splits the bureau's weights with fresh masks,
    # and each side rounds its own share to 2^-12 before the bureau's scores are formed
    np.testing.assert_allclose(bank["weights"], bank_ref["weights"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(bureau["weights"], bureau_ref["weights"], rtol=0, atol=1e-3)
    assert len(bank["history"]) == 4 and not (model_dir / "checkpoint.json").exists()


class Interrupted(Exception):
    pass


def test_the_bureau_restarted_between_epochs(reference):
    root, city, _, _ = reference
    state, model = root / "state-1", root / "model-1"
    # the reference's bureau key, so that PSI orders the rows (by tag) the same way
    shutil.copytree(root / "ref-state", state)
    limits = vlr.TrainingLimits(allow_test_keys=True)
    node = BureauNode(city["bureau"], "uscc", state, workers=0, training_limits=limits)
    node.start("127.0.0.1:0")

    def crash(record: vlr.EpochRecord) -> None:
        if record.epoch == 1:
            node.stop(grace=None)  # the bureau goes away with the job in memory
            raise Interrupted

    try:
        with pytest.raises(Interrupted):
            train_job(
                f"127.0.0.1:{node.port}",
                city["bank"],
                "uscc",
                "y",
                model,
                "bank-r",
                epochs=4,
                patience=99,
                seed=3,
                key_bits=768,
                allow_test_keys=True,
                workers=0,
                quiet=True,
                on_epoch=crash,
            )
    finally:
        node.stop(grace=None)
    job = json.loads((model / "checkpoint.json").read_text())["job_id"]
    with BureauNode(city["bureau"], "uscc", state, workers=0, training_limits=limits) as again:
        again.start("127.0.0.1:0")
        summary = train_job(
            f"127.0.0.1:{again.port}",
            "",
            "",
            "",
            model,
            "bank-r",
            allow_test_keys=True,
            workers=0,
            quiet=True,
            resume=job,
        )
    assert summary["epochs"] == 4
    _same_model(model, state, reference)


def test_scores_refused_after_the_bureau_finished_the_job(reference, monkeypatch):
    """The bureau finished the job (and ended it), then the bank's request for its scores
    failed (a quota, the network): the bank kept the finish in its checkpoint, and a
    resume fetches the scores and saves the same model, without training again."""
    import bank_node.training as training
    from protocols.errors import PeerError

    root, city, _, _ = reference
    state, model = root / "state-2", root / "model-2"
    shutil.copytree(root / "ref-state", state)
    limits = vlr.TrainingLimits(allow_test_keys=True)
    fetch = training.fetch_bureau_scores

    def refused(*args, **kwargs):
        raise PeerError("RESOURCE_EXHAUSTED: bank-r's daily_scored quota is used up")

    settings = dict(patience=99, seed=3, key_bits=768, allow_test_keys=True, workers=0)
    with BureauNode(city["bureau"], "uscc", state, workers=0, training_limits=limits) as node:
        node.start("127.0.0.1:0")
        address = f"127.0.0.1:{node.port}"
        monkeypatch.setattr(training, "fetch_bureau_scores", refused)
        with pytest.raises(PeerError, match="daily_scored"):
            train_job(address, city["bank"], "uscc", "y", model, "bank-r", epochs=4,
                      quiet=True, **settings)  # fmt: skip
        saved = json.loads((model / "checkpoint.json").read_text())
        assert saved["finished"]["model_id"] and not (model / "model.json").exists()
        monkeypatch.setattr(training, "fetch_bureau_scores", fetch)
        summary = train_job(address, "", "", "", model, "bank-r", allow_test_keys=True,
                            workers=0, quiet=True, resume=saved["job_id"])  # fmt: skip
    assert summary["model_id"] == saved["finished"]["model_id"] and summary["epochs"] == 4
    _same_model(model, state, reference)


def test_a_resume_refuses_a_data_file_that_changed(reference, tmp_path):
    """The checkpoint keeps the data file's SHA-256: a resume that would read other rows
    (the file replaced, re-exported, edited) is refused before anything is sent."""
    from protocols.errors import InputDataError

    root, city, _, _ = reference
    data = tmp_path / "clients.csv"
    shutil.copy(city["bank"], data)
    limits = vlr.TrainingLimits(allow_test_keys=True)

    def stop(record: vlr.EpochRecord) -> None:
        raise Interrupted

    settings = dict(patience=99, seed=3, key_bits=768, allow_test_keys=True, workers=0)
    with BureauNode(
        city["bureau"], "uscc", tmp_path / "state", workers=0, training_limits=limits
    ) as node:
        node.start("127.0.0.1:0")
        address = f"127.0.0.1:{node.port}"
        with pytest.raises(Interrupted):
            train_job(address, data, "uscc", "y", tmp_path / "m", "bank-r", epochs=2,
                      quiet=True, on_epoch=stop, **settings)  # fmt: skip
        job = json.loads((tmp_path / "m" / "checkpoint.json").read_text())["job_id"]
        data.write_text(data.read_text().replace(",1\n", ",0\n", 5))  # five labels changed
        with pytest.raises(InputDataError, match="has changed since job"):
            train_job(address, "", "", "", tmp_path / "m", "bank-r", allow_test_keys=True,
                      workers=0, quiet=True, resume=job)  # fmt: skip
        # and a new job into the same directory does not overwrite the interrupted one's
        with pytest.raises(InputDataError, match=f"--resume {job}"):
            train_job(address, data, "uscc", "y", tmp_path / "m", "bank-r", epochs=1,
                      quiet=True, **settings)  # fmt: skip
        assert json.loads((tmp_path / "m" / "checkpoint.json").read_text())["job_id"] == job


def _wait_for_a_decryption_in(state: Path, job: str, epoch: int, process) -> None:
    """Until the bureau's ledger shows a step of ``epoch`` decrypted."""
    path = state / "jobs" / "bank-r" / f"{job}.ledger.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            decrypted = json.loads(path.read_text())["decrypted"]
        except (OSError, ValueError, KeyError):
            decrypted = {}
        if any(int(step.split(":")[0]) >= epoch for step in decrypted):
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError("no decryption in time")


def _refused_and_forgotten(address: str, city, model: Path, state: Path, job: str) -> None:
    resumed = _train(address, city, model, "--resume", job)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode != 0 and "cannot be resumed" in err, err
    assert not (model / "checkpoint.json").exists()
    assert not (state / "jobs" / "bank-r" / f"{job}.json").exists()


def test_the_bureau_killed_mid_epoch(reference):
    root, city, _, _ = reference
    state, model = root / "state-3", root / "model-3"
    bureau, address = _serve(city, state)
    bank = _train(
        address, city, model, "--data", str(city["bank"]), "--id-column", "uscc", "--label", "y"
    )
    job = _wait_for_epoch(model, 1, bank)
    _wait_for_a_decryption_in(state, job, 1, bank)
    os.kill(bureau.pid, signal.SIGKILL)
    bureau.wait(30)
    try:
        _, err = bank.communicate(timeout=120)  # retries, then a clear error: not a hang
    except subprocess.TimeoutExpired:
        os.kill(bank.pid, signal.SIGABRT)  # stop it; its stderr goes into the failure
        raise AssertionError(f"the bank did not stop: {bank.communicate()[1][-6000:]}") from None
    assert bank.returncode == 2 and "bureau" in err
    bureau, address = _serve(city, state)
    try:
        _refused_and_forgotten(address, city, model, state, job)
    finally:
        bureau.terminate()
        bureau.wait(30)


def test_the_bank_killed_mid_epoch(reference):
    root, city, _, _ = reference
    state, model = root / "state-2", root / "model-3"
    bureau, address = _serve(city, state)
    try:
        bank = _train(
            address, city, model, "--data", str(city["bank"]), "--id-column", "uscc", "--label", "y"
        )
        job = _wait_for_epoch(model, 1, bank)
        _wait_for_a_decryption_in(state, job, 1, bank)
        os.kill(bank.pid, signal.SIGKILL)
        bank.wait(30)
        _refused_and_forgotten(address, city, model, state, job)
    finally:
        bureau.terminate()
        bureau.wait(30)


def test_a_first_ctrl_c_finishes_the_epoch_and_the_job_resumes(reference):
    """A review's Ctrl-C one second after an epoch line lost the whole job (the bureau
    answers each step once, so a run stopped inside an epoch cannot be resumed). The first
    Ctrl-C finishes the epoch under way and stops at its checkpoint; the resume the bank
    prints then ends with the uninterrupted run's model."""
    root, city, _, _ = reference
    state, model = root / "state-int", root / "model-int"
    shutil.copytree(root / "ref-state", state)  # the reference's keys: the same row order
    bureau, address = _serve(city, state)
    try:
        bank = _train(
            address, city, model, "--data", str(city["bank"]), "--id-column", "uscc", "--label", "y"
        )
        job = _wait_for_epoch(model, 1, bank)
        _wait_for_a_decryption_in(state, job, 1, bank)  # inside the second epoch
        os.kill(bank.pid, signal.SIGINT)
        out, err = bank.communicate(timeout=300)
        assert bank.returncode == 130, err
        assert "finishing this epoch" in err and "stopped after epoch 2, as asked" in err
        assert f"--resume {job}" in err
        assert json.loads((model / "checkpoint.json").read_text())["epoch"] == 2
    except BaseException:
        bureau.terminate()
        raise
    _resumed_as_the_reference(bureau, address, city, model, state, job, reference)


def _resumed_as_the_reference(bureau, address, city, model, state, job, reference) -> None:
    """``--resume job`` on ``bureau`` ends with the uninterrupted run's model."""
    try:
        resumed = _train(address, city, model, "--resume", job)
        out, err = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, err
    finally:
        bureau.terminate()
        bureau.wait(30)
    _same_model(model, state, reference)


def test_a_bureau_stopped_by_its_operator_lets_the_epoch_finish_and_the_job_resumes(reference):
    """An operator restarting the bureau (SIGTERM) during an epoch lost every bank's running
    job: the bureau answers each step once, so a job stopped inside an epoch cannot be
    resumed. The bureau now lets the epoch under way finish, refuses the next one's first
    step before doing any of it, and stops; the bank stops with its job resumable, and the
    resume on the restarted bureau ends with the uninterrupted run's model."""
    root, city, _, _ = reference
    state, model = root / "state-stop", root / "model-stop"
    shutil.copytree(root / "ref-state", state)  # the reference's keys: the same row order
    bureau, address = _serve(city, state)
    try:
        bank = _train(address, city, model, "--data", str(city["bank"]), "--id-column", "uscc",
                      "--label", "y", "--wait-for-bureau", "0")  # fmt: skip
        job = _wait_for_epoch(model, 1, bank)
        _wait_for_a_decryption_in(state, job, 1, bank)  # inside the second epoch
        bureau.send_signal(signal.SIGTERM)
        assert bureau.wait(120) == 0
        out, err = bank.communicate(timeout=120)
        assert bank.returncode == 2, err
        assert "the bureau is restarting" in err and "paused after epoch 2" in err, err
        assert f"--resume {job}" in err, err
        assert json.loads((model / "checkpoint.json").read_text())["epoch"] == 2
    finally:
        if bureau.poll() is None:
            bureau.kill()
        bureau.wait(30)
    _resumed_as_the_reference(*_serve(city, state), city, model, state, job, reference)


def test_a_bank_waits_for_a_restarted_bureau_and_resumes_on_its_own(reference):
    """By default the bank waits for a bureau its operator restarts (up to
    --wait-for-bureau) and resumes the paused job itself: the run ends as an uninterrupted
    one would, with no command typed."""
    root, city, _, _ = reference
    state, model = root / "state-wait", root / "model-wait"
    shutil.copytree(root / "ref-state", state)
    bureau, address = _serve(city, state)
    bank = _train(
        address, city, model, "--data", str(city["bank"]), "--id-column", "uscc", "--label", "y"
    )
    try:
        job = _wait_for_epoch(model, 1, bank)
        _wait_for_a_decryption_in(state, job, 1, bank)
        bureau.send_signal(signal.SIGTERM)
        assert bureau.wait(120) == 0
        bureau, _ = _serve(city, state, address)  # the same port, as a restart has it
        out, err = bank.communicate(timeout=300)
        assert bank.returncode == 0, err
        assert "waiting for the bureau to be back" in err, err
    finally:
        if bank.poll() is None:
            bank.kill()
        bureau.terminate()
        bureau.wait(30)
    _same_model(model, state, reference)


def test_a_stopping_bureau_waits_for_a_bank_slow_between_epochs():
    """A review's bank took 12 s between two epochs (its checkpoint, the next batch
    encrypted): the stopping bureau had given up on it after 10 s, counted from the start of
    its last call, and the bank found the bureau gone. Counted from the end of the call
    now, for 30 s; a job inside an epoch for 60 s since it was last heard from."""
    from types import SimpleNamespace

    from bureau_node.training_service import TrainingJobs, TrainingServicer

    servicer = TrainingServicer.__new__(TrainingServicer)
    servicer.jobs = TrainingJobs()
    now = time.monotonic()

    def job(at_start: bool, heard: float, paused: bool = False) -> SimpleNamespace:
        trainer = SimpleNamespace(at_epoch_start=at_start, stage=vlr.BureauStage.READY)
        return SimpleNamespace(trainer=trainer, last_used=now - heard, paused=paused)

    servicer.jobs._jobs = {
        "between-12s": job(True, 12),
        "between-40s": job(True, 40),
        "between-told": job(True, 1, paused=True),
        "inside-50s": job(False, 50),
        "inside-90s": job(False, 90),
    }
    assert sorted(servicer.pausing_jobs()) == ["between-12s", "inside-50s"]


def test_a_job_resumed_and_stopped_again_at_once_can_still_be_resumed(reference, monkeypatch):
    """A review's operator stopped the bureau again right after the bank had resumed its
    paused job: the bureau refused the resumed run's first step, nothing done, but the bank
    took the job for lost (it had resumed once) and deleted its checkpoint. The bureau's
    own stop is a new interruption: the job resumes and ends with the uninterrupted model."""
    from bank_node.training import held_job
    from bureau_node import training_service
    from protocols.errors import PeerError

    root, city, _, _ = reference
    state, model = root / "state-twice", root / "model-twice"
    shutil.copytree(root / "ref-state", state)
    limits = vlr.TrainingLimits(allow_test_keys=True)
    settings = {"patience": 99, "seed": 3, "key_bits": 768, "allow_test_keys": True,
                "workers": 0, "quiet": True}  # fmt: skip

    def serve() -> BureauNode:
        node = BureauNode(city["bureau"], "uscc", state, workers=0, training_limits=limits)
        node.start("127.0.0.1:0")
        return node

    node = serve()

    def stop_after_the_first(record: vlr.EpochRecord) -> None:
        if record.epoch == 0:
            node.training.stopping.set()  # the operator's stop, during the bank's epoch 1

    with pytest.raises(PeerError) as first:
        train_job(f"127.0.0.1:{node.port}", city["bank"], "uscc", "y", model, "bank-r",
                  epochs=4, on_epoch=stop_after_the_first, **settings)  # fmt: skip
    node.stop(grace=None)
    assert first.value.nothing_done
    job = held_job(model)
    resume = training_service.TrainingServicer.ResumeTraining

    def resumed_then_stopped(self, request, context):  # type: ignore[no-untyped-def]
        answer = resume(self, request, context)
        self.stopping.set()  # stopped again before the resumed run's first step
        return answer

    monkeypatch.setattr(training_service.TrainingServicer, "ResumeTraining", resumed_then_stopped)
    node = serve()
    with pytest.raises(PeerError) as second:
        train_job(f"127.0.0.1:{node.port}", "", "", "", model, "bank-r", resume=job, **settings)
    node.stop(grace=None)
    assert second.value.nothing_done and held_job(model) == job
    monkeypatch.setattr(training_service.TrainingServicer, "ResumeTraining", resume)
    node = serve()
    try:
        train_job(f"127.0.0.1:{node.port}", "", "", "", model, "bank-r", resume=job, **settings)
    finally:
        node.stop(grace=None)
    _same_model(model, state, reference)
