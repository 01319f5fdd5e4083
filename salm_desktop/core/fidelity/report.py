"""The clinical-fidelity report: report.html (self-contained, images as base64 PNG) and report.pdf.

Figures and the PDF are drawn with matplotlib (Agg backend, no Qt). Nothing here prints patient
names or IDs: series are named by their short hash.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import platform
import textwrap
from pathlib import Path
from typing import Any

# Figures are plain matplotlib Figure objects rendered by the Agg canvas: no pyplot, no global state,
# no GUI backend, safe in a worker thread of the desktop app.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
import numpy as np

from salm_desktop.core.fidelity.metrics import JobFidelity, SeriesFidelity


def _figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig

# Display windows (level, width) for CT: the difference is judged where a reader looks.
CT_WINDOW = (40.0, 400.0)  # abdomen / soft tissue


# What a reader of the report must know about the limits of the protection, in plain words.
# The numbers behind each line are in docs/robustness.md and docs/benchmarks.md (BreastMNIST grid).
PROTECTION_LIMITS = [
    "The perturbation is meant to make a model trained on this copy learn a shortcut instead of the anatomy; it "
    "does not de-identify the images and does not stop a person from reading them.",
    "Against a realistic thief it weakens the model but does not reduce it to chance. On 2D 8-bit images (the "
    "class texture, 30 % of the pixels) a thief who trains with standard crop-and-flip augmentation kept a "
    "ranking power max(AUC, 1-AUC) of 0.55-0.59 at the last epoch and 0.62-0.67 at the epoch that did best on "
    "clean validation data of its own on BreastMNIST (clean data: 0.85-0.88), and 0.61-0.69 / 0.67-0.86 on "
    "PneumoniaMNIST (clean: 0.97); plain CNN, ResNet-18 and VGG-style, mean of 3 seeds (docs/benchmarks.md). "
    "On CT, MR and 3D data (min-min noise) the protection against such a thief has not been measured.",
    "A thief with 50 clean labelled images of its own, refitting the last layer, reached 0.60-0.67 on "
    "BreastMNIST and 0.76-0.88 on PneumoniaMNIST; one who mixes 10 % clean images of its own into the copy "
    "reached 0.66 / 0.72 on BreastMNIST and 0.95 on PneumoniaMNIST (clean: 0.97). A thief who blurs every image "
    "(Gaussian, 1 pixel) or recompresses it as JPEG quality 10 before training loses nothing against the class "
    "texture: 0.84-0.85 on BreastMNIST and 0.96-0.97 on PneumoniaMNIST, as on clean data; a 3x3 median filter leaves "
    "part of it (0.68 / 0.74 on BreastMNIST) (docs/robustness.md). "
    "Treat the protection as an obstacle to casual reuse, never as a guarantee; "
    "data-sharing agreements and access control remain necessary. "
    "Run 'salm-protect evaluate' on your own data: its last line gives the verdict and the numbers it rests on.",
    "Your own AI models: one trained on clean 2D images in the usual way reacts to the class texture as well (on "
    "protected BreastMNIST and PneumoniaMNIST test images it kept 75-95 % of its answers); models trained with the "
    "consistency recipe of the user guide kept 98-100 %, AUC within 0.01 (docs/benchmarks.md, clinical utility).",
]


# issue 15: the plain-words record for the data-protection officer is a document of its own
OFFICER_POINTER = ("The plain-words release record for the data-protection officer is officer-report.pdf "
                   "(dataset, operator, purpose, de-identification, evaluation, sign-off); this report is its technical annex.")


# import name -> distribution name; the version is read from the installed metadata, because importing
# MONAI only to ask its version costs about 5 s (the first report of every batch worker paid it)
_VERSIONED = {"salm_desktop": "salm-desktop", "numpy": "numpy", "torch": "torch", "monai": "monai", "pydicom": "pydicom",
              "nibabel": "nibabel", "SimpleITK": "SimpleITK", "skimage": "scikit-image", "matplotlib": "matplotlib"}


def software_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name, distribution in _VERSIONED.items():
        try:
            versions[name] = metadata.version(distribution)
            continue
        except metadata.PackageNotFoundError:  # a frozen app may ship a package without its metadata
            pass
        try:
            module = __import__(name)
            versions[name] = str(getattr(module, "__version__", getattr(module, "Version", "?")))
        except Exception:  # noqa: BLE001 - optional in a given install
            continue
    return versions


def display_window(fid: SeriesFidelity) -> tuple[float, float]:
    """(low, high) used to show original and protected images: the window the budget is a fraction
    of, i.e. the file's own window where it has one (CT without one: soft tissue W400)."""
    return fid.window


