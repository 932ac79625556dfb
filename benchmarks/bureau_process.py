"""A bureau node for the benchmarks, as deployed: its own process, mutual TLS on loopback.

Shared by psi.py, he.py and accuracy.py, so that every figure includes the TLS the nodes
really use (a private CA and one bank certificate, made with `node_runtime.transport.certs`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from node_runtime.transport import certs

BANK_ID = "bench-bank"


@dataclass
class BureauProcess:
    process: subprocess.Popen
    address: str
    bank_tls: Path  # the bank's certificate directory, for --tls-dir / tls_dir=

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def bank_certificate(tls_root: Path) -> Path:
    if not (tls_root / "ca.key").exists():
        certs.init_ca(tls_root)
    return Path(certs.issue_bank(tls_root, BANK_ID)["dir"])


def start_bureau(
    data: Path, id_column: str, state: Path, tls_root: Path, *extra: str
) -> BureauProcess:
    """``bureau-node serve`` on a free loopback port; ``extra`` are further serve flags."""
    bank_tls = bank_certificate(tls_root)
    # the one bank, with quotas no benchmark reaches (the per-request rho stays the default)
    config = tls_root / "bureau.toml"
    config.write_text(
        f"[banks.{BANK_ID}]\ndaily_psi_ids = 100_000_000\ndaily_scored = 100_000_000\n"
        "daily_iv_requests = 100_000\niv_rho_per_day = 1000\n"
        "daily_lookup_ids = 100_000_000\nmax_lookup_streams = 8\n"
    )
    command = [
        sys.executable,
        "-m",
        "bureau_node.cli",
        "serve",
        "--data",
        str(data),
        "--id-column",
        id_column,
        "--state-dir",
        str(state),
        "--listen",
        "127.0.0.1:0",
        "--tls-dir",
        str(tls_root),
        "--config",
        str(config),
        "--quiet",
        # the public sets' bureau columns are all discrete (default_credit: limit, sex,
        # education, marriage, age, repayment codes), so on 41% of its rows a model's score
        # is one of them in groups that share the rest, and the bureau's default policy
        # refuses it (SECURITY.md, "Model policy"), and its score reads x5 (the repayment
        # code that carries 90% of it) for 98% of the rows beyond guessing, over the 90% a
        # model may read alone ("Several models"): these benchmarks measure training and
        # lookups, not that policy
        "--max-feature-exposure",
        "1",
        "--max-readable-share",
        "1",
        *extra,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()  # the JSON line: listening, port
    if not line:
        process.wait(60)
        raise SystemExit(f"the bureau node did not start (exit code {process.returncode})")
    port = int(json.loads(line)["port"])
    return BureauProcess(process, f"127.0.0.1:{port}", bank_tls)
