"""The officer report's two documents, drawn from the context ``officer_report.build_officer_context``
makes: officer-report.html (with the page-1 facts embedded as JSON) and officer-report.pdf (reportlab,
real A4 pages; no Qt)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


SERIES_HEAD = ("series", "mod.", "images", "display window", "budget", "largest change", "mean change", "PSNR dB", "SSIM", "unit")


def _thief_rows(efficacy: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, t in (efficacy.get("thieves") or {}).items():
        for part in ("protected", "clean"):
            s = (t.get(part) or {}).get("summary")
            if s:
                rows.append((name, f"trained on {part}", _num(s["final"]["rank_power"]["mean"]),
                             _num(s["val_selected"]["rank_power"]["mean"])))
                if "few_clean_final" in s:  # the same thief, last layer refitted on a few clean images
                    rows.append((f"{name} + few-clean refit", f"trained on {part}", _num(s["few_clean_final"]["rank_power"]["mean"]),
                                 _num(s["few_clean_val_selected"]["rank_power"]["mean"])))
    return rows


# -- HTML ------------------------------------------------------------------------------------------------
def write_officer_html(path: Path, ctx: dict[str, Any]) -> Path:
    e = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>", f"<title>{e(ctx['title'])}</title>",
             "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:0.4em 0;width:100%}th,td{border:1px solid #bbb;padding:3px 8px;"
             "text-align:left;font-size:13px;vertical-align:top}th{background:#f2f2f2;width:22%}"
             ".warn{color:#a00;font-weight:bold}.sign td{height:2.2em}</style></head><body>",
             f"<h1>{e(ctx['title'])}</h1>"]
    if not ctx["deidentified"]:
        parts.append("<p class='warn' id='identity-kept'>IDENTITY KEPT: not for release outside the hospital.</p>")
    for title, rows in ctx["page1"]:
        parts.append(f"<h2>{e(title)}</h2><table>")
        parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows]
        parts.append("</table>")
    parts.append("<h2>Residual risks</h2><ul id='risks'>" + "".join(f"<li>{e(r)}</li>" for r in ctx["risks"]) + "</ul>")
    parts.append("<h2>Sign-off</h2><table class='sign' id='sign-off'>"
                 "<tr><th>Decision</th><td>[ ] approved for release &nbsp; [ ] not approved</td></tr>"
                 "<tr><th>Data-protection officer</th><td></td></tr><tr><th>Date</th><td></td></tr>"
                 "<tr><th>Signature</th><td></td></tr></table>")
    parts.append("<h2>Technical settings</h2><table id='settings'><tr><th>setting</th><th>value</th><th>meaning</th></tr>")
    parts += [f"<tr><td>{e(k)}</td><td>{e(v)}</td><td>{e(m)}</td></tr>" for k, v, m in ctx["settings"]]
    parts.append("</table><h2>Series</h2><table id='series'><tr>" + "".join(f"<th>{e(h)}</th>" for h in SERIES_HEAD) + "</tr>")
    parts += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in ctx["series"]]
    parts.append("</table>")
    if ctx["efficacy"] and _thief_rows(ctx["efficacy"]):
        parts.append("<h2>Protection evaluation</h2><table id='evaluation'><tr><th>thief</th><th>training data</th>"
                     "<th>ranking power, last epoch</th><th>ranking power, best epoch</th></tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in _thief_rows(ctx["efficacy"])]
        parts.append("</table>")
    if ctx["skipped"]:
        parts.append("<h2>Inputs left out</h2><table id='skipped'>"
                     + "".join(f"<tr><td>{e(Path(p).name)}</td><td>{e(r)}</td></tr>" for p, r in ctx["skipped"]) + "</table>")
    parts.append("<script type='application/json' id='officer-data'>"
                 + json.dumps({k: ctx[k] for k in ("deidentified", "operator", "purpose", "fingerprint", "page1")}).replace("</", "<\\/")
                 + "</script></body></html>")
    path.write_text("".join(parts), encoding="utf-8")
    return path


# -- PDF (reportlab) ---------------------------------------------------------------------------------------
def _latin1(text: Any) -> str:
    """The standard PDF fonts encode Latin-1 only; anything else is shown as '?'."""
    return str(text).encode("latin-1", "replace").decode("latin-1")


def write_officer_pdf(path: Path, ctx: dict[str, Any]) -> Path:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    body = ParagraphStyle("cell", parent=styles["BodyText"], fontSize=7.6, leading=9.2)
    key = ParagraphStyle("key", parent=body, fontName="Helvetica-Bold")
    h1 = ParagraphStyle("h1", parent=styles["Heading1"], fontSize=14, spaceAfter=3, spaceBefore=0)
    h2 = ParagraphStyle("h2", parent=styles["Heading2"], fontSize=9.5, spaceBefore=4, spaceAfter=1.5)
    warn = ParagraphStyle("warn", parent=body, fontSize=10, textColor=colors.HexColor("#aa0000"), fontName="Helvetica-Bold")
    width = A4[0] - 30 * mm
    grid = TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#999999")), ("VALIGN", (0, 0), (-1, -1), "TOP"),
                       ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#eeeeee")),
                       ("TOPPADDING", (0, 0), (-1, -1), 1.2), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.2)])
    head_grid = TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#999999")), ("VALIGN", (0, 0), (-1, -1), "TOP"),
                            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
                            ("TOPPADDING", (0, 0), (-1, -1), 1), ("BOTTOMPADDING", (0, 0), (-1, -1), 1)])

    def p(text: Any, style=body) -> Paragraph:
        return Paragraph(html.escape(_latin1(text)), style)

    def pairs(rows) -> Table:
        t = Table([[p(k, key), p(v)] for k, v in rows], colWidths=[0.22 * width, 0.78 * width])
        t.setStyle(grid)
        return t

    def table(head, rows, widths) -> Table:
        t = Table([[p(h, key) for h in head]] + [[p(c) for c in row] for row in rows],
                  colWidths=[w * width for w in widths], repeatRows=1)
        t.setStyle(head_grid)
        return t

    story: list[Any] = [p(ctx["title"], h1)]
    if not ctx["deidentified"]:
        story.append(p("IDENTITY KEPT: not for release outside the hospital.", warn))
    for title, rows in ctx["page1"]:
        story += [p(title, h2), pairs(rows)]
    story += [p("Residual risks", h2)] + [p(f"- {r}") for r in ctx["risks"]]
    sign = Table([[p("Decision", key), p("[  ] approved for release        [  ] not approved")],
                  [p("Data-protection officer", key), ""], [p("Date", key), ""], [p("Signature", key), ""]],
                 colWidths=[0.22 * width, 0.78 * width], rowHeights=[None, 7 * mm, 7 * mm, 9 * mm])
    sign.setStyle(grid)
    story += [p("Sign-off", h2), sign, PageBreak()]

    story += [p("Technical settings (each key as in manifest.json)", h2),
              table(("setting", "value", "meaning"), ctx["settings"], (0.2, 0.18, 0.62))]
    if ctx["series"]:
        story += [p("Series (named by a keyed pseudonym; values in each series' native unit)", h2),
                  table(SERIES_HEAD, ctx["series"], (0.12, 0.06, 0.08, 0.2, 0.08, 0.1, 0.1, 0.09, 0.08, 0.09))]
    if ctx["efficacy"]:
        rows = _thief_rows(ctx["efficacy"])
        story.append(p("Protection evaluation (ranking power = max(AUC, 1-AUC) on clean test patients; 0.5 = chance)", h2))
        if rows:
            story.append(table(("thief", "training data", "ranking power, last epoch", "ranking power, best epoch"), rows,
                               (0.34, 0.22, 0.22, 0.22)))
        else:
            story.append(p(json.dumps(ctx["efficacy"], default=str)[:3000]))
    if ctx["skipped"]:
        story += [p("Inputs left out", h2), table(("file", "reason"), [(Path(a).name, b) for a, b in ctx["skipped"]], (0.3, 0.7))]
    story.append(Spacer(1, 3 * mm))
    story.append(p(f"Report created {ctx['created']}; release fingerprint (sha256 of manifest.json) {ctx['fingerprint']}."))

    def footer(canvas, doc) -> None:  # noqa: ANN001 - reportlab's callback
        canvas.saveState()
        canvas.setFont("Helvetica", 7)
        canvas.drawString(15 * mm, 8 * mm, _latin1(f"SALM Desktop release record - fingerprint {ctx['fingerprint'][:16]}... - page {doc.page}"))
        canvas.restoreState()

    doc = SimpleDocTemplate(str(path), pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=11 * mm,
                            bottomMargin=13 * mm, title=ctx["title"], author="SALM Desktop", creator="SALM Desktop",
                            invariant=True)
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return path
