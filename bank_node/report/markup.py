"""HTML pieces: the style sheet, escaping, number formats, tables, figures, facts."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

from matplotlib.figure import Figure

from .figures import png

CSS = """
:root { --ink: #1d2733; --muted: #5b6675; --rule: #d6dbe1; --band: #f4f6f8;
        --joint: #1f4e79; --bank: #c55a11; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       "Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei", sans-serif;
       color: var(--ink); margin: 0; background: #fff; }
main { max-width: 1040px; margin: 0 auto; padding: 28px 32px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 10px; padding-bottom: 4px;
     border-bottom: 2px solid var(--joint); }
p { margin: 6px 0 10px; }
.sub { color: var(--muted); margin: 0 0 18px; }
.note { background: #fff8e1; border-left: 4px solid #f9a825; padding: 8px 12px; margin: 10px 0; }
.muted { color: var(--muted); font-size: 13px; }
dl.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr));
           gap: 8px 20px; margin: 0; padding: 14px 16px; background: var(--band);
           border-radius: 6px; }
dl.facts div { min-width: 0; }
dl.facts dt { color: var(--muted); font-size: 12px;
              letter-spacing: .04em; }
dl.facts dd { margin: 0; font-weight: 600; overflow-wrap: anywhere; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0 0; }
.card { flex: 1 1 150px; border: 1px solid var(--rule); border-radius: 6px; padding: 10px 14px; }
.card .v { font-size: 24px; font-weight: 700; color: var(--joint); }
.card .k { font-size: 12px; color: var(--muted); }
.card .ci { font-size: 11px; color: var(--muted); margin-top: 2px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 6px; font-size: 14px; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--rule); text-align: right;
         white-space: nowrap; }
th { background: var(--band); font-weight: 600; }
th:first-child, td:first-child, td.text, th.text { text-align: left; }
tr.gain td { font-weight: 700; background: #eef4fa; }
figure { margin: 14px 0; text-align: center; }
figure img { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.pair { display: flex; flex-wrap: wrap; gap: 16px; justify-content: space-between; }
.pair figure { flex: 1 1 440px; }
.bar { display: inline-block; height: 9px; background: var(--joint); border-radius: 2px;
       vertical-align: middle; }
.band-not-predictive { color: #7a7a7a; }
.band-very-strong { color: #b71c1c; font-weight: 600; }
.party { display: inline-block; padding: 0 6px; border-radius: 3px; font-size: 12px; }
.party-bank { background: #fbe9e0; color: var(--bank); }
.party-bureau { background: #e3edf7; color: var(--joint); }
.flag { color: #b71c1c; font-weight: 600; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px;
         border-top: 1px solid var(--rule); padding-top: 8px; }
@media print { main { padding: 0; } h2 { break-after: avoid; }
               figure, table { break-inside: avoid; } }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def pct(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value * 100:.{digits}f}%"


def signed(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    table_id: str,
    caption: str | None = None,
    row_classes: Sequence[str] | None = None,
    text_columns: Sequence[int] = (0,),
) -> str:
    """Cells in ``rows`` must be HTML already (escaped); headers are escaped here."""
    head = "".join(
        f'<th scope="col"{" class=text" if i in text_columns else ""}>{esc(h)}</th>'
        for i, h in enumerate(headers)
    )
    body = []
    for n, row in enumerate(rows):
        cls = f' class="{row_classes[n]}"' if row_classes and row_classes[n] else ""
        cells = "".join(
            f"<td{' class=text' if i in text_columns else ''}>{cell}</td>"
            for i, cell in enumerate(row)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    cap = f"<caption class=muted>{esc(caption)}</caption>" if caption else ""
    return (
        f'<table id="{esc(table_id)}">{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def img(fig: Figure, alt: str, caption: str, figure_id: str) -> str:
    data = png(fig)
    return (
        f'<figure id="{esc(figure_id)}"><img src="data:image/png;base64,{data}" '
        f'alt="{esc(alt)}"><figcaption>{esc(caption)}</figcaption></figure>'
    )


def facts(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<dl class="facts">'
        + "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in items)
        + "</dl>"
    )
