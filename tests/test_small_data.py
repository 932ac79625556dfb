"""Small data with the defaults: 1,000 bank rows whose bureau half is ten text columns train
and score, the batch floor comes from the bureau's prepared columns (stated when it accepts
the plan), and the federated test AUC is within 0.01 of a centralised logistic regression."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from bank_node.training import default_patience, load_model, predict_job, train_job
from bureau_node.server import BureauNode
from protocols import paillier as he
from protocols import vertical_lr as vlr
from protocols.errors import ProtocolViolation
from protocols.features import FeatureRecipe
from protocols.ids import IdType
from protocols.optim import OptimizerConfig
from xinrong.small_sets import split_uci

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _plan(batch: int, adjustable: bool, bank_columns: int = 7) -> vlr.TrainingPlan:
    key, private_key = he.generate_keypair(512, allow_test_keys=True)
    return vlr.TrainingPlan(
        job_id="ab" * 16,
        psi_session_id="s",
        rows=1000,
        bank_columns=bank_columns,
        validation_fraction=0.2,
        seed=1,
        batch_size=batch,
        max_epochs=10,
        optimizer=OptimizerConfig(),
        bureau_features=(),
        bank_public_key=key,
        batch_size_adjustable=adjustable,
        bank_key_proof=he.prove_key(private_key),
    )


def test_the_bureau_raises_an_adjustable_batch_to_its_floor():
    limits = vlr.TrainingLimits(allow_test_keys=True)
    plan = _plan(64, adjustable=True)
    raised = vlr.raise_batch_to_floor(plan, limits, bureau_columns=55)
    assert raised.batch_size == 110
    vlr.check_plan(raised, limits, 55)
    assert vlr.raise_batch_to_floor(plan, limits, bureau_columns=20) is plan  # floor 64 holds
    fixed = _plan(64, adjustable=False)
    assert vlr.raise_batch_to_floor(fixed, limits, bureau_columns=55) is fixed
    huge = vlr.raise_batch_to_floor(plan, limits, bureau_columns=9000)
    assert huge.batch_size == vlr.MAX_BATCH  # then check_plan refuses it with its reason
    with pytest.raises(vlr.PolicyViolation):
        vlr.check_plan(huge, limits, 9000)


def test_a_batch_must_fit_a_message_with_the_largest_keys():
    """Batches run to twice the batch size less one, a ciphertext a row: with 4096-bit keys
    the largest batch would not fit the transport's messages, and the plan says so first."""
    limits = vlr.TrainingLimits(allow_test_keys=True)
    big_key = he.PublicKey((1 << 4095) + 1)  # only its size matters to the plan's checks
    plan = replace(_plan(vlr.MAX_BATCH, adjustable=False), rows=10_200, bank_public_key=big_key)
    with pytest.raises(vlr.PolicyViolation, match="batch size of at most 4060"):
        vlr.check_plan(plan, limits)  # one batch of 8,160 rows: 8.0 MiB
    vlr.check_plan(replace(plan, batch_size=3600), limits)
    vlr.check_plan(replace(plan, bank_public_key=_plan(64, False).bank_public_key), limits)
    # the columns travel in the same message: 6,144 rows and 2,048 bureau columns do not fit
    wide = replace(plan, rows=6144, validation_fraction=0.0)
    vlr.check_plan(wide, limits, 1000)
    with pytest.raises(vlr.PolicyViolation, match="a 2048-bit key or fewer features"):
        vlr.check_plan(wide, limits, 2048)


def test_the_bank_adopts_only_a_larger_batch_it_allowed():
    plan = _plan(64, adjustable=True)
    assert vlr.adopt_batch_size(plan, 0) is plan  # a bureau from before the field
    assert vlr.adopt_batch_size(plan, 64) is plan
    assert vlr.adopt_batch_size(plan, 110) == replace(plan, batch_size=110)
    with pytest.raises(ProtocolViolation, match="answered batch size 32"):
        vlr.adopt_batch_size(plan, 32)  # smaller batches would expose single rows more
    with pytest.raises(ProtocolViolation, match="not adjustable"):
        vlr.adopt_batch_size(_plan(64, adjustable=False), 110)
    with pytest.raises(ProtocolViolation):
        vlr.adopt_batch_size(plan, vlr.MAX_BATCH + 1)


