"""``build_report``: the page, section by section, in English or Chinese."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bank_node.metrics import evaluate
from protocols.binning import UNMEASURED
from protocols.errors import InputDataError
from protocols.optim import OptimizerConfig

from . import figures as fig
from .governance import read_bins, scorecard_section, sign_checks, weights_section
from .i18n import LANGUAGES, Texts
from .inputs import EVALUATION_FILE, Scores, read_evaluation, read_iv, read_model
from .markup import CSS, esc, facts, img, num, pct, signed, table
from .measures import (
    IV_BANDS,
    auc_interval,
    gain_interval,
    gini,
    iv_band,
    ks_curve,
    lift_table,
)


@dataclass
class Evaluated:
    """The rows the page is about and the measures on them."""

    split: np.ndarray
    scores: Scores
    s: Scores  # the evaluated subset
    on: str  # "validation" or "train"
    measured: dict[tuple[str, str], dict[str, Any]]
    joint: dict[str, Any]
    bank: dict[str, Any] | None
    gain: float | None
    auc_ci: tuple[float, float] | None = None  # DeLong's 95% interval of the joint AUC
    gain_ci: tuple[float, float] | None = None  # and of the gain, when bank-only rows exist

    @property
    def both_classes(self) -> bool:
        return bool(0 < self.s.y.sum() < len(self.s.y))


def _evaluate(model: dict[str, Any], model_dir: Path) -> Evaluated:
    split, scores = read_evaluation(model_dir, model.get("id_column"))
    train_mask, validation_mask = split == "train", split == "validation"
    on = "validation" if validation_mask.any() else "train"
    s = scores.subset(validation_mask if on == "validation" else train_mask)
    if len(s.y) == 0:
        raise InputDataError(
            f"{model_dir / EVALUATION_FILE}: no rows with split 'validation' or 'train'"
        )
    measured: dict[tuple[str, str], dict[str, Any]] = {
        ("joint", "train"): evaluate(scores.y[train_mask], scores.joint[train_mask]),
        ("joint", "validation"): evaluate(scores.y[validation_mask], scores.joint[validation_mask]),
    }
    if scores.bank_only is not None:
        for name, mask in (("train", train_mask), ("validation", validation_mask)):
            measured[("bank_only", name)] = evaluate(scores.y[mask], scores.bank_only[mask])
    joint = measured[("joint", on)]
    bank: dict[str, Any] | None = measured.get(("bank_only", on))
    if bank is None and isinstance(model.get("metrics", {}).get("bank_only"), dict):
        # no per-row bank-only scores: the model file's figures, on the split it names
        bank = dict(model["metrics"]["bank_only"])
        if bank.get("evaluated_on", "validation") != on:
            bank = None
    gain = (
        None
        if bank is None or joint["auc"] is None or bank.get("auc") is None
        else (joint["auc"] - bank["auc"])
    )
    auc_ci = gain_ci = None
    bads = int(s.y.sum())
    if 2 <= bads <= len(s.y) - 2:  # a committee reads a gain on 17 bads as established
        auc_ci = auc_interval(s.y, s.joint)
        if s.bank_only is not None and gain is not None:
            gain_ci = gain_interval(s.y, s.joint, s.bank_only)
    return Evaluated(split, scores, s, on, measured, joint, bank, gain, auc_ci, gain_ci)


def _interval(
    bounds: tuple[float, float] | None, t: Texts, form: Callable[[float], str] = signed
) -> str:
    """A card's 95% interval, as a committee reads it under the figure ("" for none)."""
    if bounds is None:
        return ""
    return t("95% CI {low} to {high}", low=form(bounds[0]), high=form(bounds[1]))


def _count_bank_features(model: dict[str, Any]) -> tuple[int, int]:
    """(source features, model columns) of the bank's half."""
    columns = [c for c in model.get("columns", []) if c != "(intercept)"]
    recipe = model.get("recipe")
    features = len(recipe) if isinstance(recipe, list) else len(columns)
    return features, len(columns)


