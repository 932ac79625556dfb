"""The joint model end to end: a real bureau node on a loopback port, the bank's train and
predict jobs over gRPC, both command lines, the catalogue and the model store."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from bank_node.training import list_features, load_model, predict_job, train_job
from bureau_node.audit import AuditLog
from bureau_node.models import ModelStore
from bureau_node.server import BureauNode
from protocols import moments
from protocols import paillier as he
from protocols import vertical_lr as vlr
from protocols.errors import InputDataError, ProtocolViolation, UnknownSession
from xinrong.synthetic import generate_city, generate_usccs, write_city

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TEST_KEYS = {"key_bits": 768, "allow_test_keys": True}


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("city")
    # the city as before issue 15 (no graph, no deregistered column): these tests are about
    # the joint model (test_graph.py and the demo's test cover the graph), and the
    # scorecard's fidelity bar was set on this city
    # the business registry's industry and legal form are public (anyone may look them
    # up): the only bureau features a reason code may name
    public = frozenset({"industry", "legal_form"})
    return write_city(generate_city(8000, 3000, seed=5, graph=False), root, public=public)


@pytest.fixture(scope="module")
def bureau(city, tmp_path_factory):
    # narrow models on three or four features, many for one bank, are these tests' subject,
    # not the exposure policy nor what models read together (tests/test_attacks.py): on
    # this city most of them would be refused by them
    limits = vlr.TrainingLimits(
        allow_test_keys=True, max_feature_exposure=1.0, max_readable_share=1.0
    )
    node = BureauNode(
        city["bureau"], "uscc", tmp_path_factory.mktemp("state"), workers=0, training_limits=limits
    )
    node.start("127.0.0.1:0")
    yield node
    node.stop()


@pytest.fixture(scope="module")
def trained(city, bureau, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("model")
    summary = train_job(
        f"127.0.0.1:{bureau.port}",
        city["bank"],
        "uscc",
        "y",
        model_dir,
        "bank-a",
        compare_bank_only=True,
        seed=1,
        quiet=True,
        **TEST_KEYS,
    )
    return summary, model_dir


def read_csv(path: Path) -> pa.Table:
    return pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(column_types={"uscc": pa.string(), "id": pa.string()}),
    )


def test_training_over_grpc_reports_and_stores_both_halves(trained, bureau):
    summary, model_dir = trained
    for key in (
        "model_id",
        "rows",
        "bank_features",
        "bureau_features",
        "epochs",
        "train_auc",
        "validation_auc",
        "validation_ks",
        "seconds",
        "bank_only_auc",
    ):
        assert key in summary
    assert summary["bureau_features"] == 16 and summary["bank_features"] == 6
    assert summary["validation_rows"] == round(summary["rows"] * 0.2)
    # well above chance on ~550 held-back rows (~45 defaults: the AUC's standard error is
    # about 0.04, too wide to compare with the bank-only model here; see BENCHMARKS.md)
    assert summary["validation_auc"] > 0.6 and summary["train_auc"] > 0.7
    assert 0.5 < summary["bank_only_auc"] < 1
    bank_half = load_model(model_dir)
    bureau_half = ModelStore(bureau.store.root).root / "bank-a" / f"{summary['model_id']}.json"
    bureau_model = json.loads(bureau_half.read_text())
    # each side keeps only its own half
    assert len(bank_half["weights"]) == summary["bank_columns"] + 1
    assert "industry" not in json.dumps(bank_half["recipe"])
    assert len(bureau_model["weights"]) == summary["bureau_columns"]
    assert "account_age_months" not in json.dumps(bureau_model)
    assert bureau_model["model_id"] == bank_half["model_id"]
    # operation counts, per epoch on the bank's side and in all on both sides
    first = bank_half["history"][0]["counts"]
    # each step: its rows' residuals and the bank's share of the bureau's weights
    steps = summary["train_rows"] // summary["batch_size"] + 1  # the batches, the validation
    rows = summary["train_rows"] + summary["validation_rows"]
    assert first["encryptions"] == rows + steps * summary["bureau_columns"]
    assert first["decryptions"] >= 1 and first["inner_product_terms"] > 0
    assert bureau_model["counts"]["encryptions"] >= summary["train_rows"]
    assert set(bureau_model["epoch_counts"]) == {str(e) for e in range(summary["epochs"])}
    assert (bureau_half.stat().st_mode & 0o777) == 0o600


def test_predict_scores_everyone_and_flags_the_unknown(city, bureau, trained, tmp_path):
    summary, model_dir = trained
    clients = read_csv(city["bank"]).drop_columns(["y"]).slice(0, 300)
    strangers = generate_usccs(2, np.random.default_rng(99)).astype(str).tolist()
    extra = pa.table(
        {name: pa.nulls(3, clients.schema.field(name).type) for name in clients.column_names}
    ).set_column(0, "uscc", pa.array(strangers + ["not-a-code"], pa.string()))
    applicants = pa.concat_tables([clients, extra])
    path = tmp_path / "applicants.csv"
    pacsv.write_csv(applicants, path)
    out = tmp_path / "scores.csv"
    result = predict_job(
        f"127.0.0.1:{bureau.port}", model_dir, path, "uscc", out, "bank-a", quiet=True
    )
    scores = read_csv(out)
    assert scores.column_names == ["uscc", "score", "bureau_matched"] + [
        f"{side}reason_{i}" for side in ("", "bureau_") for i in (1, 2, 3)
    ]
    assert scores.column("uscc").to_pylist() == applicants.column("uscc").to_pylist()
    assert result["rows"] == 303 and result["invalid_ids"] >= 1
    matched = np.array(scores.column("bureau_matched").to_pylist())
    assert not matched[-3:].any()
    assert matched[:300].sum() == result["bureau_matched"] > 200
    p = scores.column("score").to_numpy()
    assert np.all((p > 0) & (p < 1))
    # the documented rule for applicants the bureau does not know: the bank's half plus the
    # bureau's mean training contribution
    model = load_model(model_dir)
    from bank_node.training import _design
    from protocols.features import FeatureRecipe

    recipe = FeatureRecipe.from_json(model["recipe"])
    u = _design(recipe, applicants.slice(300)) @ np.array(model["weights"])
    slope, intercept = model["calibration"]["slope"], model["calibration"]["intercept"]
    expected = 1 / (1 + np.exp(-(slope * (u + model["neutral_bureau_score"]) + intercept)))
    np.testing.assert_allclose(p[-3:], expected, rtol=1e-9)
    # reason codes: the bank's features pushing most towards default, in order, and the
    # bureau's names for the applicants it knows (never for the others)
    from protocols import explain

    x = _design(recipe, clients)[:, 1:]
    widths = [len(c.outputs) for c in recipe.columns]
    contrib = explain.contributions(x, np.array(model["weights"][1:]), widths)
    names = [c.name for c in recipe.columns]
    first = [v or None for v in scores.column("reason_1").to_pylist()[:300]]
    top = np.argmax(contrib, axis=1)
    assert first == [names[i] if contrib[r, i] > 0 else None for r, i in enumerate(top)]
    bureau_first = scores.column("bureau_reason_1").to_pylist()
    named = {b for b, m in zip(bureau_first, matched) if m and b}
    assert named and named <= {"industry", "legal_form"}  # public features only
    assert sum(1 for b, m in zip(bureau_first, matched) if m and b) > 100
    assert not any(bureau_first[-3:])
    for row in scores.select(["bureau_reason_1", "bureau_reason_2"]).to_pylist()[:300]:
        assert row["bureau_reason_1"] != row["bureau_reason_2"] or not row["bureau_reason_1"]


def test_scores_on_matched_training_rows_reproduce_the_reported_auc(
    city, bureau, trained, tmp_path
):
    summary, model_dir = trained
    out = tmp_path / "s.csv"
    predict_job(
        f"127.0.0.1:{bureau.port}", model_dir, city["bank"], "uscc", out, "bank-a", quiet=True
    )
    scores = read_csv(out)
    labels = read_csv(city["bank"]).column("y").to_numpy()
    matched = np.array(scores.column("bureau_matched").to_pylist())
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(labels[matched], scores.column("score").to_numpy()[matched])
    assert abs(auc - (0.8 * summary["train_auc"] + 0.2 * summary["validation_auc"])) < 0.03


def test_catalogue_lists_names_kinds_descriptions_never_values(bureau):
    features = list_features(f"127.0.0.1:{bureau.port}", "bank-a")
    by_name = {f["name"]: f for f in features}
    assert len(features) == 16
    assert by_name["industry"]["kind"] == "category"
    assert by_name["debt_ratio"]["kind"] == "numeric"
    assert "liabilities" in by_name["debt_ratio"]["description"]
    assert set(features[0]) == {"name", "kind", "description", "public"}
    # this city's catalogue marks two registry fields
    assert {f["name"] for f in features if f["public"]} == {"industry", "legal_form"}


def test_chosen_bureau_features_and_unknown_names(city, bureau, tmp_path):
    address = f"127.0.0.1:{bureau.port}"
    summary = train_job(
        address,
        city["bank"],
        "uscc",
        "y",
        tmp_path / "m",
        "bank-b",
        bureau_features=["debt_ratio", "court_judgements_3y", "tax_paid_12m_10k_cny", "industry"],
        epochs=2,
        validation_fraction=0.0,
        seed=2,
        quiet=True,
        **TEST_KEYS,
    )
    assert summary["bureau_features"] == 4 and summary["validation_auc"] is None
    assert load_model(tmp_path / "m")["bureau_features"] == [
        "debt_ratio",
        "court_judgements_3y",
        "tax_paid_12m_10k_cny",
        "industry",
    ]
    # the bank checks names against the bureau's catalogue before PSI (the bureau's own
    # refusal of unknown names stays, for banks that skip the check)
    with pytest.raises(InputDataError, match="the bureau offers no feature named 'salary'"):
        train_job(
            address,
            city["bank"],
            "uscc",
            "y",
            tmp_path / "m2",
            "bank-b",
            bureau_features=["salary"],
            quiet=True,
            **TEST_KEYS,
        )


# three bank and three bureau features (four columns) in batches of 128: both nodes take the
# route from cross moments on their own
NARROW = {
    "bank_features": ["overdue_count_12m", "credit_utilization", "account_age_months"],
    "bureau_features": ["debt_ratio", "court_judgements_3y", "registered_capital_10k_cny"],
    "batch_size": 128,
}


def test_a_narrow_job_trains_from_cross_moments_over_grpc(city, bureau, tmp_path):
    """Three bank and three bureau columns: both nodes take the route from cross moments on
    their own (protocols/moments.py). The bank never encrypts for the bureau and the bureau
    decrypts nothing; the rows go over once per job; the model learns and scores."""
    history: list[vlr.EpochRecord] = []
    summary = train_job(
        f"127.0.0.1:{bureau.port}",
        city["bank"],
        "uscc",
        "y",
        tmp_path / "m",
        "bank-m",
        epochs=3,
        compare_bank_only=True,
        seed=4,
        quiet=True,
        on_epoch=history.append,
        **NARROW,
        **TEST_KEYS,
    )
    columns = (summary["bank_columns"] + 1, summary["bureau_columns"], summary["batch_size"])
    assert moments.pays(*columns, 768)  # the intercept counts as a bank column
    assert len(history) == 3
    # the bank's counts: no encryption under the bureau's key, its rows encrypted in the
    # first epoch only (later epochs encrypt a few weights and shares a step)
    assert all(r.counts["peer_encryptions"] == 0 for r in history)
    first, later = history[0].counts["encryptions"], history[1].counts["encryptions"]
    assert first > summary["rows"] * 0.9 and later < first / 10
    stored = ModelStore(bureau.store.root).load("bank-m", summary["model_id"])
    assert stored["counts"]["decryptions"] == 0
    assert summary["validation_auc"] > summary["bank_only_auc"] + 0.02
    result = predict_job(
        f"127.0.0.1:{bureau.port}",
        tmp_path / "m",
        city["bank"],
        "uscc",
        tmp_path / "scores.csv",
        "bank-m",
        quiet=True,
    )
    assert result["rows"] == read_csv(city["bank"]).num_rows
    assert read_csv(tmp_path / "scores.csv").column("score").null_count == 0


class Interrupted(Exception):
    pass


def test_a_narrow_job_resumes_after_each_interruption(city, bureau, tmp_path):
    """From cross moments the bureau decrypts nothing, so its ledger counts the steps it
    answered: a job interrupted twice, each time between epochs, resumes twice (the rows go
    over again after each resume) and ends with all its epochs; a job interrupted in the
    middle of an epoch cannot be resumed, as on the per-row route."""
    address = f"127.0.0.1:{bureau.port}"
    model = tmp_path / "m"
    resumed: list[vlr.EpochRecord] = []

    def stop_after(epoch):
        def stop(record):
            resumed.append(record)
            if record.epoch == epoch:
                raise Interrupted

        return stop

    with pytest.raises(Interrupted):
        train_job(
            address, city["bank"], "uscc", "y", model, "bank-r", epochs=4, patience=99,
            seed=5, quiet=True, on_epoch=stop_after(0), **NARROW, **TEST_KEYS,
        )  # fmt: skip
    job = json.loads((model / "checkpoint.json").read_text())["job_id"]
    again = {"allow_test_keys": True, "quiet": True, "resume": job}
    with pytest.raises(Interrupted):
        train_job(address, "", "", "", model, "bank-r", on_epoch=stop_after(1), **again)
    summary = train_job(address, "", "", "", model, "bank-r", on_epoch=resumed.append, **again)
    assert summary["epochs"] == 4 and [r.epoch for r in resumed] == [0, 1, 2, 3]
    # each run after a resume sent the rows again in its first epoch
    rows = resumed[0].counts["encryptions"]
    assert resumed[1].counts["encryptions"] >= rows > 10 * resumed[3].counts["encryptions"]

    # in the middle of an epoch (the bureau has answered one of its steps): no resume can
    # continue it, so the bank gives the job up at once (the bureau ends it, on record)
    original = vlr.BankTrainer.update_from_moments

    def crash_in_second_epoch(self, msg, epoch):
        if epoch == 1:
            raise Interrupted
        return original(self, msg, epoch)

    model = tmp_path / "m2"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vlr.BankTrainer, "update_from_moments", crash_in_second_epoch)
        with pytest.raises(Interrupted):
            train_job(
                address, city["bank"], "uscc", "y", model, "bank-r", epochs=4, seed=5,
                quiet=True, **NARROW, **TEST_KEYS,
            )  # fmt: skip
    assert not (model / "checkpoint.json").exists()
    ended = [r for r in AuditLog(bureau.store.root).records() if r["bank_id"] == "bank-r"]
    assert ended[-1]["event"] == "training_abandoned"
    job = json.loads(ended[-1]["details"])["job_id"]
    jobs = bureau.store.root / "jobs" / "bank-r"
    assert not (jobs / f"{job}.json").exists()  # with the key's factors
    assert json.loads((jobs / f"{job}.ledger.json").read_text())["state"] == "abandoned"


def test_models_belong_to_their_bank_and_can_be_deleted(city, bureau, tmp_path):
    address = f"127.0.0.1:{bureau.port}"
    summary = train_job(
        address,
        city["bank"],
        "uscc",
        "y",
        tmp_path / "m",
        "bank-c",
        epochs=1,
        seed=3,
        quiet=True,
        **TEST_KEYS,
    )
    other_bank = tmp_path / "other"
    with pytest.raises(UnknownSession, match="no model .* for bank bank-z"):
        predict_job(
            address, tmp_path / "m", city["bank"], "uscc", tmp_path / "x.csv", "bank-z", quiet=True
        )
    assert not other_bank.exists()
    store = ModelStore(bureau.store.root)
    assert [m["model_id"] for m in store.list("bank-c")] == [summary["model_id"]]
    store.delete("bank-c", summary["model_id"])
    with pytest.raises(UnknownSession, match="no model"):
        predict_job(
            address, tmp_path / "m", city["bank"], "uscc", tmp_path / "x.csv", "bank-c", quiet=True
        )


def test_bad_inputs_are_clear_errors_before_any_exchange(city, bureau, tmp_path):
    address = f"127.0.0.1:{bureau.port}"
    with pytest.raises(InputDataError, match="no label column 'default'"):
        train_job(address, city["bank"], "uscc", "default", tmp_path / "m", "bank-d", **TEST_KEYS)
    with pytest.raises(ProtocolViolation, match="--allow-test-keys"):
        train_job(address, city["bank"], "uscc", "y", tmp_path / "m", "bank-d", key_bits=1024)
    labels = read_csv(city["bank"]).slice(0, 50)
    bad = labels.set_column(
        labels.column_names.index("y"), "y", pa.array(["1", "yes"] + ["0"] * 48)
    )
    pacsv.write_csv(bad, tmp_path / "bad.csv")
    with pytest.raises(
        InputDataError,
        match="0 or 1 on every row; 1 rows do not \\(data rows 2;.* --positive-label",
    ):
        train_job(address, tmp_path / "bad.csv", "uscc", "y", tmp_path / "m", "bank-d", **TEST_KEYS)
    with pytest.raises(InputDataError, match="no model here"):
        predict_job(address, tmp_path / "none", city["bank"], "uscc", tmp_path / "x.csv", "bank-d")


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


@pytest.mark.skipif(not SHARED.exists(), reason="the shared data sets are not beside the repo")
def test_command_lines_on_the_public_breast_data(tmp_path):
    state = tmp_path / "state"
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bureau_node.cli",
            "serve",
            "--data",
            str(SHARED / "breast_hetero_host.csv"),
            "--id-column",
            "id",
            "--id-type",
            "text",
            "--state-dir",
            str(state),
            "--listen",
            "127.0.0.1:0",
            "--allow-test-keys",
            "--quiet",
            "--insecure",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stdout is not None
        port = json.loads(serve.stdout.readline())["port"]
        address = f"127.0.0.1:{port}"
        train = run_cli(
            "bank_node.cli",
            "train",
            "--insecure",
            "--bureau",
            address,
            "--data",
            str(SHARED / "breast_hetero_guest.csv"),
            "--id-column",
            "id",
            "--id-type",
            "text",
            "--label",
            "y",
            "--model-dir",
            str(tmp_path / "m"),
            "--key-bits",
            "768",
            "--allow-test-keys",
            "--seed",
            "4",
            "--optimizer",
            "sgd",
            "--learning-rate",
            "0.1",
            "--quiet",
        )
        assert train.returncode == 0, train.stderr
        summary = last_json(train.stdout)
        assert summary["validation_auc"] > 0.95 and summary["rows"] == 569
        predict = run_cli(
            "bank_node.cli",
            "predict",
            "--insecure",
            "--bureau",
            address,
            "--model-dir",
            str(tmp_path / "m"),
            "--data",
            str(SHARED / "breast_hetero_guest.csv"),
            "--id-column",
            "id",
            "--out",
            str(tmp_path / "scores.csv"),
            "--quiet",
        )
        assert predict.returncode == 0, predict.stderr
        assert last_json(predict.stdout)["bureau_matched"] == 569
        features = run_cli("bank_node.cli", "features", "--insecure", "--bureau", address)
        assert [f["name"] for f in last_json(features.stdout)["features"]][:2] == ["x0", "x1"]
        listed = run_cli("bureau_node.cli", "models", "list", "--state-dir", str(state))
        assert [m["model_id"] for m in last_json(listed.stdout)["models"]] == [summary["model_id"]]
        tables_of_model = f"lookup/**/model_{summary['model_id']}*.npz"
        assert len(list(state.glob(tables_of_model))) == 2  # sealed for the bank, revisions
        deleted = run_cli(
            "bureau_node.cli",
            "models",
            "delete",
            "--state-dir",
            str(state),
            "--bank-id",
            "demo-bank",
            summary["model_id"],
        )
        assert deleted.returncode == 0
        assert last_json(deleted.stdout)["lookup_tables_removed"] == 2
        # the bank's kept copy of the table no longer opens: its key epoch ended
        assert last_json(deleted.stdout)["key_epoch"] == 2
        assert not list(state.glob(tables_of_model))  # its lookup tables went with it
        again = run_cli(
            "bureau_node.cli",
            "models",
            "delete",
            "--state-dir",
            str(state),
            "--bank-id",
            "demo-bank",
            summary["model_id"],
        )
        assert again.returncode == 2 and "no model" in again.stderr
        small = run_cli(
            "bank_node.cli",
            "train",
            "--insecure",
            "--bureau",
            address,
            "--data",
            str(SHARED / "breast_hetero_guest.csv"),
            "--id-column",
            "id",
            "--id-type",
            "text",
            "--label",
            "y",
            "--model-dir",
            str(tmp_path / "n"),
            "--key-bits",
            "1024",
        )
        assert small.returncode == 2 and "--allow-test-keys" in small.stderr
    finally:
        serve.terminate()
        serve.wait(30)


def test_bureau_features_command_reads_the_catalogue(city):
    result = run_cli(
        "bureau_node.cli", "features", "--data", str(city["bureau"]), "--id-column", "uscc"
    )
    assert result.returncode == 0, result.stderr
    catalogue = last_json(result.stdout)
    assert catalogue["enterprises"] == 8000 and len(catalogue["features"]) == 16
    assert not math.isnan(float(len(catalogue["features"])))


def test_federated_information_value_is_the_plaintext_computation_plus_noise(
    city, bureau, tmp_path
):
    from bank_node.toolkit import iv_job, read_iv_table, select_by_iv
    from protocols import binning

    out = tmp_path / "iv.csv"
    summary = iv_job(
        f"127.0.0.1:{bureau.port}",
        city["bank"],
        "uscc",
        "y",
        out,
        "bank-a",
        quiet=True,
        monotonic=False,  # bin for bin, so that each noisy count can be checked
        min_bin_count=30,  # the bureau's floor: the features below keep all their bins
        min_bin_share=0.0,
        **TEST_KEYS,
    )
    rows = read_iv_table(out)
    assert summary["features"] == len(rows) == 22
    assert summary["rho_charged"] == 1.0  # rho 0.0625 per feature (the default), 16 named
    assert [r["iv"] for r in rows] == sorted((r["iv"] for r in rows), reverse=True)
    assert {r["party"] for r in rows} == {"bank", "bureau"}
    # the same bins (the bureau's, fitted on its whole table) computed in the clear on the
    # joined data: counts of defaults and of non-defaults each within the bureau's noise
    # (discrete Gaussian of sigma 4: |z| > 40 is ten sigmas, probability about 1e-23), and
    # no exact bin size
    import pyarrow.parquet as pq

    from bureau_node.features import BureauFeatures
    from protocols.ids import IdType, normalise_column

    bank = read_csv(city["bank"])
    bureau_table = pq.read_table(city["bureau"])
    position = {v: i for i, v in enumerate(bureau_table.column("uscc").to_pylist())}
    codes = normalise_column(bank.column("uscc").combine_chunks(), IdType.USCC).to_pylist()
    seen, matched_rows, bureau_rows = set(), [], []
    for i, code in enumerate(codes):
        if code in position and code not in seen:
            seen.add(code)
            matched_rows.append(i)
            bureau_rows.append(position[code])
    labels = bank.column("y").to_numpy()[matched_rows]
    joined = bureau_table.take(bureau_rows)
    by_name = {r["feature"]: r for r in rows}
    details = {d["feature"]: d for d in json.loads((tmp_path / "iv.bins.json").read_text())}
    rules = BureauFeatures(city["bureau"], "uscc", IdType.USCC).bin_rules(
        ["debt_ratio", "industry", "insured_employees"], 10, binning.BUREAU_MIN_BIN_COUNT
    )
    noises = []
    for name, rule in rules.items():
        bins = rule.apply(joined.column(name))
        exact = binning.local_statistics(bins, labels)
        assert min(exact.totals) >= 30 + 80  # beyond the noise's reach of the bank's merging
        expected = binning.evaluate_feature(
            name, "bureau", bins.kind, exact, bins.ordered, bins.missing_bin, monotonic=False
        )
        noise = np.subtract(details[name]["bads"], expected.bads)
        goods = np.subtract(details[name]["totals"], details[name]["bads"])
        noise_goods = goods - np.subtract(expected.totals, expected.bads)
        assert np.all(np.abs(noise) <= 40) and np.all(np.abs(noise_goods) <= 40)
        noises += [noise, noise_goods]
        # the IV is that of the noisy counts; with a few dozen defaults per bin it can be
        # far from the exact one (default_credit's 30,000 rows: BENCHMARKS.md)
        noisy = binning.BinStatistics(details[name]["totals"], details[name]["bads"])
        got = binning.evaluate_feature(
            name, "bureau", bins.kind, noisy, bins.ordered, bins.missing_bin, monotonic=False
        )
        assert by_name[name]["iv"] == pytest.approx(got.iv, abs=1e-6)
        assert by_name[name]["bins"] == expected.bins == rule.count
    # noise there is (a feature of three bins gets none at all about 1% of the time)
    assert any(np.any(noise != 0) for noise in noises)
    assert all(min(d["totals"]) >= 30 for d in details.values())
    bank_features, bureau_features = select_by_iv(out, 0.02)
    assert bureau_features and all(by_name[f]["iv"] >= 0.02 for f in bureau_features)
    # a PSI session's rows are binned once: a second set of labels could single rows out
    import grpc

    from bank_node.client import BureauConnection
    from bank_node.toolkit import _label_chunks

    pub, priv = he.generate_keypair(768, allow_test_keys=True)
    with BureauConnection(f"127.0.0.1:{bureau.port}", "bank-a") as connection:
        chunks = _label_chunks(
            summary["psi_session_id"],
            pub,
            he.prove_key(priv),
            he.OwnerEncryptor(priv).encrypt([0] * summary["matched"]),
            10,
            [],
        )
        with pytest.raises(grpc.RpcError) as err:
            connection.binning.BinLabels(chunks, metadata=connection.metadata, timeout=60)
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "already used" in err.value.details()


def test_scorecard_points_track_the_probability(city, bureau, trained, tmp_path):
    from bank_node.toolkit import scorecard_job
    from protocols.scorecard import Scaling, probability_of

    summary, model_dir = trained
    card = scorecard_job(model_dir, "bank-a", Scaling(600, 50, 20))
    assert card["bureau_bins"] > card["bureau_features"] and card["bank_bins"] > 0
    assert (model_dir / "scorecard.csv").exists()
    out = tmp_path / "scores.csv"
    predict_job(None, model_dir, city["bank"], "uscc", out, "bank-a", quiet=True, points=True)
    scores = read_csv(out).slice(0, 1000)
    p = scores.column("score").to_numpy()
    points = scores.column("points").to_numpy()
    scaling = Scaling(600, 50, 20)
    # the points and the probability come from one calibrated log-odds: for 1,000
    # applicants the PD the points imply is the reported PD
    assert len(p) == 1000
    np.testing.assert_allclose(probability_of(points, scaling), p, rtol=0, atol=1e-6)
    assert np.max(np.abs(probability_of(points, scaling) - p)) < 1e-9
    # the bureau keeps its own points: the bank's model file holds only the bank's
    bank_card = load_model(model_dir)["scorecard"]
    assert {row["feature"] for row in bank_card["points"]} <= {
        c["name"] for c in load_model(model_dir)["recipe"]
    }


def test_toolkit_command_lines_for_scripts(city, bureau, tmp_path):
    address = f"127.0.0.1:{bureau.port}"
    bank_cli = "bank_node.cli"
    iv = run_cli(
        bank_cli,
        "iv",
        "--insecure",
        "--bureau",
        address,
        "--data",
        str(city["bank"]),
        "--id-column",
        "uscc",
        "--label",
        "y",
        "--out",
        str(tmp_path / "iv.csv"),
        "--key-bits",
        "768",
        "--allow-test-keys",
        "--bank-id",
        "bank-cli",
        "--json",
    )
    assert iv.returncode == 0, iv.stderr
    assert iv.stderr == "" and len(iv.stdout.strip().splitlines()) == 1  # --json: JSON only
    assert last_json(iv.stdout)["features"] == 22
    model = tmp_path / "model"
    train = run_cli(
        bank_cli,
        "train",
        "--insecure",
        "--bureau",
        address,
        "--data",
        str(city["bank"]),
        "--id-column",
        "uscc",
        "--label",
        "y",
        "--model-dir",
        str(model),
        "--key-bits",
        "768",
        "--allow-test-keys",
        "--bank-id",
        "bank-cli",
        "--min-iv",
        "0.02",
        "--epochs",
        "3",
        "--compare-bank-only",
        "--quiet",
    )
    assert train.returncode == 0, train.stderr
    summary = last_json(train.stdout)
    chosen = load_model(model)["bureau_features"]
    rows = read_csv(model / "iv.csv").to_pylist()
    # exactly the bureau features whose (noisy) IV reached the threshold: which ones that is
    # moves with the bureau's noise near 0.02, the rule does not
    strong = {r["feature"] for r in rows if r["party"] == "bureau" and r["iv"] >= 0.02}
    assert chosen and set(chosen) == strong
    # the table `iv` wrote, read again instead of a second request: no budget spent
    again = run_cli(
        bank_cli,
        *("train", "--insecure", "--bureau", address, "--data", str(city["bank"])),
        *("--id-column", "uscc", "--label", "y", "--model-dir", str(tmp_path / "again")),
        *("--key-bits", "768", "--allow-test-keys", "--bank-id", "bank-cli", "--epochs", "1"),
        *("--min-iv", "0.02", "--iv-table", str(tmp_path / "iv.csv"), "--quiet"),
    )
    assert again.returncode == 0, again.stderr
    given = read_csv(tmp_path / "iv.csv").to_pylist()
    expected = {r["feature"] for r in given if r["party"] == "bureau" and r["iv"] >= 0.02}
    assert set(load_model(tmp_path / "again")["bureau_features"]) == expected
    assert not (tmp_path / "again" / "iv.csv").exists()
    card = run_cli(
        bank_cli,
        "scorecard",
        "--insecure",
        "--model-dir",
        str(model),
        "--bank-id",
        "bank-cli",
        "--json",
    )
    assert card.returncode == 0, card.stderr
    assert last_json(card.stdout)["bureau_bins"] > 0
    report = run_cli(
        bank_cli, "report", "--model-dir", str(model), "--out", str(tmp_path / "r.html"), "--json"
    )
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "r.html").read_text().count("<img") >= 5
    assert summary["model_id"] in (tmp_path / "r.html").read_text()
    bad = run_cli(
        bank_cli,
        "scorecard",
        "--insecure",
        "--model-dir",
        str(model),
        "--bank-id",
        "bank-cli",
        "--pdo",
        "-5",
    )
    assert bad.returncode == 2 and "pdo" in bad.stderr


def test_predict_warns_when_a_column_is_in_another_unit_than_the_training_file(
    trained, city, bureau, tmp_path
):
    """A review trained on "72.3%" (read 0.723) and scored a file holding 72.3: every
    score changed, without a word. Most values beyond the training range are said."""
    _, model_dir = trained
    model = json.loads((model_dir / "model.json").read_text())
    numeric = next(c["name"] for c in model["recipe"] if c["kind"] == "numeric")
    applicants = read_csv(city["bank"]).slice(0, 200)
    scaled = pc.multiply(pc.cast(applicants.column(numeric), pa.float64()), 10_000)
    moved = applicants.set_column(applicants.column_names.index(numeric), numeric, scaled)
    said: list[str] = []
    for table, expected in ((applicants, 0), (moved, 1)):
        path = tmp_path / f"applicants-{expected}.csv"
        pacsv.write_csv(table, path)
        summary = predict_job(f"127.0.0.1:{bureau.port}", model_dir, path, "uscc",
                              tmp_path / f"s{expected}.csv", "bank-a", quiet=True,
                              say=said.append)  # fmt: skip
        assert len(summary["warnings"]) == expected
    assert f"column {numeric!r}" in summary["warnings"][0] and "another unit" in said[-1]


@pytest.mark.parametrize("neutral", [math.nan, -1e6])
def test_a_neutral_score_out_of_bounds_from_the_bureau_is_refused(
    city, bureau, tmp_path, monkeypatch, neutral
):
    """A hostile bureau finished a job with a neutral score of NaN (written into model.json,
    no longer strict JSON) or -1e6 (every applicant it does not hold approved): the score of
    everyone it does not know. Bounded as its other scores are: refused at FinishTraining,
    no model saved, and the job's checkpoint (its key) gone, as the job has ended."""
    from bank_node import client as bank_client

    opened = bank_client.BureauConnection.__init__

    def hostile(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened(self, *args, **kwargs)
        finish = self.training.FinishTraining

        def finished(*call_args, **call_kwargs):  # type: ignore[no-untyped-def]
            answer = finish(*call_args, **call_kwargs)
            answer.neutral_score = neutral
            return answer

        self.training.FinishTraining = finished

    monkeypatch.setattr(bank_client.BureauConnection, "__init__", hostile)
    model_dir = tmp_path / "m"
    with pytest.raises(ProtocolViolation, match="neutral score .* is not a score") as refused:
        train_job(
            f"127.0.0.1:{bureau.port}", city["bank"], "uscc", "y", model_dir, "bank-a",
            epochs=1, seed=4, quiet=True, workers=0, **TEST_KEYS,
            bureau_features=["debt_ratio", "tax_paid_12m_10k_cny", "insured_employees"],
        )  # fmt: skip
    assert not (model_dir / "model.json").exists()
    assert not (model_dir / "checkpoint.json").exists()
    # the command that deletes the model the bureau kept works as said
    kept = re.search(r"models delete ([0-9a-f]{32})", str(refused.value))
    assert kept is not None
    ModelStore(bureau.store.root).delete("bank-a", kept.group(1))


def _hostile_catalogue(kind: str, description: str):  # type: ignore[no-untyped-def]
    """A bureau whose catalogue has one feature of this kind and description."""
    from concurrent import futures

    import grpc

    from xinrong.v1 import model_pb2 as mpb
    from xinrong.v1 import model_pb2_grpc

    class Catalogue(model_pb2_grpc.CatalogueServicer):
        def ListFeatures(self, request, context):  # type: ignore[no-untyped-def]
            feature = mpb.FeatureInfo(name="debt_ratio", kind=kind, description=description)
            return mpb.FeatureCatalogue(enterprises=1, features=[feature])

    server = grpc.server(futures.ThreadPoolExecutor(2))
    model_pb2_grpc.add_CatalogueServicer_to_server(Catalogue(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def test_a_catalogue_kind_a_terminal_would_run_is_refused(capsys):
    """A hostile bureau's catalogue carried terminal escape sequences in a feature's kind:
    `bank-node features` printed them raw on the operator's terminal. Kinds are numeric or
    category, anything else is refused, shown escaped."""
    from bank_node import cli as bank_cli

    server, address = _hostile_catalogue("numeric\x1b[2J\x1b]0;owned\x07", "fine")
    try:
        with pytest.raises(ProtocolViolation, match=re.escape("of kind 'numeric\\x1b")):
            list_features(address, "bank-a")
        assert bank_cli.main(["features", "--bureau", address, "--insecure"]) == 2
        out, err = capsys.readouterr()
        assert "\x1b" not in out + err and "is of kind" in err
    finally:
        server.stop(None)


@pytest.mark.parametrize(
    ("description", "shown"),
    [
        ("ok\r\x1b[1A\x1b[31mFAKE: bureau certified\x1b[0m", "ok  [1A [31mFAKE"),
        ("x" * 600, "x" * 499 + "…"),
        ('=HYPERLINK("http://x","click")', "'=HYPERLINK"),
        ("assets /\nliabilities, from the\tlast statement", "assets / liabilities, from the last"),
        ("-1 if unknown", "-1 if unknown"),
    ],
    ids=["escapes", "long", "formula", "line-break", "prose"],
)
def test_a_catalogue_description_is_shown_cleaned_never_as_the_bureau_sent_it(
    description, shown, capsys
):
    """A hostile bureau's descriptions carried terminal escapes (clearing the screen, faking
    lines) and a spreadsheet formula. Refused at first, one honest description with a line
    break then stopped every bank's training (a review): a description is cleaned instead,
    control characters as spaces, a long one cut, a formula's first character quoted."""
    from bank_node import cli as bank_cli

    server, address = _hostile_catalogue("numeric", description)
    try:
        (feature,) = list_features(address, "bank-a")
        assert feature["description"].startswith(shown)
        assert feature["description"].isprintable() and len(feature["description"]) <= 500
        assert bank_cli.main(["features", "--bureau", address, "--insecure"]) == 0
        out, err = capsys.readouterr()
        assert "\x1b" not in out + err and "\r" not in out + err
    finally:
        server.stop(None)


def test_applicants_the_bureau_does_not_hold_keep_the_mean_probability(city, trained, tmp_path):
    """A review's bank-only fallback scored the model's own training file at 0.060 a default,
    where 8.5% had defaulted (the bank alone: 0.087): the bureau's mean score went inside
    the sigmoid, which is convex where defaults are rare. The neutral part keeps the
    training rows' mean probability."""
    import contextlib
    import socket

    from protocols.ids import IdType, normalise_column

    _, model_dir = trained
    model = json.loads((model_dir / "model.json").read_text())
    with contextlib.closing(socket.socket()) as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    predict_job(f"127.0.0.1:{port}", model_dir, city["bank"], "uscc", tmp_path / "s.csv",
                "bank-a", quiet=True, fallback="bank-only")  # fmt: skip
    scored = read_csv(tmp_path / "s.csv")
    ids = normalise_column(scored.column("uscc").combine_chunks(), IdType.USCC).to_pylist()
    fallback = dict(zip(ids, scored.column("score").to_pylist(), strict=True))
    evaluation = read_csv(model_dir / "evaluation.csv").to_pylist()
    train = [r for r in evaluation if r["split"] == "train"]
    joint = np.mean([r["joint"] for r in train])
    alone = np.array([fallback[r["uscc"]] for r in train])
    assert abs(alone.mean() - joint) < 1e-3
    # what it was: the bureau's mean score inside the sigmoid, a lower mean probability
    a, b = model["calibration"]["slope"], model["calibration"]["intercept"]
    own = (np.log(alone / (1 - alone)) - b) / a - model["neutral_bureau_score"]
    before = 1 / (1 + np.exp(-(a * (own + model["bureau_mean_score"]) + b)))
    assert before.mean() < joint - 1e-3
