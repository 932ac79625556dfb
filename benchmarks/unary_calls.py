"""The latency of one unary call to a bureau over mutual TLS on loopback: `ListFeatures`
(the bureau's cheapest answer) and `Evaluate` of one point (a private lookup's unary form).
What the bureau's interceptor adds to every call (identity, revocation, admission of the
wait for the request message: bureau_node.admission) shows here, side by side with another
checkout of the code:

    python benchmarks/unary_calls.py --label new
    PYTHONPATH=/path/to/older/checkout python benchmarks/unary_calls.py --label old
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bank_node.client import BureauConnection
from bureau_node.server import BureauNode
from node_runtime.transport import certs
from protocols import group
from protocols import vertical_lr as vlr
from xinrong.synthetic import generate_city, write_city
from xinrong.v1 import lookup_pb2 as lpb
from xinrong.v1 import model_pb2 as mpb


def _timed(call: Callable[[], object], calls: int) -> list[float]:
    for _ in range(100):  # warm: the channel, the bureau's caches
        call()
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return sorted(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--calls", type=int, default=1500)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="unary-calls-"))
    certs.init_ca(root / "tls")
    certs.issue_bank(root / "tls", "bank-a")
    city = write_city(generate_city(2000, 300, seed=3, graph=False), root / "city")
    (root / "bureau.toml").write_text("[banks.bank-a]\n")
    with BureauNode(
        city["bureau"],
        "uscc",
        root / "state",
        workers=0,
        tls_dir=root / "tls",
        config=root / "bureau.toml",
        training_limits=vlr.TrainingLimits(allow_test_keys=True),
    ) as node:
        node.start("127.0.0.1:0")
        tls = root / "tls" / "banks" / "bank-a"
        with BureauConnection(f"127.0.0.1:{node.port}", "bank-a", tls_dir=tls) as bank:
            epoch = bank.lookup.ListTables(lpb.ListTablesRequest(), metadata=bank.metadata)
            point = group.hash_to_group(b"an applicant")
            calls = {
                "ListFeatures": lambda: bank.catalogue.ListFeatures(
                    mpb.ListFeaturesRequest(), metadata=bank.metadata
                ),
                "Evaluate (one point)": lambda: bank.lookup.Evaluate(
                    lpb.BlindedPoints(key_epoch=epoch.key_epoch, points=point),
                    metadata=bank.metadata,
                ),
            }
            for name, call in calls.items():
                t = _timed(call, args.calls)
                print(
                    f"{args.label}: {name}: median {statistics.median(t) * 1e3:.3f} ms, "
                    f"90th percentile {t[int(0.9 * len(t))] * 1e3:.3f} ms ({len(t)} calls)"
                )


if __name__ == "__main__":
    main()