def _header(model: dict[str, Any], e: Evaluated, title: str, t: Texts) -> str:
    history = list(model.get("history") or [])
    kept = model.get("epoch")
    bank_features, bank_columns = _count_bank_features(model)
    n_train, n_validation = int((e.split == "train").sum()), int((e.split == "validation").sum())
    epochs = t("{n} run", n=len(history))
    if isinstance(kept, int):
        epochs += t(", epoch {epoch} kept", epoch=kept + 1)
    parts = [
        f"<header><h1>{esc(title)}</h1>",
        f"<p class=sub>{esc(t('subtitle'))}</p>",
        facts(
            [
                (t("Model ID"), str(model.get("model_id", "–"))),
                (t("Created (UTC)"), str(model.get("created", "–"))),
                (t("Bank"), str(model.get("bank_id", "–"))),
                (
                    t("Matched clients"),
                    t(
                        "{total:,} ({train:,} train, {validation:,} validation)",
                        total=len(e.split),
                        train=n_train,
                        validation=n_validation,
                    ),
                ),
                (
                    t("Bank features"),
                    t("{n} ({columns} model columns)", n=bank_features, columns=bank_columns),
                ),
                (t("Bureau features"), str(len(model.get("bureau_features") or []))),
                (t("Epochs"), epochs),
                (t("Label"), str(model.get("label", "–"))),
            ]
        ),
    ]
    lift = lift_table(e.s.y, e.s.joint)
    cards = [
        (num(e.joint["auc"]), t("AUC, {split}", split=t(e.on)), _interval(e.auc_ci, t, num)),
        (num(gini(e.joint["auc"])), t("Gini (2·AUC − 1)")),
        (num(e.joint["ks"]), "KS"),
        (
            pct(float(e.s.y.mean())),
            t("Bad rate ({bads:,} of {n:,})", bads=int(e.s.y.sum()), n=len(e.s.y)),
        ),
    ]
    if lift and e.both_classes:
        cards.append((pct(lift[0]["captured"]), t("Bads in the riskiest 10%")))
    if e.gain is not None:
        cards.append((signed(e.gain), t("AUC added by the bureau"), _interval(e.gain_ci, t)))
    parts.append(
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class=v>{esc(c[0])}</div><div class=k>{esc(c[1])}</div>'
            + (f"<div class=ci>{esc(c[2])}</div>" if len(c) > 2 and c[2] else "")
            + "</div>"
            for c in cards
        )
        + "</div></header>"
    )
    if e.gain_ci is not None and e.gain_ci[0] <= 0:
        low, high = e.gain_ci
        text = t("gain-not-established", bads=int(e.s.y.sum()), low=signed(low), high=signed(high))
        parts.append(f'<p class="note" id="gain-not-established">{esc(text)}</p>')
    if e.on == "train":
        parts.append(f'<p class="note" id="train-fallback">{esc(t("train-fallback"))}</p>')
    else:
        parts.append(f"<p class=muted>{esc(t('on-validation', n=n_validation))}</p>")
    if model.get("converged") is False:
        parts.append(f'<p class="note" id="not-converged">{esc(t("not-converged"))}</p>')
    return "".join(parts)


def _metrics_section(
    model: dict[str, Any],
    e: Evaluated,
    t: Texts,
    compare: dict[str, dict[str, Any]] | None = None,
) -> str:
    rows, classes = [], []
    named = {"joint": t("Joint model (bank + bureau)"), "bank_only": t("Bank-only model")}
    for (name, part), m in e.measured.items():
        if m["rows"] == 0:
            continue
        rows.append(
            [
                esc(named[name]),
                esc(t(part)),
                f"{m['rows']:,}",
                num(m["auc"]),
                num(gini(m["auc"])),
                num(m["ks"]),
                num(m["log_loss"], 4),
            ]
        )
        classes.append("")
    bank = e.bank
    if e.scores.bank_only is None and bank is not None:
        rows.append(
            [
                esc(named["bank_only"] + t(" (from model.json)")),
                esc(t(e.on)),
                f"{int(bank.get('rows') or 0):,}",
                num(bank.get("auc")),
                num(gini(bank.get("auc"))),
                num(bank.get("ks")),
                num(bank.get("log_loss"), 4),
            ]
        )
        classes.append("")
    if e.gain is not None and bank is not None:
        joint = e.joint
        ks_gain = (
            None if joint["ks"] is None or bank.get("ks") is None else joint["ks"] - bank["ks"]
        )
        # a gain is what gets better: the log-loss's is its fall (a review's committee read
        # a worse log-loss, printed +0.0013 beside the AUC's gain, as a gain)
        loss_gain = (
            None
            if joint["log_loss"] is None or bank.get("log_loss") is None
            else bank["log_loss"] - joint["log_loss"]
        )
        rows.append(
            [
                esc(t("What the bureau adds (joint − bank-only; log-loss: bank-only − joint)")),
                esc(t(e.on)),
                "",
                signed(e.gain),
                signed(2 * e.gain),
                signed(ks_gain),
                signed(loss_gain, 4),
            ]
        )
        classes.append("gain")
    for other_name, other in (compare or {}).items():
        rows.append(
            [
                esc(other_name),
                esc(t(e.on)),
                f"{int(other.get('rows') or 0):,}",
                num(other.get("auc")),
                num(gini(other.get("auc"))),
                num(other.get("ks")),
                num(other.get("log_loss"), 4),
            ]
        )
        classes.append("")
        if e.joint["auc"] is not None and other.get("auc") is not None:
            added = e.joint["auc"] - other["auc"]
            ks_added = (
                None
                if e.joint["ks"] is None or other.get("ks") is None
                else e.joint["ks"] - other["ks"]
            )
            rows.append(
                [
                    esc(t("What the joint model adds over: {name}", name=other_name)),
                    esc(t(e.on)),
                    "",
                    signed(added),
                    signed(2 * added),
                    signed(ks_added),
                    "",
                ]
            )
            classes.append("gain")
    parts = [
        f"<section id=metrics><h2>{esc(t('Discrimination and calibration'))}</h2>",
        table(
            [t("Model"), t("Split"), t("Clients"), "AUC", t("Gini"), "KS", t("Log-loss")],
            rows,
            "metrics-table",
            row_classes=classes,
            text_columns=(0, 1),
        ),
    ]
    explain = t("metrics-explain")
    if e.scores.bank_only is None and bank is None:
        explain += " " + t("no-bank-only")
    parts.append(f"<p class=muted>{esc(explain)}</p>")
    recorded = (model.get("metrics") or {}).get(e.on) or {}
    if (
        recorded.get("auc") is not None
        and e.joint["auc"] is not None
        and abs(recorded["auc"] - e.joint["auc"]) > 1e-3
    ):
        mismatch = t(
            "auc-mismatch", split=t(e.on), recorded=num(recorded["auc"]), got=num(e.joint["auc"])
        )
        parts.append(f'<p class="note">{esc(mismatch)}</p>')
    parts.append("</section>")
    return "".join(parts)


