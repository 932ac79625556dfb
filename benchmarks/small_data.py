"""Small data with the defaults: 1,000 bank rows, ten Chinese text columns at the bureau.

The UCI credit-card table split by ``xinrong.small_sets.split_uci`` (the bank: limit, bills,
payments; the bureau: sex, education, marriage, age band, six months of repayment status, as
text). For each seed: a bureau node in its own process over mutual TLS, ``train`` with
default flags (2048-bit keys unless --key-bits), ``predict`` on 5,000 other clients, and
scikit-learn's logistic regression on both halves joined (the same training rows, the same
column preparation) as the centralised reference.

    python benchmarks/small_data.py [--data-dir ../shared/data] [--seeds 1,2,3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from bureau_process import BANK_ID, start_bureau
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from bank_node.training import predict_job, train_job
from protocols.features import FeatureRecipe
from protocols.ids import IdType
from xinrong.small_sets import split_uci


def _read(path: Path) -> pa.Table:
    return pacsv.read_csv(
        path, convert_options=pacsv.ConvertOptions(column_types={"id": pa.string()})
    )


def centralised_auc(paths: dict[str, Path], train_ids: list[str]) -> float:
    bank, test, bureau = (_read(paths[k]) for k in ("bank_train", "bank_test", "bureau"))

    def rows(table: pa.Table, ids: list[str]) -> pa.Table:
        return table.take(pc.index_in(pa.array(ids), value_set=table.column("id")))

    bank_rows, bureau_rows = rows(bank, train_ids), rows(bureau, train_ids)
    bank_recipe = FeatureRecipe.fit(
        bank_rows, [c for c in bank.column_names if c not in ("id", "y")]
    )
    bureau_recipe = FeatureRecipe.fit(bureau_rows, [c for c in bureau.column_names if c != "id"])

    def design(b: pa.Table, r: pa.Table) -> np.ndarray:
        return np.hstack([bank_recipe.transform(b), bureau_recipe.transform(r)])

    model = LogisticRegression(max_iter=5000).fit(
        design(bank_rows, bureau_rows), bank_rows.column("y").to_numpy()
    )
    ids = test.column("id").to_pylist()
    p = model.predict_proba(design(rows(test, ids), rows(bureau, ids)))[:, 1]
    return float(roc_auc_score(test.column("y").to_numpy(), p))


def run(data_dir: Path, work: Path, seed: int, key_bits: int) -> dict:
    paths = split_uci(data_dir, work / "data")
    test_keys = ["--allow-test-keys"] if key_bits < 2048 else []
    bureau = start_bureau(
        paths["bureau"], "id", work / "state", work / "tls", "--id-type", "text", *test_keys
    )
    try:
        started = time.perf_counter()
        summary = train_job(
            bureau.address,
            paths["bank_train"],
            "id",
            "y",
            work / "model",
            BANK_ID,
            IdType.TEXT,
            overwrite=True,  # a rerun in the same work directory
            key_bits=key_bits,
            allow_test_keys=key_bits < 2048,
            seed=seed,
            quiet=True,
            tls_dir=bureau.bank_tls,
        )
        seconds = time.perf_counter() - started
        predict_job(
            bureau.address,
            work / "model",
            paths["bank_test"],
            "id",
            work / "scores.csv",
            BANK_ID,
            quiet=True,
            tls_dir=bureau.bank_tls,
        )
    finally:
        bureau.stop()
    test, scores = _read(paths["bank_test"]), _read(work / "scores.csv")
    federated = roc_auc_score(test.column("y").to_numpy(), scores.column("score").to_numpy())
    evaluation = _read(work / "model" / "evaluation.csv")
    train_ids = [
        i
        for i, split in zip(evaluation["id"].to_pylist(), evaluation["split"].to_pylist())
        if split == "train"
    ]
    central = centralised_auc(paths, train_ids)
    return {
        "seed": seed,
        "rows": summary["rows"],
        "bureau_columns": summary["bureau_columns"],
        "batch_size": summary["batch_size"],
        "epochs": summary["epochs"],
        "converged": summary["converged"],
        "federated_test_auc": round(federated, 4),
        "centralised_test_auc": round(central, 4),
        "difference": round(federated - central, 4),
        "train_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--key-bits", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in [int(s) for s in args.seeds.split(",")]:
            result = run(args.data_dir, Path(tmp) / str(seed), seed, args.key_bits)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
