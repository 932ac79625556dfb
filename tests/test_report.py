"""The HTML model report: built from a hand-made model directory (no bureau, no network),
then opened in headless Chromium to check that every figure and table really renders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from bank_node.report import build_report, iv_band, lift_table
from bank_node.toolkit import UNMEASURED
from protocols.errors import InputDataError

BANK_FEATURES = ["income", "age", "loan_amount", "region"]
BUREAU_FEATURES = ["tax_arrears", "court_cases", "registered_capital", "years_active"]

IV = [
    ("tax_arrears", "bureau", "numeric", 10, 0.61),
    ("income", "bank", "numeric", 10, 0.34),
    ("court_cases", "bureau", "numeric", 5, 0.21),
    ("loan_amount", "bank", "numeric", 10, 0.12),
    ("years_active", "bureau", "numeric", 10, 0.05),
    ("region", "bank", "category", 7, 0.03),
    ("registered_capital", "bureau", "numeric", 10, 0.008),
    # merged into one bin to carry the bureau's noise: unmeasured, not "not predictive"
    ("abnormal_operation", "bureau", "numeric", 1, 0.0, UNMEASURED),
]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def test_the_bureaus_gain_in_log_loss_is_its_fall(report):
    """A review's committee read a worse log-loss, printed +0.0013 beside the AUC's gain,
    as a gain. Every figure of the row is what got better: the log-loss's is its fall."""
    import re

    _, path = report
    page = path.read_text()
    row = page[page.index('class="gain"') :]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row[: row.index("</tr>")])
    assert cells[3].startswith("+") and cells[-1].startswith("+"), cells  # AUC and log-loss


def make_model_dir(root: Path, rows: int = 5000, validation: float = 0.2, seed: int = 7) -> Path:
    """What ``bank-node train --compare-bank-only`` leaves behind, with made-up numbers:
    the bureau's signal makes the joint model better than the bank's alone."""
    rng = np.random.default_rng(seed)
    bank_signal, bureau_signal = rng.normal(size=rows), rng.normal(size=rows)
    y = rng.binomial(1, _sigmoid(-2.4 + 0.8 * bank_signal + 0.9 * bureau_signal))
    joint = _sigmoid(-2.4 + 0.75 * bank_signal + 0.85 * bureau_signal + rng.normal(0, 0.2, rows))
    bank_only = _sigmoid(-2.2 + 0.7 * bank_signal + rng.normal(0, 0.2, rows))
    split = np.where(rng.random(rows) < validation, "validation", "train")
    ids = [f"91110000{i:09d}X" for i in range(rows)]
    model_dir = root / "model"
    model_dir.mkdir(parents=True)
    pacsv.write_csv(
        pa.table(
            {
                "uscc": ids,
                "split": split.tolist(),
                "y": pa.array(y, pa.int8()),
                "joint": joint,
                "bank_only": bank_only,
            }
        ),
        model_dir / "evaluation.csv",
    )
    history = [
        {
            "epoch": e,
            "train_loss": 0.52 - 0.18 * (1 - 0.55**e),
            "validation_loss": 0.53 - 0.17 * (1 - 0.55**e) + 0.012 * max(0, e - 4),
            "seconds": 12.5 + e,
            "counts": {"encryptions": 1000 * (e + 1)},
        }
        for e in range(7)
    ]
    model = {
        "format": "xinrong-bank-model/1",
        "model_id": "0123456789abcdef0123456789abcdef",
        "created": "2025-03-14T09:26:53Z",
        "bureau": "bureau.example:7443",
        "bank_id": "bank-<a>&co",  # must come out escaped
        "id_column": "uscc",
        "id_type": "uscc",
        "label": "default_12m",
        "psi_session_id": "feedface" * 4,
        "columns": ["(intercept)", "income", "age", "loan_amount", "region=north", "region=south"],
        "weights": [-2.4, 0.5, 0.1, 0.3, 0.2, -0.1],
        "recipe": [{"name": n, "kind": "numeric"} for n in BANK_FEATURES],
        "bureau_features": BUREAU_FEATURES,
        "neutral_bureau_score": 0.0,
        "epoch": 4,
        "history": history,
        "metrics": {},
        "settings": {
            "seed": seed,
            "batch_size": 1024,
            "max_epochs": 10,
            "validation_fraction": validation,
            "key_bits": 3072,
            "optimizer": {"name": "adam", "learning_rate": 0.05},
            "patience": 2,
        },
        "counts": {},
    }
    (model_dir / "model.json").write_text(json.dumps(model, indent=2))
    pacsv.write_csv(
        pa.table(
            {
                "feature": [r[0] for r in IV],
                "party": [r[1] for r in IV],
                "kind": [r[2] for r in IV],
                "bins": [r[3] for r in IV],
                "iv": [r[4] for r in IV],
                "strength": [r[5] if len(r) > 5 else iv_band(r[4]) for r in IV],
            }
        ),
        root / "iv.csv",
    )
    return model_dir