def _curves_section(e: Evaluated, t: Texts) -> tuple[str, int]:
    s, joint, bank = e.s, e.joint, e.bank
    scope = t("{split} rows, {n:,} clients", split=t(e.on), n=len(s.y))
    parts = [f"<section id=curves><h2>{esc(t('ROC and KS'))}</h2>"]
    if not e.both_classes:
        parts.append(f'<p class="note">{esc(t("one-class"))}</p></section>')
        return "".join(parts), 0
    ks = ks_curve(s.y, s.joint)
    roc_alt = t("ROC curve: true positive rate against false positive rate for the joint model")
    if s.bank_only is not None and bank is not None:
        roc_alt += t(
            " (AUC {joint}) and the bank-only model (AUC {bank})",
            joint=num(joint["auc"]),
            bank=num(bank["auc"]),
        )
    else:
        roc_alt += t(" (AUC {joint})", joint=num(joint["auc"]))
    parts.append('<div class="pair">')
    parts.append(
        img(
            fig.roc_figure(s, t),
            roc_alt + t(", with the diagonal of a random score"),
            t("ROC curve ({scope}). The further above the diagonal, the better.", scope=scope),
            "fig-roc",
        )
    )
    parts.append(
        img(
            fig.ks_figure(s, ks, t),
            t(
                "ks-alt",
                ks=ks["ks"],
                at=ks["at_population"] * 100,
            ),
            t(
                "KS curve ({scope}). The vertical bar marks the largest gap (the KS).",
                scope=scope,
            ),
            "fig-ks",
        )
    )
    parts.append("</div></section>")
    return "".join(parts), 2


def _distribution_and_lift(e: Evaluated, t: Texts) -> tuple[str, int]:
    s = e.s
    scope = t("{split} rows, {n:,} clients", split=t(e.on), n=len(s.y))
    figures = 1
    parts = [
        f"<section id=distribution><h2>{esc(t('Score distribution'))}</h2>",
        img(
            fig.distribution_figure(s, t),
            t("distribution-alt"),
            t("distribution-caption", scope=scope),
            "fig-distribution",
        ),
        f"</section><section id=lift><h2>{esc(t('Lift and gain by decile'))}</h2>",
    ]
    lift = lift_table(s.y, s.joint)
    parts.append(
        f"<p>{esc(t('lift-intro', groups=len(lift), rate=pct(float(s.y.mean()))))}</p>"
        + _lift_table(lift, t)
    )
    if e.both_classes:
        alt = t("gain-alt")
        if s.bank_only is not None:
            alt += t(" and bank-only model")
        parts.append(
            img(
                fig.gain_figure(s, lift, t),
                alt + t(", with random and perfect lines"),
                t("Gain chart ({scope}).", scope=scope),
                "fig-gain",
            )
        )
        figures += 1
    parts.append("</section>")
    return "".join(parts), figures


