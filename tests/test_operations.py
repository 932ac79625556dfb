"""What an operator sees: one clear line for each way a connection fails (and no raw gRPC
log lines), the training job's ID first and its resume command on failure, --log-file,
--insecure judged by the resolved address, exact Paillier key sizes."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import gmpy2
import pytest

from bureau_node.server import BureauNode
from node_runtime.cli_common import resolves_to_loopback
from node_runtime.transport import certs
from protocols import paillier as he
from protocols.errors import ProtocolViolation
from xinrong.synthetic import generate_city, write_city


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    root = tmp_path_factory.mktemp("ops")
    city = write_city(generate_city(1500, 400, seed=9), root / "city")
    certs.init_ca(root / "tls")
    certs.issue_bank(root / "tls", "bank-a")
    certs.init_ca(root / "other")
    certs.issue_bank(root / "other", "bank-a")
    mixed = root / "mixed"  # trusts the bureau, but holds a certificate of another CA
    mixed.mkdir()
    shutil.copy(root / "tls" / "ca.crt", mixed / "ca.crt")
    for name in ("bank.crt", "bank.key"):
        shutil.copy(root / "other" / "banks" / "bank-a" / name, mixed / name)
    with BureauNode(city["bureau"], "uscc", root / "state", workers=0, tls_dir=root / "tls") as b:
        b.start("127.0.0.1:0")
        yield root, city, b.port


def _bank(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bank_node", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


RAW_GRPC = re.compile(r"^[EIWD]\d{4} |Handshake failed|absl::InitializeLog", re.MULTILINE)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("down", "cannot connect to the bureau at"),
        ("other CA", "the bureau's certificate at .* is not from your CA"),
        ("refused", "the bureau at .* refused your certificate"),
        ("plaintext", "speaks TLS and this bank plaintext: use --tls-dir"),
    ],
)
def test_each_connection_failure_has_its_own_line_and_exit_status(setting, case, message):
    root, city, port = setting
    address = f"127.0.0.1:{_free_port() if case == 'down' else port}"
    transport = {
        "down": ["--insecure"],
        "other CA": ["--tls-dir", str(root / "other" / "banks" / "bank-a")],
        "refused": ["--tls-dir", str(root / "mixed")],
        "plaintext": ["--insecure"],
    }[case]
    started = time.monotonic()
    run = _bank(
        "psi",
        "--bureau",
        address,
        *transport,
        "--data",
        str(city["bank"]),
        "--id-column",
        "uscc",
        "--out",
        str(root / f"{case}.csv"),
        "--workers",
        "0",
    )
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(message, errors[0]), run.stderr
    assert not RAW_GRPC.search(run.stderr), run.stderr
    assert time.monotonic() - started < 30  # not after gRPC's retries (a minute or more)


def test_insecure_is_judged_by_the_resolved_address():
    assert resolves_to_loopback("localhost") and resolves_to_loopback("127.0.0.2")
    assert resolves_to_loopback("::1")
    assert not resolves_to_loopback("0.0.0.0")
    assert not resolves_to_loopback("10.1.2.3")
    assert not resolves_to_loopback("no-such-host.invalid")


def test_key_sizes_are_exact():
    def modulus(bits_each: int, lead: int) -> int:
        p = int(gmpy2.next_prime(lead << (bits_each - 2)))
        q = int(gmpy2.next_prime((lead << (bits_each - 2)) + 10**6))
        return p * q

    short = modulus(1021, 2)  # two 1,021-bit primes: a 2,041-bit modulus
    assert short.bit_length() == 2041
    with pytest.raises(ProtocolViolation, match="2041 bits is not allowed"):
        he.public_key_from_n(short, False, ())
    full = modulus(1024, 3)
    assert full.bit_length() == 2048
    p = int(gmpy2.next_prime(3 << (1024 - 2)))
    key = he.PrivateKey(he.PublicKey(full), p, full // p)
    assert he.public_key_from_n(full, False, he.prove_key(key)).n == full


def _bureau(city, state, *extra: str) -> tuple[subprocess.Popen, int]:
    bureau = subprocess.Popen(
        [sys.executable, "-m", "bureau_node", "serve", "--data", str(city["bureau"])]
        + ["--id-column", "uscc", "--state-dir", str(state), "--listen", "127.0.0.1:0"]
        + ["--insecure", "--workers", "0", "--quiet", "--allow-test-keys", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert bureau.stdout is not None
    return bureau, json.loads(bureau.stdout.readline())["port"]


def _train(port: int, city, model, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bank_node",
        "train",
        "--bureau",
        f"127.0.0.1:{port}",
        "--insecure",
        "--data",
        str(city["bank"]),
        "--id-column",
        "uscc",
        "--label",
        "y",
        "--model-dir",
        str(model),
        "--key-bits",
        "768",
        "--allow-test-keys",
        "--workers",
        "0",
        *extra,
    ]


def test_the_job_id_comes_first_and_every_failure_says_how_to_resume(setting, tmp_path):
    _, city, _ = setting
    bureau, port = _bureau(city, tmp_path / "state", "--min-batch-size", "16")
    try:
        early = subprocess.run(
            # a plan the bureau refuses: the job started (the bank's data passed its checks;
            # a run refused before that starts no job and prints only its error)
            _train(port, city, tmp_path / "m1", "--batch-size", "8"),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        lines = early.stderr.splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith("training job "))
        # only the bank's own data-check warnings come before it: nothing was sent yet
        assert all(line.startswith("warning: ") for line in lines[:at]), early.stderr
        job = re.fullmatch(r"training job ([0-9a-f]{32})", lines[at])
        assert job, early.stderr
        assert early.returncode == 2
        assert f"error: training job {job[1]}: " in early.stderr
        assert "it cannot be resumed (no epoch had finished" in early.stderr
        assert "run the command again for a new job" in early.stderr

        model = tmp_path / "m2"
        log_file = tmp_path / "bank.log"
        late = subprocess.Popen(
            _train(port, city, model, "--epochs", "200", "--log-file", str(log_file)),
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        deadline = time.monotonic() + 240
        while not (model / "checkpoint.json").exists():
            assert late.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        bureau.send_signal(signal.SIGKILL)
        bureau.wait(30)
        _, err = late.communicate(timeout=120)
        job_id = json.loads((model / "checkpoint.json").read_text())["job_id"]
        started = [line for line in err.splitlines() if not line.startswith("warning: ")]
        assert started[0] == f"training job {job_id}"
        assert late.returncode == 2
        command = (
            f"resume it with: bank-node train --bureau 127.0.0.1:{port} --model-dir {model} "
            f"--resume {job_id} --insecure --allow-test-keys"
        )
        assert command in err, err
        assert "epoch 1: bank operations" in log_file.read_text()  # --log-file, with --quiet off
    finally:
        if bureau.poll() is None:
            bureau.kill()
            bureau.wait(30)


def test_the_bureau_counts_enterprises_once_and_names_repeated_ids(tmp_path, caplog):
    """A review: `bureau-node features` reported 5,005 enterprises for 5,000 distinct IDs,
    without a word about the repeats."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bureau_node.features import BureauFeatures
    from protocols.ids import IdType

    path = tmp_path / "bureau.parquet"
    ids = [f"E{i:04d}" for i in range(50)] + ["E0001", "E0002"]
    pq.write_table(pa.table({"id": ids, "x": list(range(52))}), path)
    with caplog.at_level("WARNING"):
        features = BureauFeatures(path, "id", IdType.TEXT)
    assert features.enterprises == 50
    assert "2 rows repeat an earlier row's enterprise ID" in caplog.text


def test_the_first_serve_keeps_what_prepare_made(tmp_path):
    """A review: `bureau-node prepare` made a bank's keys, tags and lookup points without a
    record of the serving policy, and the first `serve` read that as a change and rotated
    them all away."""
    from bureau_node.server import BureauNode
    from protocols import vertical_lr as vlr
    from xinrong.synthetic import generate_city, write_city

    city = write_city(generate_city(1500, 300, seed=3, graph=False), tmp_path / "city")
    state = tmp_path / "state"
    node = BureauNode(city["bureau"], "uscc", state, workers=0)
    node.prepare()
    for _ in node.store.prepare_bank("bank-a", node.executor):
        pass
    node.store.lookup_points("bank-a", node.executor)
    node.stop()
    prepared = sorted(p.name for p in (state / "banks" / "bank-a").iterdir())
    limits = vlr.TrainingLimits(allow_test_keys=True)
    for _ in range(2):
        with BureauNode(city["bureau"], "uscc", state, workers=0, training_limits=limits) as node:
            node.start("127.0.0.1:0")
            assert node.store.key_epoch("bank-a") == 1
    kept = sorted(p.name for p in (state / "banks" / "bank-a").iterdir())
    assert set(prepared) <= set(kept)
