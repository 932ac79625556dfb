"""What honest and attacking sets of models read of the bureau's features, as the bureau's
check measures it (protocols.score_span), and how long the check takes.

Models are fitted in the clear (scikit-learn's logistic regression on the bank's labels and
the bureau's prepared features, the bureau's part of the weights kept), which is what a
joint model converges to; the scores as served (``vertical_lr.served_scores``); the reads
are those of ``score_span.judge_models`` over the bureau's whole table.

    python benchmarks/score_span.py [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sklearn.linear_model import LogisticRegression

from bureau_node.features import BureauFeatures
from protocols import score_span
from protocols import vertical_lr as vlr
from protocols.features import FeatureRecipe
from protocols.ids import IdType
from xinrong.synthetic import generate_city, write_city

# the review's two families (SECURITY.md, "Several models")
FAMILY_A = [
    "abnormal_operation",
    "reg_age_years",
    "registered_capital_10k_cny",
    "tax_paid_12m_10k_cny",
    "insured_employees",
]
FAMILY_B = [
    "abnormal_operation",
    "reg_age_years",
    "invoice_amount_12m_10k_cny",
    "employee_trend_12m",
    "revenue_growth",
]


class Bureau:
    """A bureau's table, a bank's matched rows and labels, and models fitted on them."""

    def __init__(
        self, features: BureauFeatures, ids: list[str], bank: pa.Table, own: list[str]
    ) -> None:
        self.features, self.bank, self.own = features, bank, own
        self.rows = features.rows_of(ids)

    def model(self, names: list[str], labels: np.ndarray, part: np.ndarray | None = None):
        part = np.ones(len(labels), dtype=bool) if part is None else part
        recipe = FeatureRecipe.fit(
            self.rows.filter(pa.array(part)), names, self.features.layouts(names)
        )
        x = recipe.transform(self.rows)
        inputs = x
        if self.own:  # the bank's own features beside the bureau's, as in a joint model
            mine = np.column_stack(
                [self.bank.column(c).to_numpy(zero_copy_only=False) for c in self.own]
            )
            inputs = np.column_stack([x, (mine - mine.mean(0)) / (mine.std(0) + 1e-9)])
        fitted = LogisticRegression(max_iter=1000).fit(inputs[part], labels[part])
        return recipe, fitted.coef_[0][: x.shape[1]]

    def reads(self, models, public: tuple[str, ...] = ()) -> score_span.SpanVerdict:
        """``public``: features the bank looks up itself (registry fields)."""
        table = self.features.table
        served, targets = [], {}
        for recipe, weights in models:
            served.append(vlr.served_scores(recipe.transform(table), weights)[:, None])
            for c in recipe.columns:
                if c.name not in public:
                    raw = c.raw(table.column(c.name))
                    targets.setdefault(c.name, score_span.column_levels(c, raw))
        known = np.zeros((table.num_rows, 0))
        if public:
            names = list(public)
            known = FeatureRecipe.fit(table, names, self.features.layouts(names)).transform(table)
        return score_span.judge_models(served, known, targets, 0.5)


def show(what: str, verdict: score_span.SpanVerdict) -> None:
    top = sorted(verdict.together.items(), key=lambda kv: -kv[1])[:3]
    reads = ", ".join(f"{n} {v:.3f} (alone {verdict.alone[n]:.3f})" for n, v in top)
    print(f"| {what} | {reads} | {'refused' if verdict.over else 'kept'} |", flush=True)


def synthetic_city(root: Path) -> None:
    city = write_city(generate_city(4000, 1600, seed=12), root / "city")
    features = BureauFeatures(city["bureau"], "uscc", IdType.USCC)
    bank = pacsv.read_csv(
        city["bank"], convert_options=pacsv.ConvertOptions(column_types={"uscc": pa.string()})
    )
    held = set(pq.read_table(city["bureau"], columns=["uscc"]).column("uscc").to_pylist())
    bank = bank.filter(pa.array([u in held for u in bank.column("uscc").to_pylist()]))
    city_bureau = Bureau(features, bank.column("uscc").to_pylist(), bank, [])
    y = bank.column("y").to_numpy()

    def column(name: str) -> np.ndarray:
        return bank.column(name).to_numpy(zero_copy_only=False)

    overdue, use = column("overdue_count_12m") > 0, column("credit_utilization")
    labels = [
        y,
        overdue.astype(int),
        (use > np.nanquantile(use, 0.7)).astype(int),
        (overdue ^ (use > np.nanquantile(use, 0.5))).astype(int),
    ]
    everything = [n for n in features.names if n != "deregistered"]
    print("| synthetic city (4,000 enterprises) | the three best reads | the check |")
    print("| --- | --- | --- |")
    honest = city_bureau.model(everything, y)
    show("one model on all 16 features", city_bureau.reads([honest]))
    rng = np.random.default_rng(0)
    retrains = [city_bureau.model(everything, y, rng.random(len(y)) < 0.7) for _ in range(3)]
    show("three retrains on all 16", city_bureau.reads(retrains))
    monthly(city_bureau, everything, y, "all 16 features")
    registry = ("industry", "legal_form")  # public in a real registry
    monthly(city_bureau, everything, y, "all 16, industry and legal form public", registry)
    monthly(city_bureau, FAMILY_B[1:] + ["tax_paid_12m_10k_cny"], y, "five features, no flag")
    for name, family in (("A", FAMILY_A), ("B", FAMILY_B)):
        models = [city_bureau.model(family, lab) for lab in labels]
        show(f"family {name}, one model (labels y)", city_bureau.reads(models[:1]))
        for k in (2, 4):
            show(f"family {name}, {k} models", city_bureau.reads(models[:k]))
    timing(city_bureau, everything, labels)


def monthly(
    bureau: Bureau, names: list[str], labels: np.ndarray, what: str, public: tuple[str, ...] = ()
) -> None:
    """An honest bank retraining each month on a new 80% of its clients: the first month
    the check refuses (each kept model counts on, replaced or not)."""
    rng = np.random.default_rng(1)
    kept = []
    for month in range(1, 13):
        model = bureau.model(names, labels, rng.random(len(labels)) < 0.8)
        if bureau.reads([*kept, model], public).over:
            verdict = bureau.reads([*kept, model], public)
            reads = ", ".join(
                f"{n} {verdict.together[n]:.3f} (alone {verdict.alone[n]:.3f})"
                for n in verdict.over
            )
            print(f"| monthly retrains on {what} | refused in month {month}: {reads} | |")
            return
        kept.append(model)
    print(f"| monthly retrains on {what} | all 12 months kept | |", flush=True)


def timing(bureau: Bureau, names: list[str], labels: list[np.ndarray]) -> None:
    models = [bureau.model(names, labels[k % len(labels)]) for k in range(20)]
    start = time.perf_counter()
    bureau.reads(models)
    seconds = time.perf_counter() - start
    rows = bureau.features.table.num_rows
    print(f"\nthe check's measure over 20 models of {len(names)} features, {rows:,} rows: "
          f"{seconds:.2f} s", flush=True)  # fmt: skip


def default_credit(data_dir: Path) -> None:
    host = data_dir / "default_credit_hetero_host.csv"
    guest = pacsv.read_csv(data_dir / "default_credit_hetero_guest.csv")
    features = BureauFeatures(host, "id", IdType.TEXT)
    own = [c for c in guest.column_names if c not in ("id", "y")]
    bureau = Bureau(features, [str(v) for v in guest.column("id").to_pylist()], guest, own)
    y = guest.column("y").to_numpy()
    print("\n| default_credit (30,000 rows) | the three best reads | the check |")
    print("| --- | --- | --- |")
    rng = np.random.default_rng(0)
    names = list(features.names)
    models = [bureau.model(names, y, rng.random(len(y)) < 0.7) for _ in range(3)]
    for k in (1, 2, 3):
        show(
            f"{k} honest retrain{'s' if k > 1 else ''} (70% of rows each)", bureau.reads(models[:k])
        )
    timing(bureau, names, [y])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/xinrong-score-span"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    synthetic_city(args.workdir)
    default_credit(args.data_dir)


if __name__ == "__main__":
    main()