def _browser_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("report")
    model_dir = make_model_dir(root)
    summary = build_report(model_dir, root / "out" / "report.html", iv_table=root / "iv.csv")
    return summary, Path(summary["path"])


def test_summary_and_self_contained_html(report):
    summary, path = report
    assert summary["evaluated_on"] == "validation"
    assert summary["figures"] == 5
    assert 0.7 < summary["auc"] < 0.9
    assert summary["auc_gain"] > 0.03  # the bureau's signal shows
    page = path.read_text()
    assert "bank-&lt;a&gt;&amp;co" in page and "bank-<a>" not in page
    assert page.count('src="data:image/png;base64,') == 5
    # nothing fetched from anywhere: no external URLs, stylesheets or scripts
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page
    assert UNMEASURED in page  # the IV table's own word, not a band read off IV 0


def test_lift_table_deciles():
    rng = np.random.default_rng(0)
    p = rng.random(1003)
    y = rng.binomial(1, p)
    rows = lift_table(y, p)
    assert [r["decile"] for r in rows] == list(range(1, 11))
    assert sum(r["count"] for r in rows) == 1003
    assert rows[-1]["captured"] == pytest.approx(1.0)
    assert rows[0]["bad_rate"] > rows[-1]["bad_rate"]


def test_report_renders_in_chromium(report):
    browser_path = _browser_path()
    if browser_path is None:
        pytest.skip("no Chromium on PATH (apt-get install chromium) to render the report")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    summary, path = report
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(path.as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img",
                "els => els.map(e => ({alt: e.alt, complete: e.complete, w: e.naturalWidth,"
                " h: e.naturalHeight}))",
            )
            assert len(images) == 5
            for image in images:
                assert image["complete"] and image["w"] > 0 and image["h"] > 0, image
            alts = [image["alt"] for image in images]
            for expected in (
                "ROC curve",
                "KS curve",
                "Score distribution",
                "Gain chart",
                "Training history",
            ):
                assert sum(alt.startswith(expected) for alt in alts) == 1, (expected, alts)

            assert page.locator("#lift-table tbody tr").count() == 10
            assert page.locator("#lift-table tbody tr").first.inner_text().startswith("1")

            iv_text = page.locator("#iv-table").inner_text()
            for feature, *_ in IV:
                assert feature in iv_text
            assert page.locator("#iv-table tbody tr").count() == len(IV)

            metrics_text = page.locator("#metrics-table").inner_text()
            assert f"{summary['auc']:.3f}" in metrics_text
            assert f"{summary['bank_only_auc']:.3f}" in metrics_text
            assert f"{summary['auc_gain']:+.3f}" in metrics_text
            assert "bank-<a>&co" in page.locator("header").inner_text()
        finally:
            browser.close()


def test_falls_back_to_train_rows_without_validation(tmp_path):
    model_dir = make_model_dir(tmp_path, rows=800, validation=0.0)
    summary = build_report(model_dir, tmp_path / "r.html")
    assert summary["evaluated_on"] == "train" and summary["rows"] == 800
    page = (tmp_path / "r.html").read_text()
    assert 'id="train-fallback"' in page
    assert "id=iv-none" in page  # no IV table given


