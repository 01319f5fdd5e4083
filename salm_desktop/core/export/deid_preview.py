"""What de-identification will do to one file of the loaded study, before anything is written.

The wizard's export step shows this table (issue 15 item 5). It runs the very de-identifier the
export uses (:class:`~salm_desktop.core.export.deid.DicomDeidentifier`, same profile, options and
secret) on an in-memory copy of one DICOM header and lists each attribute that changes, before ->
after. Nothing is written and the file is only read. New instance UIDs in the real export also fold
in the protection settings, so those values differ; every other value is the one the release gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pydicom

from salm_desktop.core.export.deid import DeidError, DeidOptions, DicomDeidentifier, burned_in_reason, load_secret

MAX_VALUE = 64  # characters of a value shown in the table


@dataclass(frozen=True)
class ChangedAttribute:
    tag: str  # "(0010,0010)"
    keyword: str
    before: str
    after: str
    action: str  # "removed" | "emptied" | "replaced" | "added"


@dataclass
class DeidPreview:
    source: Path  # the file previewed
    profile: str  # options.summary_line()
    codes: list[tuple[str, str]]
    changes: list[ChangedAttribute]
    kept: int  # attributes left as they are
    private_removed: int
    note: str = ""  # e.g. the burned-in guard's reason, or why no preview is possible


def _text(elem) -> str:
    if elem.VR == "SQ":
        return f"<sequence of {len(elem.value)} item(s)>"
    if elem.VR in ("OB", "OW", "OF", "OD", "OL", "UN") or elem.keyword == "PixelData":
        return f"<{elem.VR} data>"
    value = "" if elem.value is None else str(elem.value)
    return value if len(value) <= MAX_VALUE else value[:MAX_VALUE - 1] + "…"


def _flat(ds) -> dict[Any, Any]:
    return {elem.tag: elem for elem in ds}  # top level; sequences are compared as a whole


def first_dicom_file(paths: Iterable[Path]) -> Path | None:
    for path in paths:
        try:
            pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
            return Path(path)
        except Exception:  # noqa: BLE001 - not a DICOM file: try the next one
            continue
    return None


def preview_file(path: Path, options: DeidOptions | None = None, secret: bytes | None = None) -> DeidPreview:
    """The attributes of ``path`` that the export would change under ``options``. Raises DeidError
    (one line) when the secret cannot be read or the file cannot be decoded."""
    options = options or DeidOptions()
    path = Path(path)
    if options.keep_identity:
        return DeidPreview(path, options.summary_line(), [], [], 0, 0,
                           "Identity kept: nothing is de-identified (internal use only; not for release outside the hospital).")
    secret = secret if secret is not None else load_secret(options.secret)
    try:
        original = pydicom.dcmread(path, stop_before_pixels=True)
        work = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - one line naming the file
        raise DeidError(f"{path.name}: not a readable DICOM file ({exc.__class__.__name__})") from None
    note = ""
    reason = burned_in_reason(original)
    if reason and not options.allow_burned_in:
        note = f"This file would not be written: {reason}"
    deidentifier = DicomDeidentifier(options, secret, "preview")
    try:
        deidentifier.deidentify(work)
    except Exception as exc:  # noqa: BLE001 - the export skips such a file with the same reason
        raise DeidError(f"{path.name}: its header cannot be de-identified ({exc.__class__.__name__}: {exc})") from None
    before, after = _flat(original), _flat(work)
    changes: list[ChangedAttribute] = []
    kept = 0
    private = 0
    for tag, elem in before.items():
        name = elem.keyword or ("private" if tag.is_private else elem.name)
        if tag not in after:
            if tag.is_private:
                private += 1
                continue  # counted, not listed one by one
            changes.append(ChangedAttribute(str(tag), name, _text(elem), "", "removed"))
            continue
        new = after[tag]
        old_text, new_text = _text(elem), _text(new)
        if elem.VR == "SQ":
            same = elem.value == new.value
        else:
            same = old_text == new_text
        if same:
            kept += 1
        else:
            changes.append(ChangedAttribute(str(tag), name, old_text, new_text, "emptied" if new_text == "" else "replaced"))
    for tag, elem in after.items():
        if tag not in before:
            changes.append(ChangedAttribute(str(tag), elem.keyword or elem.name, "", _text(elem), "added"))
    changes.sort(key=lambda c: c.tag)
    return DeidPreview(path, options.summary_line(), options.codes(), changes, kept, private, note)
