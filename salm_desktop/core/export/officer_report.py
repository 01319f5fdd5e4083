"""The release record a data-protection officer signs: officer-report.html and officer-report.pdf.

Page 1 answers, in plain words, what was done to which dataset, by whom and for what purpose, how
much the images changed in native units (HU for CT), on which device it ran, how the release was
de-identified (with the CID 7050 codes), how well it protects (the thief-suite verdict when
``protect --evaluate`` ran), the release fingerprint, the residual risks and a sign-off block. The
technical settings follow, each with its meaning.

Everything comes from the release's own manifest.json (release-side facts only, no patient data),
plus the operator and purpose the steward gave. The report is written after the manifest because it
carries the manifest's sha256 (the release fingerprint), so it is the one file of the release that
the manifest does not list. The PDF is laid out with reportlab (real pages, flowing text); no Qt.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .officer_documents import _num, write_officer_html, write_officer_pdf

OFFICER_HTML = "officer-report.html"
OFFICER_PDF = "officer-report.pdf"


@dataclass(frozen=True)
class ReleaseInfo:
    """Who made the release and why (asked in the wizard; ``--operator`` / ``--purpose`` in the CLI)."""

    operator: str = ""
    purpose: str = ""

    def cleaned(self) -> "ReleaseInfo":
        return ReleaseInfo(" ".join(str(self.operator or "").split())[:200], " ".join(str(self.purpose or "").split())[:1000])


NOT_GIVEN = "not given"

# The officer signs for what the keys cost (the summary's ownership_keys_cost, measured); never where the keys are.
OWNERSHIP_KEYS_WORDS = ("yes: a secret mark inside the same budget that lets the data steward test a suspect model "
                        "later; the keys are kept privately, outside the release; the mark weakens the protection")

# What each protection method does, in words (settings.METHODS).
METHOD_WORDS = {
    "salm": "SALM unlearnable-example noise (sparsity-aware local masking: only the most salient pixels of each image change)",
    "em": "unlearnable-example noise on every pixel (error-minimizing noise, the baseline of SALM)",
    "random": "random noise within the budget (a control, not a protection)",
    "em-class": "class-wise error-minimizing noise (one pattern per class)",
    "tap": "targeted adversarial poisoning noise",
    "ar": "autoregressive-pattern noise",
    "lsp": "linearly separable patches",
    "ops": "one-pixel shortcut",
    "salm-tap": "SALM-masked targeted adversarial noise",
    "salm-ar": "SALM-masked autoregressive noise",
}

# The meaning of every ProtectSettings field, for the technical pages (the keys stay as they are in
# manifest.json so that a reader can find them there).
SETTING_MEANINGS = {
    "method": "which perturbation was added",
    "epsilon": "largest change allowed per pixel, as a fraction of the reader's display window",
    "epsilon_native": "the same budget given in native units instead (overrides the fraction); none: not used",
    "epsilon_unit": "unit of the native budget (HU for CT); none: not used",
    "noise_cap": "budget also capped at this fraction of each scan's own noise level; none: no cap",
    "local_mean_free": "whether the noise's local mean is removed, so region averages (e.g. HU of an organ) stay as they were; auto: on for CT",
    "step_size": "size of one optimisation step; none: a tenth of the budget",
    "pgd_steps": "optimisation steps on the noise in each round",
    "train_steps": "training steps of the stand-in model in each round",
    "stop_accuracy": "the rounds stop once the stand-in model reaches this accuracy on the protected images",
    "max_rounds": "upper bound on the number of rounds",
    "extra_rounds": "rounds run after the stop accuracy was reached",
    "stop_loss": "the stand-in model's loss must also be at most this to stop; none: not used",
    "mask_ratio": "fraction of each image's pixels that may change (1 = every pixel)",
    "recompute_mask": "how often the set of changed pixels is chosen again (every step, every round, or once)",
    "mask_scope": "whether the changed pixels are chosen per image or per class",
    "foreground": "whether changes are kept inside the patient's body",
    "surrogate": "architecture of the stand-in model the noise is optimised against (auto: by image size)",
    "batch_size": "images per optimisation batch",
    "device": "device asked for (auto: GPU if present, else CPU); the device actually used is on page 1",
    "seed": "random seed: the same seed, settings and device give the same release",
    "labels": "where the class labels came from (the dataset's own, or intensity clusters)",
    "n_clusters": "number of intensity clusters used as labels when the data have none",
    "surrogate_lr": "learning rate of the stand-in model",
    "init": "starting value of the noise (zero, or random within the budget)",
    "robust": "whether the noise was optimised to survive blurring, filtering and shifts",
    "precision": "arithmetic precision of the stand-in model (auto: bfloat16 where the hardware has it, else float32 with folded batch norms)",
    "early_exit_loss": "an image whose loss is already this low skips the rest of a round's steps",
}

# What the Basic Profile does, in words; each option (code) changes one line.
REMOVED_ALWAYS = ("patient names, IDs and birth date; accession number; institution and referring, performing and "
                  "reading physicians; study ID; addresses and other identifying attributes of PS3.15 Table E.1-1; "
                  "curves and overlays; the original file preamble")
RESIDUAL_RISKS = [
    "Pixels are not searched for burned-in text: files marked or likely to carry burned-in annotations (BurnedInAnnotation "
    "YES, or ultrasound / secondary capture without that attribute) are not written unless the steward allowed them.",
    "Free text that names a person the file itself does not name is not detected; descriptions are removed unless the "
    "Clean Descriptors option (113105) was chosen.",
    "The images themselves can still be recognised by someone who already holds them (a face in a head scan, a rare "
    "anatomy); de-identification removes the header identity, not the anatomy.",
    "The protective noise is a small obstacle to training models on this copy, never a guarantee: a thief with "
    "standard augmentation kept most of its ability to rank patients in our measurements (docs/benchmarks.md). "
    "Data-sharing agreements and access control remain necessary.",
    "The private steward record (original UIDs, pseudonym table) and the pseudonym secret stay inside the hospital; "
    "anyone holding both the release and the record can link it back to the patients.",
]


def _unit(unit: str | None) -> str:
    return unit if unit else "native units"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _dataset_rows(manifest: dict[str, Any], release_name: str) -> list[tuple[str, str]]:
    series = manifest.get("series", [])
    protected = [s for s in series if s.get("protected")]
    by_modality: dict[str, list[int]] = {}
    for s in protected:
        by_modality.setdefault(str(s.get("modality") or "?"), []).append(int(s.get("samples") or 0))
    modalities = "; ".join(f"{m}: {len(v)} series, {sum(v)} images" for m, v in sorted(by_modality.items())) or "none"
    kinds = sorted({str(s.get("kind")) for s in series})
    kind_words = {"dicom": "DICOM", "nifti": "NIfTI", "nrrd": "NRRD", "volume": "volume", "images": "image files", "npz": "NumPy npz"}
    copied = [s for s in series if not s.get("protected")]
    rows = [
        ("Release", release_name),
        ("Contents", f"{len(protected)} series protected ({sum(int(s.get('samples') or 0) for s in protected)} images)"
                     + (f", {len(copied)} copied unchanged" if copied else "")
                     + f"; {len(manifest.get('files', []))} files; formats: {', '.join(kind_words.get(k, k) for k in kinds)}"),
        ("Modalities", modalities),
        ("Inputs left out", f"{len(manifest.get('skipped', []))} (each listed with its reason on the technical pages)"),
    ]
    return rows


def _change_rows(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """The change in native units, one line per unit (HU for CT), from the values actually written."""
    fid = manifest.get("fidelity") or {}
    per_unit: dict[str, dict[str, Any]] = {}
    for s in fid.get("series", []):
        u = _unit(s.get("unit"))
        entry = per_unit.setdefault(u, {"max": 0.0, "sum_mean": 0.0, "pixels": 0, "changed": 0.0, "eps": [], "mods": set()})
        pixels = int(s.get("pixels") or 0)
        entry["max"] = max(entry["max"], float(s.get("max_abs_change_native") or 0.0))
        entry["sum_mean"] += float(s.get("mean_abs_change_native") or 0.0) * pixels
        entry["changed"] += float(s.get("fraction_changed") or 0.0) * pixels
        entry["pixels"] += pixels
        entry["mods"].add(str(s.get("modality") or "?"))
        if s.get("epsilon_native") is not None:
            entry["eps"].append(float(s["epsilon_native"]))
    rows = []
    for u, e in sorted(per_unit.items()):
        n = max(1, e["pixels"])
        budget = f"; budget at most ±{_num(max(e['eps']))} {u}" if e["eps"] else ""
        rows.append((f"Change ({', '.join(sorted(e['mods']))}, {u})",
                     f"largest {_num(e['max'])} {u}, mean {_num(e['sum_mean'] / n)} {u} per pixel, "
                     f"{100 * e['changed'] / n:.1f} % of pixels changed{budget}"))
    job = fid.get("job") or {}
    if job:
        psnr = job.get("psnr_db")
        rows.append(("Similarity to the originals",
                     f"PSNR {'infinite (identical)' if psnr is None else _num(psnr, 4) + ' dB'}, SSIM {_num(job.get('ssim'), 4)} "
                     "(1 = identical), measured in the reader's display window"))
    return rows


def _device_words(device: Any) -> str:
    d = str(device or "unknown").lower()
    if d.startswith("cuda"):
        return f"NVIDIA GPU ({device})"
    return {"cpu": "the computer's CPU (no GPU)", "mps": "Apple GPU (MPS)"}.get(d, str(device))


def _deid_rows(manifest: dict[str, Any]) -> tuple[list[tuple[str, str]], bool]:
    facts = manifest.get("deidentification") or {}
    if facts.get("identity_kept") or not facts.get("deidentified"):
        warning = facts.get("warning") or "IDENTITY KEPT: not for release outside the hospital"
        return [("De-identified", f"NO. {warning}. Names, IDs, dates and links to the original images are in this "
                                  "copy; it must not leave the hospital.")], False
    codes = {o["code"]: o["meaning"] for o in facts.get("options", [])}
    kept, removed = [], [REMOVED_ALWAYS]
    for code, yes, no in (
            ("113107", "dates, shifted into the past by a fixed number of days per patient (intervals kept)", "all dates and times"),
            ("113108", "patient characteristics (sex, age, size, weight)", "patient characteristics (sex, age, size, weight)"),
            ("113109", "device identity (serial numbers, station name)", "device identity (serial numbers, station name)"),
            ("113105", "descriptions, with the file's own identifying values replaced", "study and series descriptions, comments"),
            ("113111", "private attributes PS3.15 lists as safe (e.g. diffusion b-values)", "all private (vendor) attributes")):
        (kept if code in codes else removed).append(yes if code in codes else no)
    options = "; ".join(f"{c} {m}" for c, m in codes.items())
    kinds = {str(s.get("kind")) for s in manifest.get("series", [])}
    where = ("Codes recorded in every DICOM file (DeidentificationMethodCodeSequence, CID 7050)" if "dicom" in kinds
             else "No DICOM files in this release; the profile and codes (CID 7050) that would apply")
    rows = [
        ("De-identified", f"YES: {facts.get('profile', 'DICOM PS3.15 Basic Application Level Confidentiality Profile')}. "
                          f"{where}: {options}."),
        ("Removed or emptied", "; ".join(removed)),
        ("Kept", "; ".join(kept) if kept else "image geometry and pixel spacing, modality, acquisition parameters "
                                              "that identify no one"),
        ("Replaced", "patient name and ID by a keyed pseudonym; every Study, Series, SOP Instance and Frame-of-Reference UID "
                     "(and references to them) by a new UID; pseudonyms from a secret the hospital keeps (HMAC-SHA256)"),
        ("Link back", "none in the release: the map from original UIDs and patients to pseudonyms is in a private "
                      "steward record kept outside the release"),
    ]
    if kinds - {"dicom"}:
        rows.append(("Other formats", "NIfTI, NRRD, PNG and npz files carry no identifiers in their headers, side files "
                                      "or file names (header text fields emptied, extensions dropped, arrays only)"))
    if facts.get("burned_in_annotations_allowed"):
        rows.append(("Burned-in annotations", "ALLOWED by the steward: such files were written after a visual check; "
                                              "they are marked PatientIdentityRemoved NO"))
    return rows, True


def _evaluation_rows(efficacy: dict[str, Any] | None, later: bool = False) -> list[tuple[str, str]]:
    if not efficacy:
        return [("Protection measured", "not measured with this release (run protect --evaluate on labelled data, or "
                                        "salm-protect evaluate); no claim is made about how well it protects")]
    verdict = efficacy.get("verdict") if isinstance(efficacy.get("verdict"), dict) else None
    if verdict is None:
        return [("Protection measured", "an evaluation was attached; its numbers are on the technical pages")]
    clean = verdict.get("clean_rank_power")
    thieves = efficacy.get("thieves") or {}
    rows = [
        ("Protection measured", f"{str(verdict.get('verdict', '?')).upper()} against {len(thieves) or 'the'} "
                                f"thief model(s) trained on this release ({efficacy.get('epochs', '?')} epochs, "
                                f"{efficacy.get('train_samples', '?')} training / {efficacy.get('test_samples', '?')} clean test images)"),
        ("Worst thief", f"{verdict.get('worst_thief')}: ranking power max(AUC, 1-AUC) {_num(verdict.get('rank_power_final'))} "
                        f"at its last epoch, {_num(verdict.get('rank_power_val_selected'))} at its best epoch"
                        + (f"; on clean data {_num(clean)}" if clean is not None else "") + " (0.5 = chance, 1 = perfect)"),
    ]
    if efficacy.get("quick"):
        rows.append(("Scope of the measurement", str(efficacy["quick"])))
    if later:
        rows.append(("Attached", "after the release was made (salm-protect evaluate --report); the evaluation is not "
                                 "part of manifest.json and not covered by the fingerprint"))
    return rows


def build_officer_context(manifest: dict[str, Any], *, manifest_sha256: str, release_name: str,
                          info: ReleaseInfo | None = None, created: str | None = None,
                          later_efficacy: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report's content as plain data (the HTML and the PDF are drawn from it). ``later_efficacy``:
    an evaluation run after the release was made (``evaluate --report``), shown as such."""
    info = (info or ReleaseInfo()).cleaned()
    summary = manifest.get("summary") or {}
    settings = manifest.get("settings") or {}
    method = str(settings.get("method") or summary.get("method") or "?")
    eps = settings.get("epsilon")
    what = METHOD_WORDS.get(method, method)
    if settings.get("epsilon_native") is not None:
        budget = f"at most ±{_num(settings['epsilon_native'])} {settings.get('epsilon_unit') or 'native units'} per pixel"
    elif eps is not None:
        budget = f"at most {_num(100 * float(eps))} % of the reader's display window per pixel (±{round(float(eps) * 255)}/255)"
    else:
        budget = "n/a"
    if method == "salm" and settings.get("mask_ratio") is not None:
        what += f"; at most {round(100 * float(settings['mask_ratio']))} % of each image's pixels"
    deid_rows, deidentified = _deid_rows(manifest)
    cost = summary.get("ownership_keys_cost")
    keys_rows = ([("Ownership keys", OWNERSHIP_KEYS_WORDS + (f" (measured: {cost})" if cost else ""))]
                 if summary.get("ownership_keys") else [])
    page1 = [
        ("Dataset and release", _dataset_rows(manifest, release_name) + [
            ("Created", f"{manifest.get('created', '?')} with SALM Desktop {((manifest.get('software') or {}).get('version')) or '?'}"),
            ("Fingerprint", f"sha256 of manifest.json: {manifest_sha256}"),
        ]),
        ("Who and why", [("Operator", info.operator or NOT_GIVEN), ("Purpose", info.purpose or NOT_GIVEN)]),
        ("What was done", [("Protection", what), ("Budget", budget),
                           ("Device actually used", _device_words(summary.get("device") or manifest.get("device")))]
         + keys_rows + _change_rows(manifest)),
        ("De-identification", deid_rows),
        ("How well it protects", _evaluation_rows(later_efficacy or manifest.get("efficacy"), later_efficacy is not None)),
    ]
    technical = [(k, "none" if v is None or v == "" else _num(v, 6) if not isinstance(v, (dict, list)) else json.dumps(v),
                  SETTING_MEANINGS.get(k, "")) for k, v in sorted(settings.items())]
    series_rows = []
    for s in (manifest.get("fidelity") or {}).get("series", []):
        series_rows.append((s.get("series"), s.get("modality"), s.get("samples"), s.get("window_name") or "",
                            _num(s.get("epsilon_native")), _num(s.get("max_abs_change_native")),
                            _num(s.get("mean_abs_change_native")), _num(s.get("psnr_db"), 4), _num(s.get("ssim"), 4),
                            s.get("unit") or "native"))
    return {
        "title": "Release record for the data-protection officer",
        "created": created or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "deidentified": deidentified,
        "operator": info.operator, "purpose": info.purpose,
        "fingerprint": manifest_sha256,
        "page1": page1,
        "risks": list(RESIDUAL_RISKS),
        "settings": technical,
        "series": series_rows,
        "efficacy": later_efficacy or manifest.get("efficacy"),
        "skipped": [(str(i.get("path")), str(i.get("reason"))) for i in manifest.get("skipped", [])],
        "versions": (manifest.get("software") or {}),
    }


