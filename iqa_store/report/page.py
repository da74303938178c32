"""One self-contained HTML page of a report: tables, figures as data URIs, comparisons, notes.

Nothing on the page is fetched: no scripts, fonts or style sheets from elsewhere, so it opens
from a mail attachment or an air-gapped machine the same way.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Sequence

__all__ = ["render_page"]

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.best .ours { font-weight: bold; }
.paper { color: #555; font-size: 0.85em; display: block; }
.worse { color: #a00; } .better { color: #070; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
.note { color: #777; font-style: italic; }
"""


def _escape(text: Any) -> str:
    return html.escape(str(text))


def _cell(filled: Any, cell: Any) -> str:
    statistic = filled.table.statistic
    if not math.isfinite(cell.value):
        ours = "—"
    elif statistic == "mean" and math.isfinite(cell.std):
        ours = f"{cell.value:.4f} ({cell.std:.4f})"
    else:
        ours = f"{cell.value:.4f}"
    parts = [f'<span class="ours">{ours}</span>']
    if cell.published is not None:
        paper = cell.published.text
        difference = cell.difference
        shown = "" if not math.isfinite(difference) else \
            f' <span class="{"better" if difference >= 0 else "worse"}">{difference:+.4f}</span>'
        parts.append(f'<span class="paper">paper {paper}{shown}</span>')
    return f'<td class="{"best" if cell.best else ""}">{"".join(parts)}</td>'


def _table(filled: Any) -> str:
    table = filled.table
    head = "".join(f"<th>{_escape(c.label)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = "".join(_cell(filled, filled.cell(row.label, c.label)) for c in table.columns)
        body.append(f"<tr><td>{_escape(row.label)}</td>{cells}</tr>")
    caption = f"{table.title} ({'median' if table.statistic == 'median' else 'mean (std)'} over splits; best of ours in bold)"
    return (f'<h3 id="{_escape(table.id)}">{_escape(table.id)}</h3>\n<table data-table="{_escape(table.id)}">'
            f"<caption>{_escape(caption)}</caption><thead><tr><th>row</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _figure(drawn: Any) -> str:
    images = "".join(f'<img alt="{_escape(drawn.id)}" src="{_data_uri(p)}">' for p in drawn.files if p.suffix == ".png")
    note = f'<p class="note">{_escape(drawn.note)}</p>' if drawn.note else ""
    return f'<figure id="{_escape(drawn.id)}">{images}<figcaption>{_escape(drawn.title)}</figcaption>{note}</figure>'


def _comparisons(comparisons: Sequence[Any]) -> str:
    if not comparisons:
        return '<p class="note">no pairs of rows with shared splits to compare</p>'
    head = ("<tr><th>dataset</th><th>metric</th><th>a</th><th>b</th><th>splits</th><th>mean a</th><th>mean b</th>"
            "<th>mean a - b</th><th>Wilcoxon p</th><th>wins a / b / ties</th></tr>")
    rows = "".join(
        f"<tr><td>{_escape(c.dataset)}</td><td>{_escape(c.metric)}</td><td>{_escape(c.a)}</td><td>{_escape(c.b)}</td>"
        f"<td>{c.n_splits}</td><td>{c.mean_a:.4f}</td><td>{c.mean_b:.4f}</td><td>{c.mean_difference:+.4f}</td>"
        f"<td>{'n/a' if not math.isfinite(c.p_value) else f'{c.p_value:.4g}'}</td>"
        f"<td>{c.wins_a} / {c.wins_b} / {c.ties}</td></tr>" for c in comparisons)
    return f'<table data-table="comparisons"><thead>{head}</thead><tbody>{rows}</tbody></table>'


def render_page(title: str, subtitle: str, tables: Sequence[Any], figures: Sequence[Any],
                comparisons: Sequence[Any], notes: Sequence[str]) -> str:
    """The page's HTML text."""
    notes_html = "".join(f"<li>{_escape(n)}</li>" for n in notes)
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_escape(title)}</h1>", f"<p>{_escape(subtitle)}</p>",
        f"<h2>Skipped on this machine</h2><ul>{notes_html}</ul>" if notes else "",
        "<h2>Tables</h2>", *(_table(t) for t in tables),
        "<h2>Figures</h2>", *(_figure(f) for f in figures),
        "<h2>Paired comparisons (same splits)</h2>", _comparisons(comparisons),
        "</body></html>"])
