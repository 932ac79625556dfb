"""What the association graph adds: the joint model with and without the graph features.

    python benchmarks/graph_lift.py                        # real joint training, 3 seeds
    python benchmarks/graph_lift.py --plaintext            # fast pre-check (scikit-learn LR)

For each seed: a synthetic city (``xinrong.synthetic``, with its edge file), a bureau node on
a loopback port serving it with ``--graph``, and the bank's real jobs over gRPC: the
federated IV table (once, every feature), then the joint model under Paillier encryption
twice with the same seed (so the same split and batches): on the bureau's own columns only,
and on those plus the graph features. Both runs use every bank column. The issue's bar: the
median over the seeds of (AUC with graph - AUC without) on the validation rows is at least
0.02, and at least one graph feature has IV >= 0.1 (medium or stronger).

Test keys (``--key-bits 1024``, the nodes' ``--allow-test-keys``) keep the run short; the
arithmetic is the same at 2048 bits.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BANK_ID = "graph-bench"


def joint_run(seed: int, args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    from bank_node.toolkit import iv_job, read_iv_table
    from bank_node.training import train_job
    from bureau_node.server import BureauNode
    from protocols.vertical_lr import TrainingLimits
    from xinrong.synthetic import generate_city, write_city

    paths = write_city(generate_city(args.enterprises, args.bank_clients, seed), workdir)
    keys = {"key_bits": args.key_bits, "allow_test_keys": True}
    with BureauNode(
        data=paths["bureau"],
        id_column="uscc",
        state_dir=workdir / "state",
        workers=args.workers,
        training_limits=TrainingLimits(allow_test_keys=True),
        graph=paths["graph"],
    ) as node:
        port = node.start("127.0.0.1:0")
        assert node.features is not None
        address = f"127.0.0.1:{port}"
        names = node.features.names
        own = [n for n in names if not n.startswith("graph_")]
        iv_job(
            address, paths["bank"], "uscc", "y", workdir / "iv.csv", BANK_ID,
            workers=args.workers, quiet=True, **keys,
        )  # fmt: skip
        iv = [r for r in read_iv_table(workdir / "iv.csv") if r["party"] == "bureau"]
        graph_iv = [r for r in iv if r["feature"].startswith("graph_")]
        results = {}
        for label, chosen in (("without_graph", own), ("with_graph", names)):
            trained = train_job(
                address, paths["bank"], "uscc", "y", workdir / label, BANK_ID,
                bureau_features=chosen, seed=seed, workers=args.workers, quiet=True,
                overwrite=True, **keys,
            )  # fmt: skip
            results[label] = trained["validation_auc"]
            results[f"{label}_seconds"] = trained["seconds"]
    best = max(graph_iv, key=lambda r: r["iv"])
    return {
        "seed": seed,
        **results,
        "lift": round(results["with_graph"] - results["without_graph"], 4),
        "best_graph_feature": best["feature"],
        "best_graph_iv": round(best["iv"], 3),
        "best_graph_strength": best["strength"],
        "graph_features_medium_or_stronger": sum(r["iv"] >= 0.1 for r in graph_iv),
    }


def plaintext_run(seed: int, args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    """The same comparison with a plaintext logistic regression on the joined data."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from bureau_node.edges import DEFAULT_FLAG_COLUMNS, graph_columns
    from protocols.features import FeatureRecipe
    from protocols.ids import IdType
    from xinrong.synthetic import BANK_COLUMNS, BUREAU_COLUMNS, generate_city, write_city

    city = generate_city(args.enterprises, args.bank_clients, seed)
    paths = write_city(city, workdir)
    ids = city.bureau.column("uscc").combine_chunks()
    graph, _ = graph_columns(paths["graph"], city.bureau, ids, IdType.USCC, DEFAULT_FLAG_COLUMNS)
    bureau = city.bureau
    for name in graph.column_names:
        bureau = bureau.append_column(name, graph.column(name))
    _, first = np.unique(city.bank.column("uscc").to_numpy(zero_copy_only=False), return_index=True)
    joined = city.bank.take(np.sort(first)).join(bureau, "uscc", join_type="inner").sort_by("uscc")
    y = joined.column("y").to_numpy()
    order = np.random.default_rng(seed).permutation(y.size)
    cut = int(0.8 * y.size)
    train, valid = order[:cut], order[cut:]
    fit_rows = joined.take(train)

    def auc(names: list[str]) -> float:
        x = FeatureRecipe.fit(fit_rows, names).transform(joined)
        model = LogisticRegression(max_iter=2000).fit(x[train], y[train])
        return float(roc_auc_score(y[valid], model.decision_function(x[valid])))

    own = list(BANK_COLUMNS[1:-1]) + list(BUREAU_COLUMNS[1:])
    without, with_graph = auc(own), auc(own + graph.column_names)
    return {
        "seed": seed,
        "without_graph": round(without, 4),
        "with_graph": round(with_graph, 4),
        "lift": round(with_graph - without, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--enterprises", type=int, default=50_000)
    parser.add_argument("--bank-clients", type=int, default=5_000)
    parser.add_argument("--key-bits", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--plaintext", action="store_true", help="the fast pre-check only")
    args = parser.parse_args()
    run = plaintext_run if args.plaintext else joint_run
    started = time.perf_counter()
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as scratch:
            row = run(seed, args, Path(scratch))
        print(json.dumps(row), flush=True)
        rows.append(row)
    lifts = [float(r["lift"]) for r in rows]  # type: ignore[arg-type]
    summary = {
        "mode": "plaintext LR" if args.plaintext else f"joint Paillier, {args.key_bits}-bit keys",
        "enterprises": args.enterprises,
        "bank_clients": args.bank_clients,
        "median_lift": round(statistics.median(lifts), 4),
        "lifts": lifts,
        "meets_0.02": statistics.median(lifts) >= 0.02,
        "seconds": round(time.perf_counter() - started),
    }
    print(json.dumps(summary))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
