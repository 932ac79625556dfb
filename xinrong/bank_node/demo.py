"""``bank-node demo``: a synthetic city, a bureau node on a loopback port, and a PSI run,
with no input from the user."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from xinrong.bureau_node.server import BureauNode
from xinrong.synthetic import generate_city, write_city

from .jobs import psi_job

DEMO_BANK_ID = "demo-bank"


def run_demo(
    workdir: Path,
    enterprises: int = 50_000,
    bank_clients: int = 5_000,
    seed: int = 1,
    workers: int | None = None,
    say: Any = None,
) -> dict[str, Any]:
    """Generate, serve, match; returns the summary (also what the last stdout line holds)."""
    say = say or (lambda text: print(text, file=sys.stderr))
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"1/3 generating a city of {enterprises:,} enterprises and {bank_clients:,} bank clients")
    paths = write_city(generate_city(enterprises, bank_clients, seed), workdir / "data")
    say("2/3 starting a bureau node on a loopback port")
    with BureauNode(
        data=paths["bureau"], id_column="uscc", state_dir=workdir / "bureau-state", workers=workers
    ) as node:
        port = node.start("127.0.0.1:0")
        say(f"3/3 private set intersection with the bureau at 127.0.0.1:{port}")
        summary = psi_job(
            bureau=f"127.0.0.1:{port}",
            data=paths["bank"],
            id_column="uscc",
            out=workdir / "matched.csv",
            bank_id=DEMO_BANK_ID,
            workers=workers,
        )
    say(
        f"The bureau knows {summary.intersection:,} of the bank's {summary.bank_ids:,} clients "
        f"({summary.rejected} rows with invalid IDs in {summary.rejects}, "
        f"{summary.duplicates} duplicates); matched IDs in {summary.out}; "
        f"{summary.seconds:.1f} s."
    )
    return {
        "workdir": str(workdir),
        "data": {k: str(v) for k, v in paths.items()},
        **summary.as_dict(),
    }
