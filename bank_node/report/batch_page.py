"""``batch.html``: one self-contained page about a batch run, in the model report's style
(its style sheet and HTML pieces), in English or Chinese: the run's facts, what could not
be compared, the alerts, the score-band migration matrix and the PSI table. No figures,
scripts or external resources."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node_runtime.tables import atomic_write_bytes
from protocols.size_class import Size

from .i18n import LANGUAGES
from .markup import CSS, esc, facts, num, table

if TYPE_CHECKING:  # batch imports this module when it writes a run
    from bank_node.batch import Comparison, Thresholds

MAX_ALERT_ROWS = 1000  # the page lists this many; alerts.csv has them all

EN: dict[str, str] = {
    "title": "Batch run {name}",
    "subtitle": "Automatic re-check of the bank's portfolio against the credit bureau's data: "
    "scores, data products and their changes since the previous run.",
    "baseline": "No previous run: this is a baseline run. Nothing was compared and there are "
    "no alerts; the next run is compared with this one.",
    "not-compared": "Not compared:",
    "alerts-intro": "{n:,} alerts. Population alerts (PSI) first, then by severity and enterprise.",
    "alerts-cut": "The first {shown:,} of {n:,} alerts; alerts.csv lists them all.",
    "no-alerts": "No alerts.",
    "migration-intro": "Enterprises scored in both runs, by their previous band (rows) and "
    "their band now (columns), riskiest first. Bands: {rule}.",
    "bands-points": "scorecard points, one PDO wide (each a doubling of the odds)",
    "bands-probability": "predicted probability of default (the model has no scorecard)",
    "no-migration": "No migration matrix: {why}.",
    "why-baseline": "there is no previous run",
    "why-model": "the previous run used another model",
    "psi-intro": "Population stability index between the two runs' whole portfolios. PSI = "
    "Σ (current share − previous share) × ln(current share / previous share) over bins: a "
    "number is cut into {bins} bins of equal count in the previous run (at its quantiles; "
    "tied quantiles merge bins), a category has a bin per value, missing values have a bin "
    "of their own, and an empty bin counts as a share of 0.0001. Below {moderate:g}: stable; "
    "{moderate:g} to {significant:g}: a moderate shift; {significant:g} and above: a "
    "significant shift.",
    "no-psi": "No PSI: there is no previous run to compare with.",
    "footer": "Generated {when} by bank-node batch. The comparison ran at the bank on the "
    "bank's own files; the bureau learnt how many enterprises this run looked up, not which, "
    "and no score or result (private lookups).",
}

ZH: dict[str, str] = {
    "title": "自动跑批 {name}",
    "subtitle": "以征信平台数据自动复查银行存量客户：评分、数据产品及其与上次跑批相比的变化。",
    "baseline": "没有上次跑批：本次为基准跑批，未做比较，没有预警；下次跑批将与本次比较。",
    "not-compared": "未比较：",
    "alerts-intro": "共 {n:,} 条预警。先列总体预警（PSI），再按严重程度和企业排序。",
    "alerts-cut": "仅列出 {n:,} 条预警中的前 {shown:,} 条；完整列表见 alerts.csv。",
    "no-alerts": "没有预警。",
    "migration-intro": "两次跑批均有评分的企业，按上次评分档（行）和本次评分档（列）统计，"
    "风险最高的档在前。分档依据：{rule}。",
    "bands-points": "评分卡分数，每档宽一个 PDO（优劣比翻倍一次）",
    "bands-probability": "预测违约概率（该模型没有评分卡）",
    "no-migration": "无迁移矩阵：{why}。",
    "why-baseline": "没有上次跑批",
    "why-model": "上次跑批使用了另一个模型",
    "psi-intro": "两次跑批全部客户之间的群体稳定性指数（PSI）。PSI = Σ（本次占比 − 上次占比）"
    "× ln（本次占比 / 上次占比），按分箱求和：数值特征按上次跑批的分位数等频切分为 {bins} 箱"
    "（分位点相同则合并），类别特征每个取值一箱，缺失值单独一箱，空箱占比按 0.0001 计。"
    "低于 {moderate:g}：稳定；{moderate:g} 至 {significant:g}：中度偏移；"
    "{significant:g} 及以上：显著偏移。",
    "no-psi": "无 PSI：没有可比较的上次跑批。",
    "footer": "由 bank-node batch 于 {when} 生成。比较在银行内部基于银行自有文件完成；征信机构"
    "只得知本次跑批查询了多少家企业，不知道是哪些，也看不到任何评分或结果（隐私查询）。",
    # short texts, keyed by their English
    "Run": "跑批",
    "Started (UTC)": "开始时间（UTC）",
    "Model ID": "模型编号",
    "Products": "数据产品",
    "none": "无",
    "Portfolio rows": "客户数据行数",
    "Enterprises": "企业数",
    "Invalid IDs": "无效 ID",
    "Known to the bureau": "征信机构已知",
    "Previous run": "上次跑批",
    "In both runs": "两次均有",
    "Joined": "新增",
    "Left": "退出",
    "Alerts": "预警",
    "High": "高",
    "Medium": "中",
    "Score PSI": "评分 PSI",
    "ID": "企业 ID",
    "Severity": "严重程度",
    "Kind": "类型",
    "Detail": "说明",
    "Previous": "上次",
    "Current": "本次",
    "Score-band migration": "评分档迁移矩阵",
    "Population stability (PSI)": "群体稳定性指数（PSI）",
    "Previous band ↓ · now →": "上次评分档 ↓ · 本次 →",
    "Total": "合计",
    "Distribution": "分布",
    "Bins": "分箱数",
    "Level": "判断",
    "score": "评分",
    "numeric": "数值型",
    "category": "类别型",
    "stable": "稳定",
    "moderate": "中度偏移",
    "significant": "显著偏移",
    "high": "高",
    "medium": "中",
    "low": "低",
    "(population)": "（总体）",
    "psi_score": "评分分布偏移",
    "psi_feature": "特征分布偏移",
    "score_band": "评分档下降",
    "size_class": "企业划型变化",
    "headcount": "参保人数变化",
    "registration_status": "登记状态变化",
    "watch_abnormal_operations": "经营异常名录",
    "watch_serious_violation": "严重违法失信名单",
    "watch_tax_arrears": "欠税",
    "watch_court_judgement": "裁判文书（被告）",
    "watch_admin_penalty": "行政处罚",
}

KIND_EN = {
    "psi_score": "score distribution shift",
    "psi_feature": "feature distribution shift",
    "score_band": "score band dropped",
    "size_class": "size class changed",
    "headcount": "headcount changed",
    "registration_status": "registration status changed",
    "watch_abnormal_operations": "abnormal-operations list",
    "watch_serious_violation": "serious-violation list",
    "watch_tax_arrears": "tax arrears",
    "watch_court_judgement": "court judgement (defendant)",
    "watch_admin_penalty": "administrative penalty",
}


class _Texts:
    def __init__(self, lang: str) -> None:
        if lang not in LANGUAGES:
            raise ValueError(f"unknown language {lang!r}")
        self.lang = lang
        self.html_lang = "zh-Hans" if lang == "zh" else "en"

    def __call__(self, key: str, **values: Any) -> str:
        if self.lang == "zh":
            template = ZH[key]  # a KeyError is a missing translation: tests catch it
        else:
            template = EN.get(key, KIND_EN.get(key, key))
        return template.format(**values) if values else template


def render(
    summary: dict[str, Any], comparison: Comparison, thresholds: Thresholds, lang: str
) -> str:
    """The page as text."""
    t = _Texts(lang)
    name = Path(str(summary.get("out", ""))).name or "–"
    page_title = t("title", name=name)
    parts = [
        _header(summary, comparison, page_title, t),
        _alerts_section(comparison, t),
        _migration_section(summary, comparison, t),
        _psi_section(comparison, thresholds, t),
        f"<footer>{esc(t('footer', when=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())))}"
        "</footer>",
    ]
    return (
        f"<!DOCTYPE html>\n<html lang={t.html_lang}><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(page_title)}</title><style>{CSS}{EXTRA_CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>\n"
    )


EXTRA_CSS = """
.sev-high { color: #b71c1c; font-weight: 600; }
.sev-medium { color: #e65100; }
#alerts-table td:nth-child(4) { white-space: normal; }
.diag { font-weight: 700; color: var(--joint); }
"""


def write_page(
    path: Path, summary: dict[str, Any], comparison: Comparison, thresholds: Thresholds, lang: str
) -> None:
    page = render({**summary, "out": str(path.parent)}, comparison, thresholds, lang)
    atomic_write_bytes(path, page.encode("utf-8"))


def _header(summary: dict[str, Any], c: Comparison, title: str, t: _Texts) -> str:
    products = ", ".join(summary.get("products") or []) or t("none")
    items = [
        (t("Run"), Path(str(summary.get("out", ""))).name or "–"),
        (t("Started (UTC)"), str(summary.get("started", "–"))),
        (t("Model ID"), str(summary.get("model_id", "–"))),
        (t("Products"), products),
        (t("Portfolio rows"), f"{summary.get('rows', 0):,}"),
        (t("Enterprises"), f"{summary.get('enterprises', 0):,}"),
        (t("Invalid IDs"), f"{summary.get('invalid_ids', 0):,}"),
        (t("Known to the bureau"), f"{summary.get('bureau_matched', 0):,}"),
        (
            t("Previous run"),
            Path(str(summary["previous"])).name if summary.get("previous") else "–",
        ),
    ]
    if not c.baseline:
        items += [
            (t("In both runs"), f"{c.common:,}"),
            (t("Joined"), f"{c.joined:,}"),
            (t("Left"), f"{c.left:,}"),
        ]
    high = sum(a.severity == "high" for a in c.alerts)
    medium = sum(a.severity == "medium" for a in c.alerts)
    score = next((s for s in c.stability if s.kind == "score"), None)
    cards = [
        (f"{len(c.alerts):,}", t("Alerts")),
        (f"{high:,}", t("High")),
        (f"{medium:,}", t("Medium")),
        (num(score.psi, 4) if score else "–", t("Score PSI")),
    ]
    parts = [
        f"<header><h1>{esc(title)}</h1><p class=sub>{esc(t('subtitle'))}</p>",
        facts(items),
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class=v>{esc(v)}</div><div class=k>{esc(k)}</div></div>'
            for v, k in cards
        )
        + "</div></header>",
    ]
    if c.baseline:
        parts.append(f'<p class="note" id="baseline">{esc(t("baseline"))}</p>')
    if c.notes:
        items_html = "".join(f"<li>{esc(n.zh if t.lang == 'zh' else n.en)}</li>" for n in c.notes)
        heading = esc(t("not-compared"))
        parts.append(f'<div class="note" id="not-compared">{heading}<ul>{items_html}</ul></div>')
    return "".join(parts)


def _alerts_section(c: Comparison, t: _Texts) -> str:
    from bank_node.batch import alerts_table

    parts = [f"<section id=alerts><h2>{esc(t('Alerts'))}</h2>"]
    if not c.alerts:
        parts.append(f"<p id=no-alerts>{esc(t('no-alerts'))}</p></section>")
        return "".join(parts)
    ordered = alerts_table(c.alerts).to_pylist()
    shown = ordered[:MAX_ALERT_ROWS]
    parts.append(f"<p>{esc(t('alerts-intro', n=len(ordered)))}</p>")
    if len(shown) < len(ordered):
        parts.append(
            f'<p class="note">{esc(t("alerts-cut", shown=len(shown), n=len(ordered)))}</p>'
        )
    rows = [
        [
            esc(a["id"] or t("(population)")),
            f'<span class="sev-{esc(a["severity"])}">{esc(t(a["severity"]))}</span>',
            esc(t(a["kind"])),
            esc(a["detail_zh"] if t.lang == "zh" else a["detail_en"]),
            esc(_value(a, "previous", t.lang)),
            esc(_value(a, "current", t.lang)),
        ]
        for a in shown
    ]
    parts.append(
        table(
            [t("ID"), t("Severity"), t("Kind"), t("Detail"), t("Previous"), t("Current")],
            rows,
            "alerts-table",
            text_columns=(0, 1, 2, 3, 4, 5),
        )
    )
    parts.append("</section>")
    return "".join(parts)


def _migration_section(summary: dict[str, Any], c: Comparison, t: _Texts) -> str:
    parts = [f"<section id=migration><h2>{esc(t('Score-band migration'))}</h2>"]
    if c.migration is None:
        why = t("why-baseline") if c.baseline else t("why-model")
        parts.append(f"<p class=muted id=no-migration>{esc(t('no-migration', why=why))}</p>")
        return "".join(parts) + "</section>"
    labels = c.bands.labels
    rule = t("bands-points") if c.bands.kind == "points" else t("bands-probability")
    parts.append(f"<p>{esc(t('migration-intro', rule=rule))}</p>")
    rows, matrix = [], c.migration
    for i, label in enumerate(labels):
        cells = [esc(label)]
        for j in range(len(labels)):
            value = int(matrix[i, j])
            text = f"{value:,}" if value else "·"
            cells.append(f'<span class="{"diag" if i == j else ""}">{text}</span>')
        cells.append(f"{int(matrix[i].sum()):,}")
        rows.append(cells)
    totals = [t("Total"), *(f"{int(v):,}" for v in matrix.sum(axis=0)), f"{int(matrix.sum()):,}"]
    rows.append([esc(v) for v in totals])
    headers = [t("Previous band ↓ · now →"), *labels, t("Total")]
    parts.append(table(headers, rows, "migration-table", row_classes=[""] * len(labels) + ["gain"]))
    return "".join(parts) + "</section>"


def _psi_section(c: Comparison, thresholds: Thresholds, t: _Texts) -> str:
    parts = [f"<section id=psi><h2>{esc(t('Population stability (PSI)'))}</h2>"]
    if not c.stability:
        parts.append(f"<p class=muted id=no-psi>{esc(t('no-psi'))}</p>")
        return "".join(parts) + "</section>"
    parts.append(
        "<p>"
        + esc(
            t(
                "psi-intro",
                bins=thresholds.psi_bins,
                moderate=thresholds.psi_moderate,
                significant=thresholds.psi_significant,
            )
        )
        + "</p>"
    )
    rows = []
    for s in c.stability:
        level = s.level(thresholds)
        css = {"significant": "sev-high", "moderate": "sev-medium"}.get(level, "")
        rows.append(
            [
                esc(t("score") if s.kind == "score" else s.what),
                esc(t(s.kind)),
                f"{s.bins}",
                num(s.psi, 4),
                f'<span class="{css}">{esc(t(level))}</span>',
            ]
        )
    parts.append(
        table(
            [t("Distribution"), t("Kind"), t("Bins"), "PSI", t("Level")],
            rows,
            "psi-table",
            text_columns=(0, 1, 4),
        )
    )
    return "".join(parts) + "</section>"


def _value(alert: dict, key: str, lang: str) -> str:
    """An alert's previous or current value as the page's language names it (a size
    class in Chinese on the Chinese page)."""
    value = alert[key]
    if lang == "zh" and alert["kind"] == "size_class" and value:
        try:
            return Size(value).zh
        except ValueError:
            return str(value)
    return "" if value is None else str(value)
