"""Joint model accuracy and speed against a centralised plaintext logistic regression.

For each public vertically split data set (guest = bank with the label, host = bureau):
split the bank's rows 70/30 with a fixed seed, serve the host file from a bureau node in its
own process, run `train` (default hyper-parameters, 2048-bit keys) and `predict` from this
process over loopback gRPC, and compare the test AUC with scikit-learn's LogisticRegression
on the joined, standardised training rows.

    python benchmarks/accuracy.py [--data-dir ../shared/data] [--sets breast,default_credit]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from bureau_process import BANK_ID, start_bureau
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from bank_node.training import predict_job, train_job
from protocols.ids import IdType

# The raw (unscaled) UCI default-of-credit-card-clients table, split the way the two parties
# would hold it: repayment behaviour at the bank, registry-like and billing data at the bureau.
UCI_BANK = ["PAY_0", "PAY_2", "PAY_3", "PAY_4", "PAY_5", "PAY_6"] + [
    f"PAY_AMT{i}" for i in range(1, 7)
]
UCI_BUREAU = ["LIMIT_BAL", "SEX", "EDUCATION", "MARRIAGE", "AGE"] + [
    f"BILL_AMT{i}" for i in range(1, 7)
]


def set_files(name: str, data_dir: Path, work: Path) -> tuple[Path, Path]:
    """The guest (bank, with ``y``) and host (bureau) files of a data set."""
    if name != "uci_raw":
        return data_dir / f"{name}_hetero_guest.csv", data_dir / f"{name}_hetero_host.csv"
    raw = pacsv.read_csv(
        data_dir / "UCI_Credit_Card.csv",
        convert_options=pacsv.ConvertOptions(column_types={"ID": pa.string()}),
    )
    ids = raw.column("ID")
    guest = pa.table(
        {"id": ids, "y": raw.column("default.payment.next.month")}
        | {c: raw.column(c) for c in UCI_BANK}
    )
    host = pa.table({"id": ids} | {c: raw.column(c) for c in UCI_BUREAU})
    work.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(guest, work / "guest.csv")
    pacsv.write_csv(host, work / "host.csv")
    return work / "guest.csv", work / "host.csv"


def run_set(name: str, data_dir: Path, work: Path, seed: int, key_bits: int) -> dict:
    guest_csv, host_csv = set_files(name, data_dir, work)
    guest = pacsv.read_csv(
        guest_csv, convert_options=pacsv.ConvertOptions(column_types={"id": pa.string()})
    )
    host = pacsv.read_csv(
        host_csv, convert_options=pacsv.ConvertOptions(column_types={"id": pa.string()})
    )
    order = np.random.default_rng(seed).permutation(guest.num_rows)
    cut = int(0.7 * guest.num_rows)
    train, test = guest.take(np.sort(order[:cut])), guest.take(np.sort(order[cut:]))
    work.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(train, work / "train.csv")
    pacsv.write_csv(test.drop_columns(["y"]), work / "applicants.csv")

    # the centralised reference: sklearn on the joined, standardised features
    host_index = {v: i for i, v in enumerate(host.column("id").to_pylist())}
    bank_cols = [c for c in guest.column_names if c not in ("id", "y")]
    bureau_cols = [c for c in host.column_names if c != "id"]

    def joined(t: pa.Table) -> np.ndarray:
        rows = [host_index[v] for v in t.column("id").to_pylist()]
        a = np.column_stack([t.column(c).to_numpy() for c in bank_cols])
        b = np.column_stack([host.column(c).to_numpy()[rows] for c in bureau_cols])
        return np.hstack([a, b])

    scaler = StandardScaler().fit(joined(train))
    reference = LogisticRegression(max_iter=5000).fit(
        scaler.transform(joined(train)), train.column("y").to_numpy()
    )
    y_test = test.column("y").to_numpy()
    sklearn_auc = roc_auc_score(y_test, reference.decision_function(scaler.transform(joined(test))))

    test_keys = ["--allow-test-keys"] if key_bits < 2048 else []
    bureau = start_bureau(
        host_csv, "id", work / "bureau-state", work / "tls", "--id-type", "text", *test_keys
    )
    address, bank_tls = bureau.address, bureau.bank_tls
    try:
        started = time.perf_counter()
        summary = train_job(
            address,
            work / "train.csv",
            "id",
            "y",
            work / "model",
            BANK_ID,
            IdType.TEXT,
            overwrite=True,  # a rerun in the same work directory
            key_bits=key_bits,
            allow_test_keys=key_bits < 2048,
            seed=seed,
            compare_bank_only=True,
            quiet=True,
            tls_dir=bank_tls,
        )
        train_seconds = time.perf_counter() - started
        predict_job(
            address,
            work / "model",
            work / "applicants.csv",
            "id",
            work / "scores.csv",
            BANK_ID,
            quiet=True,
            tls_dir=bank_tls,
        )
    finally:
        bureau.stop()
    scores = pacsv.read_csv(
        work / "scores.csv", convert_options=pacsv.ConvertOptions(column_types={"id": pa.string()})
    )
    assert scores.column("id").to_pylist() == test.column("id").to_pylist()
    federated_auc = roc_auc_score(y_test, scores.column("score").to_numpy())
    return {
        "set": name,
        "train_rows": train.num_rows,
        "test_rows": test.num_rows,
        "bank_columns": summary["bank_columns"],
        "bureau_columns": summary["bureau_columns"],
        "epochs": summary["epochs"],
        "batch_size": summary["batch_size"],
        "seconds_per_epoch": summary["seconds_per_epoch"],
        "train_seconds": round(train_seconds, 1),
        "federated_test_auc": round(federated_auc, 4),
        "sklearn_test_auc": round(sklearn_auc, 4),
        "difference": round(federated_auc - sklearn_auc, 4),
        "bank_only_validation_auc": summary.get("bank_only_auc"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    parser.add_argument("--sets", default="breast,default_credit,uci_raw")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--key-bits", type=int, default=2048)
    args = parser.parse_args()
    print(
        json.dumps(
            {
                "machine": platform.platform(),
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "key_bits": args.key_bits,
            }
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            result = run_set(name, Path(args.data_dir), Path(tmp) / name, args.seed, args.key_bits)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
