"""The report's figures (matplotlib's Agg canvas, no pyplot), as base64 PNGs."""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from bank_node.metrics import evaluate
from protocols.errors import InputDataError

from .i18n import Texts
from .inputs import Scores
from .measures import gain_curve

JOINT_COLOUR, BANK_COLOUR = "#1f4e79", "#c55a11"
GOOD_COLOUR, BAD_COLOUR = "#2e7d32", "#c62828"
DPI = 110


# CJK families to draw Chinese with, by preference (Debian: fonts-noto-cjk), and file-name
# hints for fonts matplotlib's cache does not list yet (installed after it was built).
CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Source Han Sans SC",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Droid Sans Fallback",
)
CJK_FILE_HINTS = ("notosanscjk", "sourcehansans", "wqy", "droidsansfallback")


@functools.cache
def cjk_font() -> str | None:
    """The family name of an installed CJK font, registered with matplotlib, or None. The
    regular weight's file is registered first: matplotlib's cache may hold only the bold."""
    files = [
        path
        for path in sorted(font_manager.findSystemFonts())  # .ttf, .otf and .ttc
        if any(hint in Path(path).name.lower().replace("-", "") for hint in CJK_FILE_HINTS)
    ]
    files.sort(key=lambda path: "regular" not in Path(path).name.lower())
    for path in files[:1]:
        with contextlib.suppress(OSError, RuntimeError):
            font_manager.fontManager.addfont(path)
    names = {f.name for f in font_manager.fontManager.ttflist}
    return next((family for family in CJK_FAMILIES if family in names), None)


@contextlib.contextmanager
def fonts_for(lang: str) -> Iterator[None]:
    """Figures drawn inside use a CJK font for Chinese (per glyph, after DejaVu Sans for
    Latin text), so no character is drawn as a missing-glyph box."""
    if lang != "zh":
        yield
        return
    family = cjk_font()
    if family is None:
        raise InputDataError(
            "no CJK font is installed for the Chinese report's figures: install one "
            "(Debian/Ubuntu: apt-get install fonts-noto-cjk), or use --lang en"
        )
    with matplotlib.rc_context({"font.family": ["DejaVu Sans", family]}):
        yield


def figure(width: float = 6.0, height: float = 4.2) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the non-interactive Agg canvas; no pyplot, no global state
    return fig


def png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def style(ax: Any) -> None:
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def roc_figure(s: Scores, t: Texts) -> Figure:
    fig = figure(5.2, 4.6)
    ax = fig.add_subplot()
    curves = [(t("Joint model"), s.joint, JOINT_COLOUR)]
    if s.bank_only is not None:
        curves.append((t("Bank-only model"), s.bank_only, BANK_COLOUR))
    for label, p, colour in curves:
        fpr, tpr, _ = roc_curve(s.y, p)
        auc = evaluate(s.y, p)["auc"]
        ax.plot(
            fpr,
            tpr,
            color=colour,
            linewidth=2,
            label=t("{label} (AUC {auc:.3f})", label=label, auc=auc),
        )
    ax.plot([0, 1], [0, 1], color="#888888", linestyle="--", linewidth=1, label=t("Random"))
    ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    ax.set_xlabel(t("False positive rate (share of goods flagged)"))
    ax.set_ylabel(t("True positive rate (share of bads flagged)"))
    ax.set_title(t("ROC curve"))
    ax.legend(loc="lower right", fontsize=9)
    style(ax)
    return fig


def ks_figure(s: Scores, ks: dict[str, Any], t: Texts) -> Figure:
    fig = figure(6.0, 4.2)
    ax = fig.add_subplot()
    x = ks["population"] * 100
    ax.plot(x, ks["bads"] * 100, color=BAD_COLOUR, linewidth=2, label=t("Cumulative % of bads"))
    ax.plot(x, ks["goods"] * 100, color=GOOD_COLOUR, linewidth=2, label=t("Cumulative % of goods"))
    at = ks["at_population"] * 100
    ax.vlines(at, ks["at_goods"] * 100, ks["at_bads"] * 100, color="black", linewidth=1.5)
    ax.plot([at, at], [ks["at_goods"] * 100, ks["at_bads"] * 100], "o", color="black", ms=4)
    ax.annotate(
        t(
            "KS = {ks:.3f}\nat {at:.0f}% of the population\n(PD ≥ {threshold:.3f})",
            ks=ks["ks"],
            at=at,
            threshold=ks["at_threshold"],
        ),
        xy=(at, (ks["at_bads"] + ks["at_goods"]) * 50),
        xytext=(12, 0),
        textcoords="offset points",
        va="center",
        fontsize=9,
        bbox={"boxstyle": "round", "fc": "white", "ec": "#999999"},
    )
    ax.set_xticks(range(0, 101, 10))
    ax.set(xlim=(0, 100), ylim=(0, 101))
    ax.set_xlabel(t("% of clients, riskiest first (score deciles)"))
    ax.set_ylabel(t("Cumulative %"))
    ax.set_title(t("KS curve (joint model)"))
    ax.legend(loc="lower right", fontsize=9)
    style(ax)
    return fig