@pytest.mark.parametrize("missing", ["model.json", "evaluation.csv"])
def test_missing_inputs(tmp_path, missing):
    model_dir = make_model_dir(tmp_path, rows=200)
    (model_dir / missing).unlink()
    with pytest.raises(InputDataError, match=missing.replace(".", r"\.")):
        build_report(model_dir, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_missing_model_dir(tmp_path):
    with pytest.raises(InputDataError, match="no such model directory"):
        build_report(tmp_path / "nowhere", tmp_path / "r.html")


# ============================================================================================
# Governance and the Chinese report
# ============================================================================================

# WOE (log of the bad share over the good share) per bin, low values first: income and
# loan_amount rise with their positive weights; age falls against its positive weight.
WOE_BINS = {
    "income": [-0.6, -0.2, 0.1, 0.5],
    "age": [0.4, 0.1, -0.1, -0.3],
    "loan_amount": [-0.3, 0.0, 0.2, 0.1, 0.4],
}


def _governed_model_dir(root: Path) -> Path:
    model_dir = make_model_dir(root)
    # the bureau's feature of the same name as the bank's age agrees with its weight: a
    # review's report checked the bank's sign against it (default_credit's x0..x9)
    bins = [{"feature": k, "party": "bank", "woe": v} for k, v in WOE_BINS.items()]
    bins.append({"feature": "age", "party": "bureau", "woe": [-0.4, -0.1, 0.1, 0.3]})
    (root / "iv.bins.json").write_text(json.dumps(bins))
    model = json.loads((model_dir / "model.json").read_text())
    model["calibration"] = {"slope": 0.9, "intercept": -0.1}
    model["converged"] = False
    model["scorecard"] = {
        "base_score": 600.0,
        "pdo": 50.0,
        "base_odds": 20.0,
        "base_points": 512.3,
        "points": [
            {"feature": "income", "bin": "[-inf, 10)", "points": -12.5},
            {"feature": "income", "bin": "[10, inf)", "points": 8.25},
            {"feature": "region", "bin": "north", "points": 3.0},
        ],
    }
    (model_dir / "model.json").write_text(json.dumps(model))
    return model_dir


@pytest.fixture(scope="module")
def chinese(tmp_path_factory) -> tuple[dict, Path]:
    import warnings

    from bank_node.report.figures import cjk_font

    if cjk_font() is None:
        pytest.skip("no CJK font installed (apt-get install fonts-noto-cjk) for the figures")
    root = tmp_path_factory.mktemp("zh")
    model_dir = _governed_model_dir(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = build_report(model_dir, root / "zh.html", iv_table=root / "iv.csv", lang="zh")
    missing = [str(w.message) for w in caught if "missing from" in str(w.message).lower()]
    assert missing == []  # matplotlib drew every glyph of the figures (no tofu boxes)
    return summary, Path(summary["path"])


def test_weights_scorecard_and_sign_checks(tmp_path):
    model_dir = _governed_model_dir(tmp_path)
    summary = build_report(model_dir, tmp_path / "en.html", iv_table=tmp_path / "iv.csv")
    assert summary["sign_flags"] == ["age"]
    page = (tmp_path / "en.html").read_text()
    assert 'id="weights-table"' in page and 'id="scorecard-table"' in page
    assert "contradicts WOE" in page and 'id="sign-flags"' in page
    assert "512.30" in page and "-12.50" in page
    assert 'id="not-converged"' in page
    # 0.9 x 0.5: the calibrated weight of income
    assert "0.4500" in page
    # the optimizer as a modeller reads it, not a dump of its settings (a review)
    assert "Adam, learning rate 0.05 (divided by 1 + 0.5 x epoch), L2 penalty" in page
    assert "name=adam" not in page


def test_chinese_report_uses_chinese_credit_terms(chinese):
    summary, path = chinese
    assert summary["lang"] == "zh" and summary["figures"] == 5 and summary["sign_flags"] == ["age"]
    page = path.read_text(encoding="utf-8")
    assert "<html lang=zh-Hans>" in page
    for term in ("信息值", "违约概率", "评分卡", "坏样本率", "基尼系数", "提升度", "KS", "AUC"):
        assert term in page, term
    assert "与 WOE 趋势相反" in page and "模型未收敛" in page
    assert "未能测得" in page
    assert "Discrimination and calibration" not in page


def test_every_chinese_text_has_a_translation():
    from bank_node.report.i18n import EN, ZH

    assert set(EN) <= set(ZH)


def _font_file(family: str) -> tuple[str, int]:
    import subprocess

    out = subprocess.run(
        ["fc-match", "-f", "%{file}|%{index}", family], capture_output=True, text=True, check=True
    ).stdout
    path, index = out.rsplit("|", 1)
    return path, int(index or 0)


def _unrendered_characters(page) -> list[tuple[str, str]]:
    """(character, element text) for every visible character that none of the fonts
    Chromium used for its element has a glyph for: what a reader would see as a box."""
    from fontTools.ttLib import TTFont

    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument", {"depth": -1, "pierce": False})["root"]
    cmaps: dict[str, set[int]] = {}

    def covered(family: str) -> set[int]:
        if family not in cmaps:
            path, index = _font_file(family)
            font = TTFont(path, fontNumber=index, lazy=True)
            cmaps[family] = set(font.getBestCmap())
        return cmaps[family]

    missing: list[tuple[str, str]] = []

    def walk(node: dict) -> None:
        children = node.get("children", [])
        if node.get("nodeName") in ("STYLE", "SCRIPT", "HEAD", "TITLE"):
            return
        text = "".join(c.get("nodeValue", "") for c in children if c.get("nodeType") == 3)
        wanted = {ch for ch in text if not ch.isspace()}
        if wanted and node.get("nodeType") == 1:
            fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node["nodeId"]})["fonts"]
            have: set[int] = set()
            for f in fonts:
                have |= covered(f["familyName"])
            missing.extend((ch, text.strip()[:40]) for ch in sorted(wanted) if ord(ch) not in have)
        for child in children:
            walk(child)

    walk(root)
    return missing