def _psnr(value: Any) -> Any:
    """PSNR of identical data is infinite; it is stored as None."""
    return "∞ (identical)" if value is None else value


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}g}"
    return str(value)


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def slices_figure(fid: SeriesFidelity) -> Figure:
    rows = max(1, len(fid.slices))
    fig = _figure((9.5, 3.1 * rows))
    axes = fig.subplots(rows, 3, squeeze=False)
    low, high = display_window(fid)
    unit = f" {fid.unit}" if fid.unit else ""
    eps_native = (fid.epsilon or 0.0) * (fid.window[1] - fid.window[0])
    for r, item in enumerate(sorted(fid.slices, key=lambda s: s["index"])):
        diff = item["protected"].astype(np.float64) - item["original"].astype(np.float64)
        scale = max(eps_native, float(np.abs(diff).max()), 1e-6)
        ax = axes[r]
        ax[0].imshow(item["original"], cmap="gray", vmin=low, vmax=high)
        ax[0].set_title(f"original #{item['index']}", fontsize=9)
        ax[1].imshow(item["protected"], cmap="gray", vmin=low, vmax=high)
        ax[1].set_title(f"protected #{item['index']}", fontsize=9)
        im = ax[2].imshow(diff, cmap="seismic", vmin=-scale, vmax=scale)
        ax[2].set_title(f"difference (±{scale:.3g}{unit})", fontsize=9)
        fig.colorbar(im, ax=ax[2], fraction=0.046, pad=0.04)
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
    if not fid.slices:
        axes[0][0].text(0.5, 0.5, "no slices", ha="center")
    fig.suptitle(f"series {fid.series_id}: window {low:.4g}..{high:.4g}{unit}", fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.95, bottom=0.02, top=1 - 0.35 / rows, wspace=0.08, hspace=0.25)
    return fig


def histogram_figure(fid: SeriesFidelity) -> Figure:
    fig = _figure((7, 2.8))
    ax = fig.subplots()
    edges = fid.edges
    centers = (edges[:-1] + edges[1:]) / 2
    ax.step(centers, np.maximum(fid.hist_before, 0.5), where="mid", label="before", color="tab:blue")
    ax.step(centers, np.maximum(fid.hist_after, 0.5), where="mid", label="after", color="tab:red", linestyle="--")
    ax.set_yscale("log")
    ax.set_xlabel(f"native value{' (' + fid.unit + ')' if fid.unit else ''}, clipped to the window")
    ax.set_ylabel("pixels")
    ax.legend(fontsize=8)
    ax.set_title(f"series {fid.series_id}: intensity histogram", fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.18, top=0.88)
    return fig


def _rows(pairs: list[tuple[str, Any]]) -> str:
    return "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in pairs)


def _summary_pairs(numbers: dict[str, Any]) -> list[tuple[str, Any]]:
    fg, bg = numbers.get("foreground", {}), numbers.get("background", {})
    return [
        ("samples", numbers.get("samples")),
        ("PSNR (dB, normalized scale)", _psnr(numbers.get("psnr_db"))),
        ("SSIM (normalized scale)", numbers.get("ssim")),
        ("largest absolute change (native)", numbers.get("max_abs_change_native")),
        ("mean absolute change (native)", numbers.get("mean_abs_change_native")),
        ("fraction of pixels changed", numbers.get("fraction_changed")),
        ("foreground: fraction changed", fg.get("fraction_changed")),
        ("foreground: mean absolute change", fg.get("mean_abs_change_native")),
        ("background: fraction changed", bg.get("fraction_changed")),
        ("background: mean absolute change", bg.get("mean_abs_change_native")),
    ]