def _lift_table(lift: list[dict[str, Any]], t: Texts) -> str:
    rows = [
        [
            str(r["decile"]) + (t(" (riskiest)") if r["decile"] == 1 else ""),
            f"{num(r['p_min'])} – {num(r['p_max'])}",
            f"{r['count']:,}",
            f"{r['bads']:,}",
            pct(r["bad_rate"]),
            pct(r["captured"]),
            num(r["lift"], 2),
            num(r["cumulative_lift"], 2),
        ]
        for r in lift
    ]
    headers = [
        t("Decile"),
        t("Predicted PD"),
        t("Clients"),
        t("Bads"),
        t("Bad rate"),
        t("Cumulative % of bads"),
        t("Lift"),
        t("Cumulative lift"),
    ]
    return table(headers, rows, "lift-table")


def _iv_section(iv_rows: list[dict[str, Any]] | None, iv_path: Path | None, t: Texts) -> str:
    if iv_rows is None:
        return f"<p class=muted id=iv-none>{esc(t('iv-none'))}</p>"
    top = max((r["iv"] for r in iv_rows if math.isfinite(r["iv"])), default=0.0) or 1.0
    rows, counts = [], {"bank": 0, "bureau": 0}
    for r in iv_rows:
        party = str(r.get("party") or "")
        if party in counts:
            counts[party] += 1
        # the IV table's own word where the noise left nothing to measure
        band = UNMEASURED if r.get("strength") == UNMEASURED else iv_band(r["iv"])
        width = 0 if not math.isfinite(r["iv"]) else max(1, round(90 * min(r["iv"], top) / top))
        cls = "band-" + band.split(" (")[0].replace(" ", "-")
        rows.append(
            [
                esc(r["feature"]),
                f'<span class="party party-{esc(party)}">{esc(t(party))}</span>' if party else "",
                esc(t(r.get("kind") or "")),
                esc(r.get("bins") if r.get("bins") is not None else ""),
                num(r["iv"], 4),
                f'<span class="bar" style="width:{width}px"></span>',
                f'<span class="{cls}">{esc(t(band))}</span>',
            ]
        )
    lows = [0.0] + [bound for bound, _ in IV_BANDS[:-1]]
    bands = "; ".join(
        f"{t(label)} {low:g}–{bound:g}" if math.isfinite(bound) else f"{t(label)} ≥ {low:g}"
        for low, (bound, label) in zip(lows, IV_BANDS)
    )
    source = t(" (from {name})", name=iv_path.name) if iv_path is not None else ""
    intro = t(
        "iv-intro", n=len(iv_rows), source=source, bank=counts["bank"], bureau=counts["bureau"]
    )
    return (
        f"<p>{esc(intro)}</p>"
        + table(
            [t("Feature"), t("Party"), t("Kind"), t("Bins"), t("IV"), "", t("Strength")],
            rows,
            "iv-table",
            text_columns=(0, 1, 2, 6),
        )
        + f"<p class=muted>{esc(t('iv-bands', bands=bands))}</p>"
    )


def _history_section(model: dict[str, Any], t: Texts) -> tuple[str, int]:
    history = list(model.get("history") or [])
    kept = model.get("epoch")
    parts = [f"<section id=history><h2>{esc(t('Training history'))}</h2>"]
    figures = 0
    if history:
        parts.append(
            img(
                fig.history_figure(history, kept if isinstance(kept, int) else None, t),
                t("history-alt", n=len(history)),
                t("history-caption"),
                "fig-history",
            )
        )
        figures = 1
    else:
        parts.append(f"<p class=muted>{esc(t('model.json records no training history.'))}</p>")
    settings = model.get("settings") or {}
    if settings:
        shown = [
            (t("Seed"), settings.get("seed")),
            (t("Batch size"), settings.get("batch_size")),
            (t("Max epochs"), settings.get("max_epochs")),
            (t("Validation fraction"), settings.get("validation_fraction")),
            (t("Paillier key bits"), settings.get("key_bits")),
            (t("Early-stopping patience"), settings.get("patience")),
        ]
        optimizer = settings.get("optimizer")
        if isinstance(optimizer, dict):  # the settings a modeller compares, not a dump
            optimizer = {**dataclasses.asdict(OptimizerConfig()), **optimizer}
            text = t(
                "{name}, learning rate {rate} (divided by 1 + {decay} x epoch), "
                "{penalty} penalty {alpha}",
                name={"adam": "Adam", "sgd": "SGD"}.get(str(optimizer.get("name")), "?"),
                rate=optimizer.get("learning_rate"),
                decay=optimizer.get("decay"),
                penalty=str(optimizer.get("penalty", "")).upper(),
                alpha=optimizer.get("alpha"),
            )
            shown.append((t("Optimizer"), text))
        parts.append(facts([(k, str(v)) for k, v in shown if v is not None]))
    bureau_features = list(model.get("bureau_features") or [])
    if bureau_features:
        used = t("Bureau features used: {names}.", names=", ".join(bureau_features))
        parts.append(f"<p class=muted>{esc(used)}</p>")
    parts.append("</section>")
    return "".join(parts), figures