def test_chinese_report_renders_without_missing_glyphs(chinese):
    browser_path = _browser_path()
    if browser_path is None:
        pytest.skip("no Chromium on PATH (apt-get install chromium) to render the report")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    summary, path = chinese
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(path.as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => e.complete && e.naturalWidth > 0)"
            )
            assert images == [True] * 5
            assert "信息值" in page.locator("#iv").inner_text()
            assert page.locator("#weights-table tbody tr").count() == 6
            assert page.locator("#scorecard-table tbody tr").count() == 4
            assert _unrendered_characters(page) == []
        finally:
            browser.close()


def test_the_auc_and_the_bureaus_gain_carry_their_interval(tmp_path):
    """A review's committee page showed +0.076 AUC from the bureau on 17 bads, with no
    interval: a bootstrap put it at -0.08 to +0.23. The cards now carry DeLong's 95%
    intervals, and a gain whose interval reaches zero is said not to be established."""
    big = build_report(make_model_dir(tmp_path / "big"), tmp_path / "big.html")
    page = Path(big["path"]).read_text()
    assert page.count("95% CI") == 2 and 'id="gain-not-established"' not in page
    small = make_model_dir(tmp_path / "small", rows=300, seed=11)  # 6 bads
    build_report(small, tmp_path / "small.html", lang="en")
    page = (tmp_path / "small.html").read_text()
    assert 'id="gain-not-established"' in page and "DeLong" in page


def test_delongs_interval_is_the_aucs_own_and_as_wide_as_a_bootstrap():
    """DeLong's AUCs are scikit-learn's (ties too), and the spread of the paired gain
    matches 2,000 bootstrap resamples of the same rows within 10%."""
    from sklearn.metrics import roc_auc_score

    from bank_node.report.measures import delong, gain_interval

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 600)
    joint = np.round(y + rng.normal(0, 1.2, 600), 1)  # ties
    bank = y + rng.normal(0, 2.0, 600)
    aucs, cov = delong(y, joint, bank)
    assert aucs == pytest.approx([roc_auc_score(y, joint), roc_auc_score(y, bank)], abs=1e-12)
    gains = []
    for _ in range(2000):
        i = rng.integers(0, 600, 600)
        gains.append(roc_auc_score(y[i], joint[i]) - roc_auc_score(y[i], bank[i]))
    low, high = gain_interval(y, joint, bank)
    assert (high - low) / (2 * 1.959964) == pytest.approx(np.std(gains), rel=0.1)
