"""De-identification of the release (DICOM PS3.15 Basic Application Level Confidentiality Profile).

The protected copy leaves the hospital, so by default every DICOM file is de-identified in the same
export: the attributes of PS3.15 Table E.1-1 are removed, emptied or replaced, private attributes are
dropped, every instance UID is replaced, and the steward's options (CID 7050) are applied and recorded
in DeidentificationMethodCodeSequence. See docs/deidentification.md for the choices and their reasons.

Pseudonyms are consistent across a batch and across runs: they are HMAC-SHA256 digests of the
original value keyed by a secret the hospital keeps (created on first use in the user's configuration
folder, or given as a file). The same secret gives the same patient pseudonym, the same Study and
Frame-of-Reference UIDs; another secret gives others. SOP and Series Instance UIDs of the derived
images also fold in the protection settings and seed, so two protections of one study stay distinct
objects. The secret is never written into a release; the map from originals to pseudonyms goes to a
private steward record outside the release (:func:`write_steward_record`).

The secret and pseudonyms are in deid_secret.py, the PS3.15 tables in deid_profile.py, the steward
record in deid_steward.py; every name stays importable from here.

The element-level work on values that are not in the table (every other person name, identifier,
address, and the date shift of the "modified dates" option) is done by dicognito's element
anonymizers, fed with a randomizer keyed by the same secret.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID_dictionary

from salm_desktop import __version__
from salm_desktop.core.export.deid_profile import (
    BASIC_DUMMY,
    BASIC_EMPTY,
    BASIC_REMOVE,
    BURNED_IN_MODALITIES,
    DESCRIPTORS,
    DEVICE_IDENTITY,
    INSTANCE_UIDS,
    PATIENT_CHARACTERISTICS,
    SAFE_PRIVATE,
    TEXT_VRS,
    burned_in_reason,
    empty_value,
)
from salm_desktop.core.export.deid_secret import (
    SECRET_NAME,
    DeidError,
    Pseudonyms,
    config_dir,
    default_secret_path,
    dicognito_randomizer,
    load_secret,
)
from salm_desktop.core.export.deid_steward import (
    STEWARD_FILE,
    STEWARD_SUFFIX,
    check_steward_location,
    default_steward_dir,
    write_steward_record,
)

__all__ = [  # the names of deid.py before it was split
    "BASIC_DUMMY", "BASIC_EMPTY", "BASIC_REMOVE", "BURNED_IN_MODALITIES", "CODE_BASIC",
    "CODE_CLEAN_DESCRIPTORS", "CODE_DEVICE_IDENTITY", "CODE_MODIFIED_DATES",
    "CODE_PATIENT_CHARACTERISTICS", "CODE_SAFE_PRIVATE", "DESCRIPTORS", "DEVICE_IDENTITY", "IDENTIFYING",
    "IDENTITY_KEPT_WARNING", "INSTANCE_UIDS", "METHOD_TEXT", "PATIENT_CHARACTERISTICS", "SAFE_PRIVATE",
    "SECRET_NAME", "STEWARD_FILE", "STEWARD_SUFFIX", "DeidContext", "DeidError", "DeidOptions",
    "DicomDeidentifier", "FileIdentifiers", "Pseudonyms", "burned_in_reason", "check_steward_location",
    "config_dir", "default_secret_path", "default_steward_dir", "load_secret", "prepare",
    "scrub_release_paths", "write_steward_record",
]

IDENTITY_KEPT_WARNING = "IDENTITY KEPT: not for release outside the hospital"
METHOD_TEXT = ("SALM Desktop {version}", "PS3.15 Basic Profile: dicognito, HMAC-SHA256 pseudonyms")


# -- options ------------------------------------------------------------------------------------------
CODE_BASIC = ("113100", "Basic Application Confidentiality Profile")
CODE_CLEAN_DESCRIPTORS = ("113105", "Clean Descriptors Option")
CODE_MODIFIED_DATES = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
CODE_PATIENT_CHARACTERISTICS = ("113108", "Retain Patient Characteristics Option")
CODE_DEVICE_IDENTITY = ("113109", "Retain Device Identity Option")
CODE_SAFE_PRIVATE = ("113111", "Retain Safe Private Option")


@dataclass(frozen=True)
class DeidOptions:
    """What the steward asked for. ``keep_identity`` switches de-identification off (internal use only)."""

    keep_identity: bool = False
    retain_dates: bool = False  # 113107: dates shifted by a per-patient offset (whole days), intervals kept
    retain_patient_characteristics: bool = False  # 113108: sex, age, size, weight, ...
    retain_device_identity: bool = False  # 113109: serial numbers, station name, ...
    clean_descriptors: bool = False  # 113105: descriptions kept, with known identifiers scrubbed; else removed
    retain_safe_private: bool = False  # 113111: the private attributes PS3.15 lists as safe; else all removed
    allow_burned_in: bool = False  # write files that may carry burned-in annotations (the steward checked them)
    secret: Path | None = None  # None: the user's configuration folder

    @property
    def enabled(self) -> bool:
        return not self.keep_identity

    def codes(self) -> list[tuple[str, str]]:
        chosen = [CODE_BASIC]
        for flag, code in ((self.clean_descriptors, CODE_CLEAN_DESCRIPTORS), (self.retain_dates, CODE_MODIFIED_DATES),
                           (self.retain_patient_characteristics, CODE_PATIENT_CHARACTERISTICS),
                           (self.retain_device_identity, CODE_DEVICE_IDENTITY), (self.retain_safe_private, CODE_SAFE_PRIVATE)):
            if flag:
                chosen.append(code)
        return chosen

    def release_facts(self) -> dict[str, Any]:
        """What the release may say about its de-identification (no secret, no path)."""
        if self.keep_identity:
            return {"deidentified": False, "identity_kept": True, "warning": IDENTITY_KEPT_WARNING}
        return {
            "deidentified": True, "identity_kept": False,
            "profile": "DICOM PS3.15 Basic Application Level Confidentiality Profile",
            "options": [{"code": c, "meaning": m} for c, m in self.codes()],
            "burned_in_annotations_allowed": self.allow_burned_in,
            "pseudonyms": "HMAC-SHA256 keyed by a secret kept by the hospital (not in the release)",
        }

    def summary_line(self) -> str:
        if self.keep_identity:
            return IDENTITY_KEPT_WARNING
        options = ", ".join(m for c, m in self.codes()[1:])
        return "De-identified: DICOM PS3.15 Basic Application Confidentiality Profile" + (f" with {options}" if options else "")

    def fingerprint_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["secret"] = None  # where the secret lives does not change the output; its content does (see salt)
        return data


# -- the de-identifier ---------------------------------------------------------------------------------
@dataclass
class FileIdentifiers:
    """The identifying values one source file held (for scrubbing text and for the steward)."""

    values: set[str] = field(default_factory=set)

    def add(self, value: Any) -> None:
        if value is None:
            return
        items = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
        for item in items:
            text = str(item).strip()
            if not text:
                continue
            self.values.add(text)
            for part in re.split(r"[\^=\s,]+", text):  # name components
                if len(part) >= 3:
                    self.values.add(part)


IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName", "ReferringPhysicianName",
               "StudyID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName", "PatientAddress",
               "PerformingPhysicianName", "OperatorsName", "NameOfPhysiciansReadingStudy", "InstitutionAddress")


class DicomDeidentifier:
    """Applies the profile and options to pydicom datasets; one per job (pseudonyms are shared)."""

    def __init__(self, options: DeidOptions, secret: bytes, instance_salt: str) -> None:
        from dicognito.addressanonymizer import AddressAnonymizer
        from dicognito.idanonymizer import IDAnonymizer
        from dicognito.pnanonymizer import PNAnonymizer
        from dicognito.unwantedelements import UnwantedElementsStripper

        self.options = options
        self.pseudonyms = Pseudonyms(secret, instance_salt)
        randomizer = dicognito_randomizer(self.pseudonyms)
        # dicognito's element anonymizers catch what the table does not list: every other person name,
        # the ID attributes it knows, addresses.
        self._fallbacks = [
            UnwantedElementsStripper("BranchOfService", "Occupation", "MedicalRecordLocator", "MilitaryRank",
                                     "PatientInsurancePlanCodeSequence", "PatientReligiousPreference",
                                     "PatientTelecomInformation", "PatientTelephoneNumbers", "ReferencedPatientPhotoSequence",
                                     "ResponsibleOrganization"),
            PNAnonymizer(randomizer),
            IDAnonymizer(randomizer, "", "", "OtherPatientIDs", "FillerOrderNumberProcedure", "PlacerOrderNumberProcedure",
                         "ScheduledProcedureStepID", "PerformedProcedureStepID", "RequestedProcedureID"),
            AddressAnonymizer(randomizer),
        ]
        self.identifiers: set[str] = set()  # every identifying value met so far (scrubbed from release-side text)
        self.private_dropped = 0

    # The job's release-side strings (paths) must not carry identifiers either.
    def scrub(self, text: str, extra: Iterable[str] = ()) -> str:
        values = sorted(set(self.identifiers) | set(extra), key=len, reverse=True)
        for value in values:
            if len(value) >= 3 and value.lower() in text.lower():
                text = re.sub(re.escape(value), self.pseudonyms.code("text", value, 8), text, flags=re.IGNORECASE)
        return text

    def scrub_strings(self, value: Any) -> Any:
        """A copy of a JSON-like value with identifiers scrubbed from every string in it."""
        if isinstance(value, dict):
            return {k: self.scrub_strings(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.scrub_strings(v) for v in value]
        return self.scrub(value) if isinstance(value, str) else value

    def deidentify(self, ds: Dataset) -> FileIdentifiers:
        """De-identify ``ds`` in place; returns the identifying values it held."""
        found = FileIdentifiers()
        for keyword in IDENTIFYING:
            found.add(ds.get(keyword))
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            found.add(ds.get(keyword))
        self.identifiers |= {v for v in found.values if len(v) >= 3}
        descriptors_scrub = set(found.values)

        patient_key = str(ds.get("PatientID", "") or "").strip() or str(ds.get("PatientName", "") or "").strip() \
            or str(ds.get("StudyInstanceUID", "") or "")
        pseudonym = self.pseudonyms.patient(patient_key)
        study_uid = str(ds.get("StudyInstanceUID", "") or "")
        dates = None
        if self.options.retain_dates:
            from dicognito.datetimeanonymizer import DateTimeAnonymizer

            dates = DateTimeAnonymizer(-24 * self.pseudonyms.date_offset_days(patient_key))

        self._private_tags(ds)
        for group in {tag.group for tag in ds.keys() if 0x5000 <= tag.group <= 0x50FF or 0x6000 <= tag.group <= 0x60FF}:
            for tag in [t for t in ds.keys() if t.group == group]:
                del ds[tag]  # curves and overlays may hold identifying graphics or text

        def visit(dataset: Dataset, elem) -> None:
            keyword = elem.keyword
            if keyword == "PatientName" or keyword == "PatientID":
                elem.value = pseudonym
                return
            if keyword == "StudyID":
                elem.value = "S" + self.pseudonyms.code("study-id", study_uid, 10) if elem.value else elem.value
                return
            if keyword in ("PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence"):
                return
            if self._kept(keyword):
                if keyword in DESCRIPTORS and elem.VR != "SQ" and elem.value:
                    if isinstance(elem.value, pydicom.multival.MultiValue):
                        elem.value = [self.scrub(str(v), descriptors_scrub) for v in elem.value]
                    else:
                        elem.value = self.scrub(str(elem.value), descriptors_scrub)
                elif elem.VR == "UI":
                    self._uid(elem)
                return
            if keyword in BASIC_REMOVE:
                del dataset[elem.tag]
                return
            if elem.VR == "SQ" and (keyword in BASIC_EMPTY or keyword in BASIC_DUMMY):
                del dataset[elem.tag]  # an emptied sequence is invalid where it is Type 3 (all of these in image IODs)
                return
            if keyword in BASIC_EMPTY:
                if elem.VR in ("DA", "DT", "TM") and dates is not None and keyword != "PatientBirthDate":
                    dates(dataset, elem)
                else:
                    elem.value = empty_value(elem)
                return
            if keyword in BASIC_DUMMY:
                if elem.VR == "SQ":
                    elem.value = Sequence([])
                else:
                    elem.value = "ANONYMIZED" if elem.VR != "PN" else "ANONYMIZED^"
                return
            if elem.VR == "UI":
                self._uid(elem)
                return
            if elem.VR in ("DA", "DT", "TM"):
                if dates is not None:
                    if elem.VR != "TM":  # whole-day shifts leave times of day as they were
                        dates(dataset, elem)
                else:
                    elem.value = None
                return
            for handler in self._fallbacks:
                if handler(dataset, elem):
                    return

        ds.walk(visit)
        self._sweep(ds, {v for v in found.values if len(v) >= 4} - {pseudonym})
        self._mark(ds)
        return found

    def _sweep(self, ds: Dataset, values: set[str]) -> None:
        """Residual identifiers: text attributes the profile keeps (a sequence name, a protocol) may repeat the
        patient's name or ID; such occurrences are replaced as well."""
        if not values:
            return

        def visit(dataset: Dataset, elem) -> None:
            if elem.VR not in TEXT_VRS or not elem.value:
                return
            items = list(elem.value) if isinstance(elem.value, pydicom.multival.MultiValue) else [elem.value]
            text = [str(v) for v in items]
            cleaned = [self.scrub(t, values) if any(v.lower() in t.lower() for v in values) else t for t in text]
            if cleaned != text:
                elem.value = cleaned if len(cleaned) > 1 else cleaned[0]

        ds.walk(visit)

    def _kept(self, keyword: str) -> bool:
        o = self.options
        return ((o.retain_patient_characteristics and keyword in PATIENT_CHARACTERISTICS)
                or (o.retain_device_identity and keyword in DEVICE_IDENTITY)
                or (o.clean_descriptors and keyword in DESCRIPTORS))

    def _uid(self, elem) -> None:
        keyword = elem.keyword or ""
        if not elem.value or keyword.endswith("ClassUID") or keyword == "TransferSyntaxUID":
            return
        instance = keyword in INSTANCE_UIDS

        def new(value: str) -> str:
            value = str(value)
            if value in UID_dictionary:  # a UID the standard defines (a coding scheme, a context group): not identifying
                return value
            return self.pseudonyms.uid(value, instance)

        if isinstance(elem.value, (list, pydicom.multival.MultiValue)):
            elem.value = [new(v) for v in elem.value]
        else:
            elem.value = new(elem.value)

    def _private_tags(self, ds: Dataset) -> None:
        """Drop private attributes (in sequences too); with the safe-private option keep the listed ones."""
        for elem in list(ds):
            if elem.VR == "SQ" and not elem.tag.is_private:
                for item in elem.value:
                    self._private_tags(item)
        private = [elem.tag for elem in ds if elem.tag.is_private]
        if not private:
            return
        keep: set[int] = set()
        if self.options.retain_safe_private:
            for tag in private:
                if tag.is_private_creator:
                    continue
                block = (tag.element >> 8) & 0xFF
                creator = ds.get((tag.group, block))
                name = str(creator.value).strip() if creator is not None else ""
                if (name, tag.group, tag.element & 0xFF) in SAFE_PRIVATE:
                    keep.update({int(tag), int(pydicom.tag.Tag(tag.group, block))})
        for tag in private:
            if int(tag) not in keep:
                del ds[tag]
                self.private_dropped += 1

    def _mark(self, ds: Dataset) -> None:
        burned = burned_in_reason(ds)
        ds.PatientIdentityRemoved = "NO" if burned else "YES"
        text = [METHOD_TEXT[0].format(version=__version__)[:64], METHOD_TEXT[1]]
        if burned:
            text.append("burned-in annotations kept at the steward's request")
        ds.DeidentificationMethod = text
        items = []
        for code, meaning in self.options.codes():
            item = Dataset()
            item.CodeValue = code
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        if not self.options.retain_dates:
            ds.LongitudinalTemporalInformationModified = "REMOVED"
        else:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"

    @staticmethod
    def clean_file_meta(ds: Dataset) -> None:
        """PS3.15 E.1.1 (7): the file meta and the preamble describe the de-identifying application only."""
        meta = FileMetaDataset()
        for keyword in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID"):
            if keyword in ds.file_meta:
                setattr(meta, keyword, ds.file_meta.get(keyword))
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = ("SALM_" + __version__.replace(".", "_"))[:16]
        ds.file_meta = meta
        ds.preamble = b"\x00" * 128

    def steward_table(self) -> dict[str, Any]:
        return {"uid_map": dict(self.pseudonyms.uid_map), "patients": dict(self.pseudonyms.patients),
                "private_attributes_dropped": self.private_dropped}


