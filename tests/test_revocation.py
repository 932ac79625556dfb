"""Certificates revoked or renewed at the bureau take effect on a running node: a revoked
bank is refused from its next call (on an open connection or a new one), on record with its
address and certificate; its renewed certificate is served; SIGHUP reloads the banks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest

from bureau_node.audit import AuditLog
from bureau_node.server import BureauNode
from node_runtime.transport import certs
from node_runtime.transport.channels import bank_metadata, open_channel
from xinrong.synthetic import generate_city, write_city
from xinrong.v1 import model_pb2 as pb
from xinrong.v1 import model_pb2_grpc


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bureau_node", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _list(port: int, tls_dir) -> model_pb2_grpc.CatalogueStub:
    channel = open_channel(f"127.0.0.1:{port}", certs.bank_files(tls_dir))
    return model_pb2_grpc.CatalogueStub(channel)


def test_a_revoked_certificate_is_refused_on_its_next_call_without_a_restart(tmp_path):
    pki = tmp_path / "tls"
    certs.init_ca(pki)
    certs.issue_bank(pki, "bank-c")
    city = write_city(generate_city(800, 100, seed=5), tmp_path / "city")
    state = tmp_path / "state"
    with BureauNode(city["bureau"], "uscc", state, workers=0, tls_dir=pki) as node:
        node.start("127.0.0.1:0")
        stub = _list(node.port, pki / "banks" / "bank-c")
        request, metadata = pb.ListFeaturesRequest(), bank_metadata("bank-c")
        stub.ListFeatures(request, metadata=metadata, timeout=10)

        revoked = _cli("certs", "revoke", "bank-c", "--tls-dir", str(pki))
        assert revoked.returncode == 0, revoked.stderr
        serial = json.loads(revoked.stdout)["revoked"][0]
        for attempt in (stub, _list(node.port, pki / "banks" / "bank-c")):  # open, then new
            with pytest.raises(grpc.RpcError) as err:
                attempt.ListFeatures(request, metadata=metadata, timeout=10)
            assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert "the bureau refused your certificate" in err.value.details()
            assert f"serial {serial}" in err.value.details() and "revoked" in err.value.details()

        bank = subprocess.run(
            [sys.executable, "-m", "bank_node", "psi", "--bureau", f"127.0.0.1:{node.port}"]
            + ["--tls-dir", str(pki / "banks" / "bank-c"), "--data", str(city["bank"])]
            + ["--id-column", "uscc", "--out", str(tmp_path / "m.csv"), "--workers", "0"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        errors = [line for line in bank.stderr.splitlines() if line.startswith("error:")]
        assert bank.returncode == 2 and len(errors) == 1, bank.stderr
        assert "UNAUTHENTICATED: the bureau refused your certificate" in errors[0]

        refused = [r for r in AuditLog(state).records() if r["event"] == "call_refused"]
        assert len(refused) == 3
        details = json.loads(refused[0]["details"])
        assert refused[0]["bank_id"] == "bank-c" and refused[0]["outcome"] == "UNAUTHENTICATED"
        assert details["peer"].startswith("ipv4:127.0.0.1:")
        assert "CN=bank-c" in details["subject"] and details["serial"] == serial

        renewed = _cli("certs", "renew", "bank-c", "--tls-dir", str(pki))
        assert renewed.returncode == 0, renewed.stderr
        made = json.loads(renewed.stdout)
        assert made["serial"] != serial
        # a revoked one is not named as still to revoke (a review's renew after a revoke was)
        assert made["previous_serials"] == [] and "all revoked already" in renewed.stderr
        _list(node.port, pki / "banks" / "bank-c").ListFeatures(
            request, metadata=metadata, timeout=10
        )
    assert _cli("certs", "revoke", "nobody", "--tls-dir", str(pki)).returncode == 2


def test_a_forged_revocation_list_is_not_believed(tmp_path):
    pki, other = tmp_path / "tls", tmp_path / "other"
    certs.init_ca(pki)
    certs.init_ca(other)
    certs.issue_bank(other, "bank-c")
    certs.revoke(other, "bank-c")
    (pki / certs.CRL_FILE).write_bytes((other / certs.CRL_FILE).read_bytes())
    with pytest.raises(Exception, match="signature is bad"):
        certs.RevocationList(pki).revoked(1)


def test_sighup_reloads_the_configuration_and_says_what_changed(tmp_path):
    pki = tmp_path / "tls"
    certs.init_ca(pki)
    for bank in ("bank-a", "bank-b"):
        certs.issue_bank(pki, bank)
    city = write_city(generate_city(800, 100, seed=6), tmp_path / "city")
    config = tmp_path / "bureau.toml"
    config.write_text("[banks.bank-a]\n[banks.bank-b]\n")
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
            str(tmp_path / "s"),
            "--listen",
            "127.0.0.1:0",
            "--tls-dir",
            str(pki),
            "--config",
            str(config),
            "--workers",
            "0",
            "--quiet",
            "--log-level",
            "INFO",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert bureau.stdout is not None and bureau.stderr is not None
        port = json.loads(bureau.stdout.readline())["port"]
        request = pb.ListFeaturesRequest()
        b = _list(port, pki / "banks" / "bank-b")
        b.ListFeatures(request, metadata=bank_metadata("bank-b"), timeout=10)
        config.write_text("[banks.bank-a]\ndaily_scored = 5\n")
        os.kill(bureau.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while True:
            try:
                b.ListFeatures(request, metadata=bank_metadata("bank-b"), timeout=10)
            except grpc.RpcError as err:
                assert err.code() is grpc.StatusCode.PERMISSION_DENIED
                break
            assert time.monotonic() < deadline, "bank-b still served after SIGHUP"
            time.sleep(0.2)
        for bad in (  # a bad file keeps the old: a wrong key, a comment saved as GBK
            b"[banks.bank-a]\nno_such_key = 1\n",
            "# 新增银行\n[banks.bank-a]\n".encode("gbk"),
        ):
            config.write_bytes(bad)
            os.kill(bureau.pid, signal.SIGHUP)
            time.sleep(1)
            _list(port, pki / "banks" / "bank-a").ListFeatures(
                request, metadata=bank_metadata("bank-a"), timeout=10
            )
    finally:
        bureau.terminate()
        _, err = bureau.communicate(timeout=30)
    assert "configuration reloaded (removed: bank-b; changed: bank-a)" in err
    assert "configuration NOT reloaded" in err
    assert "line 1 is not UTF-8 (a comment saved as GBK?)" in err