def test_default_patience():
    assert default_patience(200) == 4 and default_patience(999) == 4
    assert default_patience(0) == 2 and default_patience(1000) == 2


def _read(path: Path) -> pa.Table:
    return pacsv.read_csv(
        path, convert_options=pacsv.ConvertOptions(column_types={"id": pa.string()})
    )


def _centralised_auc(paths: dict[str, Path], train_ids: list[str]) -> float:
    """scikit-learn's logistic regression on both halves joined, the same training rows and
    the same preparation of columns (fitted on those rows), scored on the test clients."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    bank, test, bureau = (_read(paths[k]) for k in ("bank_train", "bank_test", "bureau"))

    def rows(table: pa.Table, ids: list[str]) -> pa.Table:
        return table.take(pc.index_in(pa.array(ids), value_set=table.column("id")))

    bank_names = [c for c in bank.column_names if c not in ("id", "y")]
    bureau_names = [c for c in bureau.column_names if c != "id"]
    bank_rows, bureau_rows = rows(bank, train_ids), rows(bureau, train_ids)
    bank_recipe = FeatureRecipe.fit(bank_rows, bank_names)
    bureau_recipe = FeatureRecipe.fit(bureau_rows, bureau_names)

    def design(b: pa.Table, r: pa.Table) -> np.ndarray:
        return np.hstack([bank_recipe.transform(b), bureau_recipe.transform(r)])

    model = LogisticRegression(max_iter=5000).fit(
        design(bank_rows, bureau_rows), bank_rows.column("y").to_numpy()
    )
    test_ids = test.column("id").to_pylist()
    x_test = design(rows(test, test_ids), rows(bureau, test_ids))
    return float(roc_auc_score(test.column("y").to_numpy(), model.predict_proba(x_test)[:, 1]))


@pytest.mark.skipif(not (SHARED / "UCI_Credit_Card.csv").exists(), reason="public set absent")
def test_one_thousand_rows_with_text_bureau_columns_train_with_defaults(tmp_path):
    paths = split_uci(SHARED, tmp_path / "data")
    bureau_table = _read(paths["bureau"])
    assert sum(pa.types.is_string(t) for t in bureau_table.schema.types) - 1 == 10
    # ten text columns of a few levels each: the bureau's default exposure policy refuses
    # such a model (a looked-up score reads a level within groups sharing the rest); this
    # test is about training small data with the bank's defaults (the same for what the
    # score reads of its dominant feature)
    limits = vlr.TrainingLimits(
        allow_test_keys=True, max_feature_exposure=1.0, max_readable_share=1.0
    )
    with BureauNode(
        paths["bureau"], "id", tmp_path / "state", IdType.TEXT, workers=0, training_limits=limits
    ) as node:
        node.start("127.0.0.1:0")
        address = f"127.0.0.1:{node.port}"
        # default flags, but for the test key size and a fixed split
        summary = train_job(
            address,
            paths["bank_train"],
            "id",
            "y",
            tmp_path / "model",
            "bank-a",
            id_type=IdType.TEXT,
            key_bits=768,
            allow_test_keys=True,
            workers=0,
            quiet=True,
            seed=3,
        )
        predict_job(
            address,
            tmp_path / "model",
            paths["bank_test"],
            "id",
            tmp_path / "scores.csv",
            "bank-a",
            workers=0,
            quiet=True,
        )
    assert summary["rows"] == 1000 and summary["train_rows"] == 800
    # the floor from the bureau's real columns (55 here), not an upper bound of 31 per text
    # column (310: more than the 800 training rows could hold twice)
    assert summary["bureau_columns"] < 100
    assert summary["batch_size"] == max(64, 2 * summary["bureau_columns"])
    from sklearn.metrics import roc_auc_score

    scores, test = _read(tmp_path / "scores.csv"), _read(paths["bank_test"])
    assert scores.column("id").equals(test.column("id"))
    federated = roc_auc_score(test.column("y").to_numpy(), scores.column("score").to_numpy())
    evaluation = _read(tmp_path / "model" / "evaluation.csv")
    train_ids = [
        i
        for i, split in zip(evaluation["id"].to_pylist(), evaluation["split"].to_pylist())
        if split == "train"
    ]
    centralised = _centralised_auc(paths, train_ids)
    assert federated > 0.7
    assert federated >= centralised - 0.01, (federated, centralised)
    assert load_model(tmp_path / "model")["settings"]["patience"] == 4
