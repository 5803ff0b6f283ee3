"""The pieces of ragtune's self-contained HTML reports: one page with inline CSS, tables, and figures as PNG data URIs
(no script, no font, no URL: the file opens offline and can be mailed)."""

from __future__ import annotations

import base64
import html
import io
from typing import Iterable

STYLE = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #1d2330; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #d8dce5; }
.verdict { font-size: 1.15em; padding: .6em .9em; border-radius: 6px; background: #eef3fb; display: inline-block; }
.good { background: #e6f4ea; } .bad { background: #fdecea; }
table { border-collapse: collapse; margin: .6em 0; } th, td { padding: .25em .8em; border-bottom: 1px solid #e3e6ee; }
th { text-align: left; background: #f5f7fb; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.primary td { font-weight: 600; } .up { color: #137333; } .down { color: #b3261e; }
pre { background: #f5f7fb; padding: .8em; overflow-x: auto; font-size: 12px; }
figure { margin: .8em 0; } figcaption { color: #5f6675; font-size: .9em; } img { max-width: 100%; }
.row { display: flex; flex-wrap: wrap; gap: 1em; } .row figure { flex: 1 1 480px; }
.muted { color: #5f6675; }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, sections: Iterable[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(sections) + "\n</body></html>\n")


def section(heading: str, body: str, anchor: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(heading)}</h2>\n{body}\n</section>'


def table(header: list[str], rows: list[list], numeric_from: int = 1, classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(f'<td class="num">{cell}</td>' if j >= numeric_from else f"<td>{cell}</td>"
                        for j, cell in enumerate(row))
        css = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure(fig, caption: str) -> str:
    """A matplotlib figure as an inline PNG (closed afterwards)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
