"""Federated information value with the bureau's noise against the exact values.

default_credit (guest = bank with the label, host = bureau): the bureau node runs in its own
process with mutual TLS and the default privacy setting (epsilon 1 per feature: discrete
Laplace noise of scale 2 on every count of defaults per bin). ``--repeats`` IV requests, each
after its own PSI session, over loopback gRPC; each bureau feature's IV is compared with the
exact IV of the same bins computed in the clear on the joined table.

    python benchmarks/iv_noise.py [--data-dir ../shared/data] [--repeats 5] [--key-bits 2048]

``--simulate N`` adds N draws of the same sampler (``binning.BinNoise``) applied to the exact
counts in the clear: the distribution the encrypted path produces (Paillier addition is
exact), in seconds rather than minutes per draw, for the tail of the error.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from bureau_process import BANK_ID, start_bureau

from bank_node.toolkit import iv_job, read_iv_table
from protocols import binning
from protocols.ids import IdType


def exact_values(
    guest: pa.Table, host: pa.Table, simulate: int = 0
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """IV of every host feature computed in the clear, as the bank would with no noise, and
    ``simulate`` noisy IVs of each from the bureau's sampler at the default epsilon."""
    index = {v: i for i, v in enumerate(host.column("id").to_pylist())}
    rows = [index[v] for v in guest.column("id").to_pylist() if v in index]
    labels = guest.column("y").to_numpy()[[v in index for v in guest.column("id").to_pylist()]]
    joined = host.take(rows)
    noise = binning.BinNoise(1.0)
    out, simulated = {}, {}
    for name in host.column_names[1:]:
        bins = binning.bin_column(name, joined.column(name))
        stats = binning.local_statistics(bins, labels)
        value = binning.evaluate_feature(
            name, "bureau", bins.kind, stats, bins.ordered, bins.missing_bin
        )
        out[name] = value.iv
        simulated[name] = []
        for _ in range(simulate):
            slots = [b + noise.sample() for b in stats.bads]
            bads = binning.noisy_counts(slots, noise.offset, stats.totals, name)
            noisy = binning.BinStatistics(stats.totals, bads)
            simulated[name].append(
                binning.evaluate_feature(
                    name, "bureau", bins.kind, noisy, bins.ordered, bins.missing_bin
                ).iv
            )
    return out, simulated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--simulate", type=int, default=0)
    args = parser.parse_args()
    options = pacsv.ConvertOptions(column_types={"id": pa.string()})
    guest_csv = args.data_dir / "default_credit_hetero_guest.csv"
    host_csv = args.data_dir / "default_credit_hetero_host.csv"
    guest = pacsv.read_csv(guest_csv, convert_options=options)
    host = pacsv.read_csv(host_csv, convert_options=options)
    exact, simulated = exact_values(guest, host, args.simulate)
    test_keys = ["--allow-test-keys"] if args.key_bits < 2048 else []
    runs: list[dict[str, float]] = []
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bureau = start_bureau(
            host_csv, "id", work / "state", work / "tls", "--id-type", "text", *test_keys
        )
        try:
            for n in range(args.repeats):
                started = time.perf_counter()
                summary = iv_job(
                    bureau.address,
                    guest_csv,
                    "id",
                    "y",
                    work / f"iv-{n}.csv",
                    BANK_ID,
                    id_type=IdType.TEXT,
                    bank_features=[],
                    key_bits=args.key_bits,
                    allow_test_keys=bool(test_keys),
                    quiet=True,
                    tls_dir=bureau.bank_tls,
                )
                seconds.append(time.perf_counter() - started)
                rows = read_iv_table(work / f"iv-{n}.csv")
                runs.append({r["feature"]: r["iv"] for r in rows if r["party"] == "bureau"})
                epsilon = summary["bureau_epsilon"]
        finally:
            bureau.stop()
    report = []
    for name, iv in exact.items():
        errors = [abs(run[name] - iv) for run in runs]
        row = {
            "feature": name,
            "exact_iv": round(iv, 4),
            "max_error": round(max(errors), 4),
            "mean_error": round(float(np.mean(errors)), 4),
        }
        if simulated[name]:
            drawn = np.abs(np.subtract(simulated[name], iv))
            row["simulated_max_error"] = round(float(drawn.max()), 4)
            row["simulated_p95_error"] = round(float(np.percentile(drawn, 95)), 4)
        report.append(row)
    checked = [r for r in report if r["exact_iv"] > 0.02]
    print(
        json.dumps(
            {
                "data": "default_credit",
                "repeats": args.repeats,
                "key_bits": args.key_bits,
                "epsilon_per_request": epsilon,
                "seconds_per_request": round(float(np.mean(seconds)), 1),
                "features": report,
                "worst_error_iv_above_0.02": max(r["max_error"] for r in checked),
                "within_0.01": all(r["max_error"] <= 0.01 for r in checked),
                "simulated": args.simulate,
                "simulated_worst_error_iv_above_0.02": max(
                    (r.get("simulated_max_error", 0.0) for r in checked), default=None
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
