"""Mutual TLS: the bureau's private CA, certificates with private keys kept 0600, the bank's
identity taken from its certificate, and refusal of clients without one from this CA."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from bank_node.jobs import psi_job
from bureau_node.server import BureauNode
from node_runtime.transport import certs
from node_runtime.transport.channels import PROTOCOL_METADATA, bank_metadata, open_channel
from protocols.errors import InputDataError, PeerError
from xinrong.synthetic import generate_city, write_city
from xinrong.v1 import model_pb2 as pb
from xinrong.v1 import model_pb2_grpc


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tls")
    certs.init_ca(d)
    certs.issue_bank(d, "bank-a")
    certs.issue_bank(d, "bank-b")
    return d


@pytest.fixture(scope="module")
def node(pki, tmp_path_factory):
    city = write_city(generate_city(2000, 300, seed=3), tmp_path_factory.mktemp("city"))
    with BureauNode(
        city["bureau"], "uscc", tmp_path_factory.mktemp("state"), workers=0, tls_dir=pki
    ) as bureau:
        bureau.start("127.0.0.1:0")
        bureau.city = city  # type: ignore[attr-defined]
        yield bureau


def test_private_keys_are_written_0600(pki):
    for key in (pki / "ca.key", pki / "bureau.key", pki / "banks" / "bank-a" / "bank.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (pki / "banks" / "bank-a" / "ca.crt").read_bytes() == (pki / "ca.crt").read_bytes()
    with pytest.raises(InputDataError, match="already has a CA"):
        certs.init_ca(pki)
    with pytest.raises(InputDataError, match="bank id"):
        certs.issue_bank(pki, "../evil")


def test_psi_over_mutual_tls(node, pki, tmp_path):
    summary = psi_job(
        f"127.0.0.1:{node.port}",
        node.city["bank"],
        "uscc",
        tmp_path / "m.csv",
        "bank-a",
        workers=0,
        tls_dir=pki / "banks" / "bank-a",
    )
    assert summary.intersection > 200


def test_the_certificate_is_the_identity(node, pki):
    files = certs.bank_files(pki / "banks" / "bank-a")
    stub = model_pb2_grpc.CatalogueStub(open_channel(f"127.0.0.1:{node.port}", files))
    stub.ListFeatures(pb.ListFeaturesRequest(), metadata=bank_metadata("bank-a"), timeout=10)
    with pytest.raises(grpc.RpcError) as err:  # bank-a's certificate cannot speak for bank-b
        stub.ListFeatures(pb.ListFeaturesRequest(), metadata=bank_metadata("bank-b"), timeout=10)
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "certificate is bank 'bank-a'" in err.value.details()
    # named by its certificate alone, a caller still has to speak this protocol
    for metadata in ((), ((PROTOCOL_METADATA, "999"),)):
        with pytest.raises(grpc.RpcError) as err:
            stub.ListFeatures(pb.ListFeaturesRequest(), metadata=metadata, timeout=10)
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION


def test_clients_without_a_certificate_of_this_ca_are_refused(node, pki, tmp_path):
    plain = model_pb2_grpc.CatalogueStub(open_channel(f"127.0.0.1:{node.port}"))
    with pytest.raises(grpc.RpcError) as err:
        plain.ListFeatures(pb.ListFeaturesRequest(), metadata=bank_metadata("bank-a"), timeout=5)
    # refused at the handshake: unavailable (retried by the client until its deadline)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    other = tmp_path / "other"
    certs.init_ca(other)
    certs.issue_bank(other, "bank-a")
    with pytest.raises(PeerError, match="certificate .* is not from your CA"):
        psi_job(
            f"127.0.0.1:{node.port}",
            node.city["bank"],
            "uscc",
            tmp_path / "m.csv",
            "bank-a",
            workers=0,
            tls_dir=other / "banks" / "bank-a",
        )


def test_certs_command_lines(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bureau_node.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    made = run("certs", "init", "--tls-dir", str(tmp_path / "ca"), "--host", "10.0.0.5")
    assert made.returncode == 0, made.stderr
    issued = run("certs", "issue-bank", "bank-x", "--tls-dir", str(tmp_path / "ca"))
    assert issued.returncode == 0, issued.stderr
    assert Path(json.loads(issued.stdout.splitlines()[-1])["cert"]).exists()
    again = run("certs", "init", "--tls-dir", str(tmp_path / "ca"))
    assert again.returncode == 2 and "already has a CA" in again.stderr
    # a second issue silently replaced the bank's key and left the old certificate valid
    twice = run("certs", "issue-bank", "bank-x", "--tls-dir", str(tmp_path / "ca"))
    assert twice.returncode == 2 and "`certs renew bank-x`" in twice.stderr
    unknown = run("rotate-key", "--state-dir", str(tmp_path / "state"), "--bank-id", "bank-zz")
    assert unknown.returncode == 2 and "no key for bank 'bank-zz'" in unknown.stderr


def test_plaintext_needs_an_explicit_flag_and_loopback(tmp_path):
    city = write_city(generate_city(300, 30, seed=2), tmp_path / "city")

    def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", f"{module}.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    serve = [
        "serve",
        "--data",
        str(city["bureau"]),
        "--id-column",
        "uscc",
        "--state-dir",
        str(tmp_path / "s"),
    ]
    no_tls = run("bureau_node", *serve, "--listen", "127.0.0.1:0")
    assert no_tls.returncode == 2 and "--tls-dir" in no_tls.stderr
    wide = run("bureau_node", *serve, "--listen", "0.0.0.0:0", "--insecure")
    assert wide.returncode == 2 and "loopback only" in wide.stderr
    psi = [
        "psi",
        "--data",
        str(city["bank"]),
        "--id-column",
        "uscc",
        "--out",
        str(tmp_path / "m.csv"),
    ]
    bank = run("bank_node", *psi, "--bureau", "127.0.0.1:1")
    assert bank.returncode == 2 and "--tls-dir" in bank.stderr
    remote = run("bank_node", *psi, "--bureau", "bureau.example.org:50051", "--insecure")
    assert remote.returncode == 2 and "loopback only" in remote.stderr


def test_command_lines_over_mutual_tls_with_a_configuration(pki, tmp_path):
    city = write_city(generate_city(1500, 300, seed=8), tmp_path / "city")
    serve = [
        "serve",
        "--data",
        str(city["bureau"]),
        "--id-column",
        "uscc",
        "--state-dir",
        str(tmp_path / "s"),
        "--listen",
        "127.0.0.1:0",
        "--tls-dir",
        str(pki),
    ]
    unconfigured = subprocess.run(
        [sys.executable, "-m", "bureau_node.cli", *serve],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert unconfigured.returncode == 2 and "--config" in unconfigured.stderr
    config = tmp_path / "bureau.toml"
    config.write_text("[banks.bank-a]\n[banks.bank-b]\nmin_intersection = 100000\n")
    bureau = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bureau_node.cli",
            *serve,
            "--config",
            str(config),
            "--workers",
            "0",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert bureau.stdout is not None
        port = json.loads(bureau.stdout.readline())["port"]

        def psi(bank: str, *named: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bank_node.cli",
                    "psi",
                    "--bureau",
                    f"127.0.0.1:{port}",
                    "--tls-dir",
                    str(pki / "banks" / bank),
                    *named,
                    "--data",
                    str(city["bank"]),
                    "--id-column",
                    "uscc",
                    "--out",
                    str(tmp_path / f"{bank}.csv"),
                    "--workers",
                    "0",
                    "--json",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )

        ok = psi("bank-a", "--bank-id", "bank-a")
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout.splitlines()[-1])["intersection"] > 200
        # a name that is not the certificate's is refused before anything is sent
        other = psi("bank-a", "--bank-id", "bank-b")
        assert other.returncode == 2 and "is for bank 'bank-a', not 'bank-b'" in other.stderr
        # without --bank-id the name is the certificate's: bank-b, whose intersection is
        # below its configured minimum
        small = psi("bank-b")
        assert small.returncode == 2 and "FAILED_PRECONDITION" in small.stderr
    finally:
        bureau.terminate()
        bureau.wait(30)


def test_a_job_is_resumed_only_with_its_own_banks_certificate(pki, tmp_path):
    # the checkpoint names its bank; another bank's TLS directory is refused before any call
    from bank_node.training import CHECKPOINT_FILE, train_job

    job = "0" * 32
    saved = {
        "job_id": job,
        "bank_id": "bank-a",
        "data": "clients.csv",
        "id_column": "uscc",
        "label": "y",
        "id_type": "uscc",
        "bank_features": None,
        "bureau_features": None,
        "validation_fraction": 0.2,
        "seed": 1,
        "batch_size": 64,
        "epochs": 3,
        "patience": 2,
        "optimizer": {},
        "key_bits": 2048,
        "compare_bank_only": False,
        "bureau": "127.0.0.1:1",
    }
    (tmp_path / CHECKPOINT_FILE).write_text(json.dumps(saved))
    with pytest.raises(InputDataError, match="started by bank 'bank-a'.*is bank 'bank-b'"):
        train_job(
            "",
            "",
            "",
            "",
            tmp_path,
            "bank-b",
            tls_dir=pki / "banks" / "bank-b",
            resume=job,
        )