def distribution_figure(s: Scores, t: Texts) -> Figure:
    fig = figure(6.0, 4.0)
    ax = fig.add_subplot()
    high = float(np.quantile(s.joint, 0.995)) if len(s.joint) else 1.0
    high = min(1.0, max(high * 1.05, 1e-3))
    bins = np.linspace(0.0, high, 31)
    clipped = np.clip(s.joint, 0.0, high)
    for label, mask, colour in (
        (t("Goods (y = 0)"), s.y == 0, GOOD_COLOUR),
        (t("Bads (y = 1)"), s.y == 1, BAD_COLOUR),
    ):
        if mask.any():
            ax.hist(
                clipped[mask],
                bins=list(bins),
                density=True,
                histtype="stepfilled",
                alpha=0.35,
                color=colour,
                edgecolor=colour,
                linewidth=1.5,
                label=t(
                    "{label}: {count:,} clients, mean PD {mean:.3f}",
                    label=label,
                    count=int(mask.sum()),
                    mean=s.joint[mask].mean(),
                ),
            )
    ax.set_xlim(0, high)
    ax.set_xlabel(t("Predicted probability of default (joint model)"))
    ax.set_ylabel(t("Density"))
    ax.set_title(t("Score distribution of goods and bads"))
    ax.legend(loc="upper right", fontsize=9)
    style(ax)
    return fig


def gain_figure(s: Scores, lift: list[dict[str, Any]], t: Texts) -> Figure:
    fig = figure(5.2, 4.6)
    ax = fig.add_subplot()
    curves = [(t("Joint model"), s.joint, JOINT_COLOUR)]
    if s.bank_only is not None:
        curves.append((t("Bank-only model"), s.bank_only, BANK_COLOUR))
    for label, p, colour in curves:
        x, captured = gain_curve(s.y, p)
        ax.plot(x * 100, captured * 100, color=colour, linewidth=2, label=label)
    cumulative = np.cumsum([r["count"] for r in lift]) / len(s.y) * 100
    ax.plot(
        cumulative,
        [r["captured"] * 100 for r in lift],
        "o",
        color=JOINT_COLOUR,
        ms=4,
        label=t("Joint model, by decile"),
    )
    rate = s.y.mean() if len(s.y) else 0
    if rate > 0:
        ax.plot(
            [0, rate * 100, 100], [0, 100, 100], color="#888888", linestyle=":", label=t("Perfect")
        )
    ax.plot([0, 100], [0, 100], color="#888888", linestyle="--", linewidth=1, label=t("Random"))
    ax.set_xticks(range(0, 101, 10))
    ax.set(xlim=(0, 100), ylim=(0, 101), aspect="equal")
    ax.set_xlabel(t("% of clients, riskiest first"))
    ax.set_ylabel(t("% of all bads captured"))
    ax.set_title(t("Gain chart"))
    ax.legend(loc="lower right", fontsize=9)
    style(ax)
    return fig


def history_figure(history: list[dict[str, Any]], kept: int | None, t: Texts) -> Figure:
    fig = figure(5.6, 3.2)
    ax = fig.add_subplot()
    epochs = [int(h.get("epoch", i)) + 1 for i, h in enumerate(history)]
    train = [h.get("train_loss") for h in history]
    validation = [h.get("validation_loss") for h in history]
    ax.plot(
        epochs,
        [math.nan if v is None else v for v in train],
        "o-",
        color=JOINT_COLOUR,
        label=t("Training loss"),
    )
    if any(v is not None for v in validation):
        ax.plot(
            epochs,
            [math.nan if v is None else v for v in validation],
            "s--",
            color=BANK_COLOUR,
            label=t("Validation loss"),
        )
    if kept is not None and 0 <= kept < len(history):
        ax.axvline(
            kept + 1,
            color="#888888",
            linestyle=":",
            label=t("Kept epoch ({epoch})", epoch=kept + 1),
        )
    ax.set_xticks(epochs if len(epochs) <= 20 else epochs[:: max(1, len(epochs) // 10)])
    ax.set_xlabel(t("Epoch"))
    ax.set_ylabel(t("Loss (Taylor approximation)"))
    ax.set_title(t("Training history"))
    ax.legend(fontsize=9)
    style(ax)
    return fig