# -- what a job needs -----------------------------------------------------------------------------------
@dataclass
class DeidContext:
    """The options, the loaded secret and the steward folder of one job (prepared before any work)."""

    options: DeidOptions
    secret: bytes | None
    steward: Path | None

    @property
    def enabled(self) -> bool:
        return self.options.enabled


def prepare(options: DeidOptions | None, out: Path, steward: Path | None = None, inputs: Iterable[Path] = ()) -> DeidContext:
    """Check everything de-identification needs before the job computes anything (raises DeidError)."""
    options = options or DeidOptions()
    if options.keep_identity:
        return DeidContext(options, None, None)
    secret = load_secret(options.secret)
    where = check_steward_location(Path(steward) if steward is not None else default_steward_dir(Path(out).expanduser().resolve()),
                                   out, inputs)
    return DeidContext(options, secret, where)


def scrub_release_paths(root: Path, files: list[Path], deidentifier: DicomDeidentifier) -> list[Path]:
    """Rename output files whose path (under ``root``) holds an identifier any DICOM file of the job held
    (e.g. a NIfTI converted from the same study and named after the patient). Returns the new paths."""
    out = []
    for path in files:
        rel = Path(path).relative_to(root)
        clean = Path(*[deidentifier.scrub(part) for part in rel.parts])
        if clean != rel:
            target = root / clean
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            path = target
        out.append(Path(path))
    for folder in sorted({p.parent for p in files}, key=lambda p: len(p.parts), reverse=True):
        if folder != root and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # a folder emptied by the renames
    return out