def build_report(
    model_dir: str | Path,
    out: str | Path,
    iv_table: str | Path | None = None,
    title: str | None = None,
    lang: str = "en",
    compare: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write one self-contained HTML report of the model in ``model_dir`` to ``out``, in
    English (``lang="en"``) or Chinese (``"zh"``).

    ``compare`` adds other models trained on the same split to the metrics table, by name,
    each with ``auc``, ``ks``, ``log_loss`` and ``rows`` on the evaluated split, and a row
    of what the joint model adds over each (the demo compares the joint model without the
    bureau's graph features this way).

    Returns ``path``, ``figures`` (how many), ``evaluated_on`` (``"validation"``, or
    ``"train"`` when no rows were held back), ``rows`` evaluated, and the measures shown:
    ``auc``, ``ks``, ``log_loss`` of the joint model, ``bank_only_auc``, ``bank_only_ks``
    and ``auc_gain`` (joint minus bank-only) when the bank-only scores are there, and
    ``sign_flags`` (bank features whose weight contradicts their WOE trend).
    Raises ``InputDataError`` when an input is missing or malformed.
    """
    if lang not in LANGUAGES:
        raise InputDataError(f"--lang must be one of {', '.join(LANGUAGES)}, not {lang!r}")
    t = Texts(lang)
    model_dir, out = Path(model_dir), Path(out)
    model = read_model(model_dir)
    e = _evaluate(model, model_dir)
    iv_path = Path(iv_table) if iv_table is not None else None
    iv_rows = read_iv(iv_path) if iv_path is not None else None
    checks = sign_checks(model, read_bins(iv_path))
    page_title = title or t("Joint credit model {id}", id=model.get("model_id", "")).strip()

    with fig.fonts_for(lang):
        curves, n_curves = _curves_section(e, t)
        distribution, n_distribution = _distribution_and_lift(e, t)
        history, n_history = _history_section(model, t)
    parts = [
        _header(model, e, page_title, t),
        _metrics_section(model, e, t, compare),
        curves,
        distribution,
        f"<section id=iv><h2>{esc(t('Information value of the features'))}</h2>",
        _iv_section(iv_rows, iv_path, t),
        f"</section><section id=weights><h2>{esc(t('The bank’s weights'))}</h2>",
        weights_section(model, checks, t),
        f"</section><section id=scorecard><h2>{esc(t('Scorecard'))}</h2>",
        scorecard_section(model, t),
        "</section>",
        history,
        f"<footer>{esc(t('footer', when=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())))}"
        "</footer>",
    ]
    document = (
        f"<!DOCTYPE html>\n<html lang={t.html_lang}><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(page_title)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    tmp.write_text(document, encoding="utf-8")
    tmp.replace(out)
    summary: dict[str, Any] = {
        "path": str(out),
        "lang": lang,
        "figures": n_curves + n_distribution + n_history,
        "evaluated_on": e.on,
        "rows": len(e.s.y),
        "auc": e.joint["auc"],
        "ks": e.joint["ks"],
        "log_loss": e.joint["log_loss"],
        "sign_flags": [c["feature"] for c in checks if c["agrees"] is False],
    }
    if e.bank is not None:
        summary.update(
            bank_only_auc=e.bank.get("auc"),
            bank_only_ks=e.bank.get("ks"),
            auc_gain=None if e.gain is None else round(e.gain, 6),
        )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bank_node.report", description="HTML report of a trained joint model"
    )
    parser.add_argument("model_dir", help="the directory 'bank-node train' wrote")
    parser.add_argument("out", help="the HTML file to write")
    parser.add_argument("--iv-table", help="information-value table (CSV)")
    parser.add_argument("--title")
    parser.add_argument("--lang", choices=LANGUAGES, default="en")
    args = parser.parse_args(argv)
    try:
        summary = build_report(args.model_dir, args.out, args.iv_table, args.title, args.lang)
    except InputDataError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0
