"""A node killed with SIGKILL leaves no worker behind: its worker processes (which may
hold its Paillier key's factors) exit within 5 seconds, during PSI and during training."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xinrong.synthetic import generate_city, write_city

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _kill_and_check(victim: subprocess.Popen, workers_at_least: int) -> None:
    _wait_for(lambda: len(_descendants(victim.pid)) >= workers_at_least, 60, "the victim's workers")
    left = _descendants(victim.pid)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    started = time.monotonic()
    while any(_running(p) for p in left) and time.monotonic() - started < 5:
        time.sleep(0.05)
    survivors = [p for p in left if _running(p)]
    assert survivors == [], f"processes of the killed node still running after 5 s: {survivors}"


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return write_city(generate_city(12000, 6000, seed=11), tmp_path_factory.mktemp("city"))


def _bureau(city, state: Path) -> tuple[subprocess.Popen, int]:
    bureau = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bureau_node",
            "serve",
            "--data",
            str(city["bureau"]),
            "--id-column",
            "uscc",
            "--state-dir",
            str(state),
            "--listen",
            "127.0.0.1:0",
            "--insecure",
            "--allow-test-keys",
            "--min-batch-size",
            "16",
            "--workers",
            "2",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert bureau.stdout is not None
    return bureau, json.loads(bureau.stdout.readline())["port"]


def _bank(city, port: int, out: Path, job: str) -> subprocess.Popen:
    common = ["--bureau", f"127.0.0.1:{port}", "--insecure", "--data", str(city["bank"])]
    common += ["--id-column", "uscc", "--workers", "2", "--quiet"]
    if job == "psi":
        args = ["psi", *common, "--out", str(out / "m.csv")]
    else:
        args = ["train", *common, "--label", "y", "--model-dir", str(out / "model")]
        args += ["--epochs", "50", "--key-bits", "1024", "--allow-test-keys"]
        args += ["--batch-size", "128"]
    return subprocess.Popen(
        [sys.executable, "-m", "bank_node", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _training_started(state: Path) -> bool:
    try:
        with sqlite3.connect(state / "audit.sqlite3") as db:
            rows = db.execute("SELECT 1 FROM records WHERE event = 'training_started'")
            return rows.fetchone() is not None
    except sqlite3.Error:
        return False


@pytest.mark.parametrize("victim", ["bureau", "bank"])
@pytest.mark.parametrize("job", ["psi", "training"])
def test_sigkill_leaves_no_worker_behind(city, tmp_path, victim, job):
    bureau, port = _bureau(city, tmp_path / "state")
    bank = _bank(city, port, tmp_path, job)
    try:
        if job == "training":
            _wait_for(lambda: _training_started(tmp_path / "state"), 120, "training to start")
        else:
            _wait_for(lambda: len(_descendants(bank.pid)) >= 3, 60, "the bank's PSI workers")
        assert bank.poll() is None, "the job ended before the node could be killed"
        _kill_and_check(bureau if victim == "bureau" else bank, 3)  # fork server + 2 workers
    finally:
        for process in (bank, bureau):
            if process.poll() is None:
                process.kill()
                process.wait(30)


def test_workers_drop_cached_keys_when_a_job_ends():
    from node_runtime.parallel import make_executor
    from node_runtime.workers import WATCHDOG_SECONDS, forget_keys
    from protocols import paillier as he

    pool = make_executor(1)
    try:
        _, private = he.generate_keypair(768, allow_test_keys=True)
        he.OwnerEncryptor(private).encrypt_many(list(range(3 * he.CHUNK_ROWS)), pool)
        assert pool.submit(he.worker_key_count).result() == 1  # the worker kept the key
        forget_keys(pool)
        # the worker's watchdog looks every WATCHDOG_SECONDS; a loaded machine may delay it
        gone = lambda: pool.submit(he.worker_key_count).result() == 0  # noqa: E731
        _wait_for(gone, 50 * WATCHDOG_SECONDS, "the worker to drop the key")
    finally:
        pool.shutdown()


def test_workers_leave_ctrl_c_to_the_node():
    """A terminal's Ctrl-C goes to the whole process group: workers that died of it broke
    the training run the node was finishing its epoch for (a review, BrokenProcessPool).
    The node decides; its workers ignore the signal and go on working."""
    from node_runtime.parallel import make_executor
    from protocols import paillier as he

    pool = make_executor(1)
    try:
        pid = pool.submit(os.getpid).result()
        os.kill(pid, signal.SIGINT)
        _, private = he.generate_keypair(768, allow_test_keys=True)
        values = list(range(3 * he.CHUNK_ROWS))
        encrypted = he.OwnerEncryptor(private).encrypt_many(values, pool)
        assert [he.decrypt(private, c) for c in encrypted[:5]] == values[:5]
        assert pool.submit(os.getpid).result() == pid  # the same worker, alive
    finally:
        pool.shutdown()


def test_workers_and_their_fork_server_leave_a_stop_to_the_node():
    """systemd's stop sends SIGTERM to every process of the unit: the fork server (the
    workers' parent: they die with it) and the workers died at once, and the training
    epochs the bureau was finishing broke (a review, BrokenProcessPool). They go on until
    the node ends, or a grace period after the stop. (In a process of its own: the fork
    server is one per process, and this one must not end under the rest of the suite.)"""
    script = """
import os, signal, time
from node_runtime.parallel import make_executor
pool = make_executor(1)
pid = pool.submit(os.getpid).result()
with open(f"/proc/{pid}/stat") as handle:
    fork_server = int(handle.read().rsplit(")", 1)[1].split()[1])
for victim in (fork_server, pid):
    os.kill(victim, signal.SIGTERM)
time.sleep(0.5)
assert pool.submit(os.getpid).result() == pid, "the worker died"
os.kill(fork_server, 0)
pool.shutdown()
print("alive")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "alive", done.stderr