def _noise_pairs(numbers: dict[str, Any]) -> list[tuple[str, Any]]:
    """Budget, the scan's own noise and the structure of the change, for one series."""
    unit = f" ({numbers['unit']})" if numbers.get("unit") else ""
    pairs: list[tuple[str, Any]] = [("window (the budget is a fraction of it)", numbers.get("window_name"))]
    if "epsilon_native" in numbers:
        pairs.append((f"budget ε in native units{unit}", numbers["epsilon_native"]))
    pairs += [
        (f"noise SD of the scan{unit}", numbers.get("noise_sd_native")),
        ("budget / noise SD", numbers.get("epsilon_per_noise_sd")),
        ("largest change / noise SD", numbers.get("max_change_per_noise_sd")),
        ("RMS change / noise SD", numbers.get("rms_change_per_noise_sd")),
        (f"high-pass SD in body before{unit}", numbers.get("highpass_sd_body_before")),
        (f"high-pass SD in body after{unit}", numbers.get("highpass_sd_body_after")),
        ("high-pass SD in body: relative change", numbers.get("highpass_sd_body_change_fraction")),
    ]
    st = numbers.get("structure")
    if st:
        verdict = "FAIL: periodic pattern" if st["periodic"] else "pass: no periodic pattern"
        pairs += [(f"autocorrelation peak, lags {st['lags'][0]}-{st['lags'][1]} px (limit {st['limit']:g})",
                   f"{st['excess']:.4f} at lag {st['lag']} {st['axis'] or ''} ({verdict})")]
    return pairs


def build_context(
    fidelity: JobFidelity,
    *,
    settings: dict[str, Any],
    summary: dict[str, Any] | None = None,
    efficacy: dict[str, Any] | None = None,
    skipped: list[dict[str, str]] | None = None,
    created: str | None = None,
    units: list[dict[str, Any]] | None = None,
    numbers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the report says. A batch job is a record with ``units`` (each ``{unit, summary, report}``
    from the manifest) and their pooled ``numbers`` (``metrics.pooled_fidelity``); its series' figures
    are in each unit's own report."""
    return {
        "created": created or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "versions": software_versions(),
        "settings": settings,
        "summary": summary or {},
        "fidelity": numbers if numbers is not None else fidelity.as_dict(),
        "efficacy": efficacy,
        "skipped": skipped or [],
        "units": units or [],
    }


UNIT_HEAD = ("unit", "samples", "PSNR dB", "SSIM", "pixels changed", "max |Δ| (native)")


def _unit_row(unit: dict[str, Any]) -> list[str]:
    s = unit.get("summary") or {}
    return [str(unit.get("unit")), _fmt(s.get("samples")), _fmt(_psnr(s.get("psnr_db"))), _fmt(s.get("ssim")),
            _fmt(s.get("fraction_pixels_changed"), 3), _fmt(s.get("max_abs_change_native"))]


def write_html(path: Path, fidelity: JobFidelity, context: dict[str, Any], images: dict[str, tuple[str, str]] | None = None) -> Path:
    """``images``: series id -> (slices PNG, histogram PNG) as base64; drawn here when not given."""
    if images is None:
        images = {}
        for fid in fidelity.series:
            figs = (slices_figure(fid), histogram_figure(fid))
            images[fid.series_id] = tuple(_png(f) for f in figs)  # type: ignore[assignment]
    job = context["fidelity"]["job"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>SALM Desktop clinical-fidelity report</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:0.5em 0}th,td{border:1px solid #bbb;padding:3px 8px;text-align:left;font-size:13px}"
        "th{background:#f2f2f2}img{max-width:100%}h2{border-bottom:1px solid #ccc}</style></head><body>",
        "<h1>Clinical-fidelity report</h1>",
        f"<p>Created {html.escape(context['created'])} by SALM Desktop. Series are named by a short hash; "
        "no patient names or IDs appear in this report.</p>",
        f"<p id='officer-pointer'>{html.escape(OFFICER_POINTER)}</p>",
        f"<p id='deidentification'><b>{html.escape(str((context.get('summary') or {}).get('deidentification') or ''))}</b></p>",
        "<h2>Whole job</h2><table id='job-summary'>",
        _rows(_summary_pairs(job)),
        f"<tr><th>native units</th><td>{html.escape(', '.join(job.get('native_units', [])))}</td></tr>",
        "</table>",
        "<h2>Settings</h2><table id='settings'>",
        _rows(sorted(context["settings"].items())),
        "</table>",
    ]
    if context.get("summary"):
        keep = {k: v for k, v in context["summary"].items() if not isinstance(v, (dict, list))}
        parts += ["<h2>Protection summary</h2><table id='protection'>", _rows(sorted(keep.items())), "</table>"]
    if context.get("efficacy"):
        parts += ["<h2>Efficacy</h2><pre id='efficacy'>", html.escape(json.dumps(context["efficacy"], indent=2, default=str)), "</pre>"]
    else:
        parts += ["<h2>Efficacy</h2><p>No evaluation was run with this job (see <code>salm-protect evaluate</code>).</p>"]
    if context.get("summary", {}).get("ownership_keys"):  # a statement only; the keys never enter the release
        parts += ["<h2>Ownership keys</h2><p id='ownership'>", html.escape(str(context["summary"]["ownership_keys"])), "</p>"]
    parts += ["<h2>What the protection does and does not promise</h2><ul id='limits'>"]
    parts += [f"<li>{html.escape(line)}</li>" for line in PROTECTION_LIMITS] + ["</ul>"]
    parts += ["<h2>Series</h2><table id='series-table'><tr><th>series</th><th>kind</th><th>modality</th><th>samples</th>"
              "<th>PSNR dB</th><th>SSIM</th><th>max |Δ|</th><th>mean |Δ|</th><th>fraction changed</th><th>unit</th></tr>"]
    for s in context["fidelity"]["series"]:
        parts.append(
            "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in (
                s["series"], s["kind"], s["modality"], s["samples"], _psnr(s["psnr_db"]), s["ssim"],
                s["max_abs_change_native"], s["mean_abs_change_native"], s["fraction_changed"], s["unit"] or "native")) + "</tr>"
        )
    parts.append("</table>")
    if context["units"]:
        parts.append("<h2>Units</h2><p>Each unit's own report has its series' histograms, slices and difference "
                     "maps.</p><table id='units'><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in UNIT_HEAD)
                     + "<th>report</th></tr>")
        for unit in context["units"]:
            link = f"<a href='{html.escape(unit['report'])}'>report</a>" if unit.get("report") else ""
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _unit_row(unit)) + f"<td>{link}</td></tr>")
        parts.append("</table>")
    for fid, s in zip(fidelity.series, context["fidelity"]["series"]):
        parts += [f"<h3 id='series-{html.escape(fid.series_id)}'>Series {html.escape(fid.series_id)} "
                  f"({html.escape(fid.kind)}, {html.escape(fid.modality)})</h3><table>", _rows(_summary_pairs(s))]
        parts.append(_rows(_noise_pairs(s)))
        parts.append("</table>")
        if s.get("roi"):
            parts.append("<table class='roi'><tr><th>ROI label</th><th>voxels</th><th>mean before</th><th>mean after</th>"
                         "<th>Δ mean</th><th>std before</th><th>std after</th><th>Δ std</th></tr>")
            for row in s["roi"]:
                parts.append("<tr>" + "".join(f"<td>{html.escape(_fmt(row[k]))}</td>" for k in (
                    "label", "voxels", "mean_before", "mean_after", "mean_change", "std_before", "std_after", "std_change")) + "</tr>")
            parts.append("</table>")
        slices_png, hist_png = images[fid.series_id]
        parts.append(f"<img alt='slices of series {fid.series_id}' src='data:image/png;base64,{slices_png}'>")
        parts.append(f"<img alt='histogram of series {fid.series_id}' src='data:image/png;base64,{hist_png}'>")
    if context["skipped"]:
        parts.append("<h2>Skipped inputs</h2><table id='skipped'><tr><th>file</th><th>reason</th></tr>")
        for item in context["skipped"]:
            parts.append(f"<tr><td>{html.escape(Path(item['path']).name)}</td><td>{html.escape(item['reason'])}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Software</h2><table id='versions'>" + _rows(sorted(context["versions"].items())) + "</table>")
    parts.append("<script type='application/json' id='report-data'>"
                 + json.dumps(context["fidelity"], default=_json_default).replace("</", "<\\/") + "</script>")
    parts.append("</body></html>")
    path.write_text("".join(parts), encoding="utf-8")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return str(value)