def write_officer_report(release_dir: Path, manifest_path: Path, *, info: ReleaseInfo | None = None,
                         release_name: str | None = None, pdf: bool = True) -> dict[str, Path]:
    """Write officer-report.html (and .pdf) into ``release_dir`` from its manifest; returns their paths."""
    manifest_path = Path(manifest_path)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    ctx = build_officer_context(manifest, manifest_sha256=sha256_of(manifest_path),
                                release_name=release_name or Path(release_dir).name, info=info)
    paths = {"officer_html": write_officer_html(Path(release_dir) / OFFICER_HTML, ctx)}
    if pdf:
        paths["officer_pdf"] = write_officer_pdf(Path(release_dir) / OFFICER_PDF, ctx)
    return paths


def read_officer_data(release_dir: Path) -> dict[str, Any]:
    """The page-1 facts embedded in an officer-report.html ({} when there is none or it cannot be read)."""
    import re

    try:
        text = (Path(release_dir) / OFFICER_HTML).read_text(encoding="utf-8")
        found = re.search(r"<script type='application/json' id='officer-data'>(.*?)</script>", text, re.S)
        return json.loads(found.group(1).replace("<\\/", "</")) if found else {}
    except (OSError, ValueError):
        return {}


def fold_in_evaluation(release_dir: Path, efficacy: dict[str, Any]) -> dict[str, Path]:
    """``evaluate --report DIR``: redraw the officer report of a finished release with a later
    evaluation. The release's data and manifest are not touched (the fingerprint stays the same);
    each report file is replaced whole. Raises ValueError naming the folder and the reason."""
    import os

    release_dir = Path(release_dir)
    manifest_path = release_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ValueError(f"{release_dir}: not a finished release (no readable manifest.json)") from None
    before = read_officer_data(release_dir)
    if before and before.get("fingerprint") != sha256_of(manifest_path):
        raise ValueError(f"{release_dir}: officer-report.html does not belong to this manifest.json (fingerprint differs)")
    info = ReleaseInfo(before.get("operator", ""), before.get("purpose", ""))
    ctx = build_officer_context(manifest, manifest_sha256=sha256_of(manifest_path), release_name=release_dir.name,
                                info=info, later_efficacy=efficacy)
    paths = {}
    for key, name, writer in (("officer_html", OFFICER_HTML, write_officer_html), ("officer_pdf", OFFICER_PDF, write_officer_pdf)):
        tmp = release_dir / f".{name}.partial"
        try:
            writer(tmp, ctx)
            os.replace(tmp, release_dir / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        paths[key] = release_dir / name
    return paths