def _text_page(pdf: PdfPages, title: str, lines: list[str]) -> None:
    per_page = 58
    for start in range(0, max(1, len(lines)), per_page):
        fig = _figure((8.27, 11.69))
        fig.text(0.06, 0.96, title if start == 0 else f"{title} (continued)", fontsize=14, weight="bold", va="top")
        fig.text(0.06, 0.92, "\n".join(lines[start:start + per_page]), fontsize=8, family="monospace", va="top")
        pdf.savefig(fig)


def write_pdf(path: Path, fidelity: JobFidelity, context: dict[str, Any], images: dict[str, tuple[str, str]] | None = None) -> Path:
    """Writes the PDF; when ``images`` is a dict, also fills it with each series' figures as base64 PNG."""
    job = context["fidelity"]["job"]
    lines = [f"Created {context['created']} by SALM Desktop (series named by short hash; no patient data)", "", "WHOLE JOB"]
    lines[1:1] = [str((context.get("summary") or {}).get("deidentification") or "")]  # whether and how it was de-identified
    lines[2:2] = textwrap.wrap(OFFICER_POINTER, 100)
    lines += [f"  {k:<40} {_fmt(v)}" for k, v in _summary_pairs(job)]
    lines += ["", "SETTINGS"] + [f"  {k:<40} {_fmt(v)}" for k, v in sorted(context["settings"].items())]
    if context.get("efficacy"):
        lines += ["", "EFFICACY"] + ["  " + line for line in json.dumps(context["efficacy"], indent=1, default=str).splitlines()]
    else:
        lines += ["", "EFFICACY: no evaluation was run with this job"]
    if context.get("summary", {}).get("ownership_keys"):
        lines += ["", "OWNERSHIP KEYS"] + textwrap.wrap(str(context["summary"]["ownership_keys"]), 100, initial_indent="  ", subsequent_indent="  ")
    lines += ["", "WHAT THE PROTECTION DOES AND DOES NOT PROMISE"]
    for line in PROTECTION_LIMITS:
        lines += textwrap.wrap(line, 100, initial_indent="  - ", subsequent_indent="    ")
    lines += ["", "SERIES", f"  {'series':<12}{'kind':<7}{'mod':<5}{'n':>6}{'PSNR':>9}{'SSIM':>8}{'max|d|':>10}{'mean|d|':>10}{'changed':>9}"]
    for s in context["fidelity"]["series"]:
        lines.append(f"  {s['series']:<12}{s['kind']:<7}{s['modality']:<5}{s['samples']:>6}{_fmt(_psnr(s['psnr_db']), 4):>9}"
                     f"{_fmt(s['ssim'], 4):>8}{_fmt(s['max_abs_change_native'], 4):>10}{_fmt(s['mean_abs_change_native'], 3):>10}"
                     f"{_fmt(s['fraction_changed'], 3):>9}")
        lines += [f"      {k:<52} {_fmt(v)}" for k, v in _noise_pairs(s)]
        for row in s.get("roi", []):
            lines.append(f"      ROI {row['label']}: mean {row['mean_before']:.2f} -> {row['mean_after']:.2f} "
                         f"(Δ {row['mean_change']:+.3f}), std {row['std_before']:.2f} -> {row['std_after']:.2f} (Δ {row['std_change']:+.3f})")
    if context["units"]:
        lines += ["", "UNITS (each unit's own report has its series' figures)",
                  "  " + "".join(f"{h:<14}" for h in UNIT_HEAD)]
        lines += ["  " + "".join(f"{c:<14}" for c in _unit_row(unit)) for unit in context["units"]]
    if context["skipped"]:
        lines += ["", "SKIPPED INPUTS"] + [f"  {Path(i['path']).name}: {i['reason']}"[:110] for i in context["skipped"]]
    lines += ["", "SOFTWARE"] + [f"  {k:<20} {v}" for k, v in sorted(context["versions"].items())]
    with PdfPages(path) as pdf:
        _text_page(pdf, "Clinical-fidelity report", lines)
        for fid in fidelity.series:
            pngs = []
            for fig in (slices_figure(fid), histogram_figure(fid)):
                pdf.savefig(fig)
                if images is not None:
                    pngs.append(_png(fig))
            if images is not None:
                images[fid.series_id] = (pngs[0], pngs[1])
        info = pdf.infodict()
        info["Title"] = "SALM Desktop clinical-fidelity report"
        info["Creator"] = "SALM Desktop"
    return path


def write_report(
    out_dir: Path,
    fidelity: JobFidelity,
    *,
    settings: dict[str, Any],
    summary: dict[str, Any] | None = None,
    efficacy: dict[str, Any] | None = None,
    skipped: list[dict[str, str]] | None = None,
    pdf: bool = True,
    units: list[dict[str, Any]] | None = None,
    numbers: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write report.html (and report.pdf) into ``out_dir``; returns their paths (``units``, ``numbers``:
    a batch job's, see :func:`build_context`)."""
    context = build_context(fidelity, settings=settings, summary=summary, efficacy=efficacy, skipped=skipped,
                            units=units, numbers=numbers)
    paths: dict[str, Path] = {}
    images: dict[str, tuple[str, str]] | None = None
    if pdf:  # each figure is drawn once, for the PDF and the HTML
        images = {}
        paths["pdf"] = write_pdf(Path(out_dir) / "report.pdf", fidelity, context, images)
    paths["html"] = write_html(Path(out_dir) / "report.html", fidelity, context, images)
    return paths
