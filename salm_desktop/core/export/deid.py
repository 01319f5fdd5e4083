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

The element-level work on values that are not in the table (every other person name, identifier,
address, and the date shift of the "modified dates" option) is done by dicognito's element
anonymizers, fed with a randomizer keyed by the same secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID_dictionary

from salm_desktop import __version__

SECRET_NAME = "deid-secret"
STEWARD_SUFFIX = ".steward"
IDENTITY_KEPT_WARNING = "IDENTITY KEPT: not for release outside the hospital"
METHOD_TEXT = ("SALM Desktop {version}", "PS3.15 Basic Profile: dicognito, HMAC-SHA256 pseudonyms")


class DeidError(Exception):
    """De-identification cannot be done as asked (one line for the user)."""


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


# -- the secret --------------------------------------------------------------------------------------
def config_dir() -> Path:
    """The user's configuration folder for SALM Desktop (XDG on Linux; AppData / Application Support elsewhere)."""
    override = os.environ.get("SALM_DESKTOP_CONFIG_DIR")
    if override:
        return Path(override).expanduser()
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "salm-desktop"


def default_secret_path() -> Path:
    return config_dir() / SECRET_NAME


def load_secret(path: Path | None = None) -> bytes:
    """The hospital's de-identification secret. The default one is created on first use (mode 0600);
    a given file must exist and hold at least 16 bytes. Raises :class:`DeidError` with the reason."""
    if path is None:
        path = default_secret_path()
        if not path.exists():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="ascii") as handle:
                    handle.write(secrets.token_hex(32) + "\n")
            except FileExistsError:
                pass  # created by a parallel job: use it
            except OSError as exc:
                raise DeidError(f"cannot create the de-identification secret {path}: {exc.strerror or exc}") from None
    path = Path(path).expanduser()
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError:
        raise DeidError(f"de-identification secret {path}: file not found") from None
    except IsADirectoryError:
        raise DeidError(f"de-identification secret {path}: is a folder, not a file") from None
    except OSError as exc:
        raise DeidError(f"de-identification secret {path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) < 16:
        raise DeidError(f"de-identification secret {path}: too short ({len(data)} bytes; at least 16 are needed)")
    return data


# -- keyed pseudonyms ----------------------------------------------------------------------------------
class Pseudonyms:
    """HMAC-SHA256 pseudonyms keyed by the secret; remembers every mapping for the steward record."""

    def __init__(self, secret: bytes, instance_salt: str) -> None:
        self._secret = bytes(secret)
        self._instance_salt = str(instance_salt)
        self.uid_map: dict[str, str] = {}
        self.patients: dict[str, str] = {}

    def digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self._secret, f"{kind}\x1f{value}".encode("utf-8"), hashlib.sha256).digest()

    def uid(self, original: str, instance: bool) -> str:
        """A new UID under 2.25: instance UIDs (SOP, Series) fold in the settings, the others only the secret."""
        original = str(original).strip()
        kind = f"instance-uid\x1f{self._instance_salt}" if instance else "uid"
        # PS3.5 B.2: 2.25 followed by the integer of a UUID; the UUID's bits come from the HMAC, so the
        # same original and secret give the same UID (pydicom's generate_uid(prefix=None) is random).
        new = "2.25." + str(uuid.UUID(bytes=self.digest(kind, original)[:16], version=4).int)
        self.uid_map[original] = new
        return new

    def code(self, kind: str, value: str, length: int = 12) -> str:
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        number = int.from_bytes(self.digest(kind, value), "big")
        out = []
        for _ in range(length):
            number, r = divmod(number, len(alphabet))
            out.append(alphabet[r])
        return "".join(out)

    def patient(self, key: str) -> str:
        pseudonym = "SALM" + self.code("patient", key, 10)
        self.patients[key] = pseudonym
        return pseudonym

    def date_offset_days(self, patient_key: str) -> int:
        """Per-patient shift into the past, 62 to 730 days (intervals within a patient are kept)."""
        return 62 + int.from_bytes(self.digest("date-offset", patient_key)[:8], "big") % (730 - 62)

    def release_id(self, internal_id: str) -> str:
        """A series or unit id for the release: the internal ids are plain hashes of UIDs (linkable)."""
        return hashlib.sha256(self.digest("release-id", internal_id)).hexdigest()[:10]


def _dicognito_randomizer(pseudonyms: Pseudonyms):
    from dicognito.randomizer import Randomizer

    class KeyedRandomizer(Randomizer):
        """dicognito's randomizer with HMAC-SHA256 keyed by the hospital's secret instead of md5(seed + value)."""

        def __init__(self) -> None:
            super().__init__("keyed")

        def to_int(self, original_value: str) -> int:
            return int.from_bytes(pseudonyms.digest("dicognito", str(original_value))[:16], "big")

    return KeyedRandomizer()


# -- PS3.15 Table E.1-1 --------------------------------------------------------------------------------
# Actions: X remove, Z empty (zero length, sequences emptied), D dummy value. Where the table allows
# X/Z or X/Z/D we empty (Z): the attribute stays present, so Type 2 attributes stay valid, and an empty
# Type 3 attribute is allowed. UIDs (U) are handled by VR for every attribute (see _UidAnonymizer).
def _keywords(text: str) -> frozenset[str]:
    return frozenset(text.split())


BASIC_REMOVE = _keywords("""
    AcquisitionComments AcquisitionContextSequence AcquisitionProtocolDescription ActualHumanPerformersSequence
    AdditionalPatientHistory AdmissionID AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription Allergies
    Arbitrary AuthorObserverSequence BranchOfService CassetteID CommentsOnThePerformedProcedureStep
    ConfidentialityConstraintOnPatientDataDescription ContentCreatorIdentificationCodeSequence ContentSequence
    ContributionDescription CountryOfResidence CurrentPatientLocation CustodialOrganizationSequence DataSetTrailingPadding
    DerivationDescription DigitalSignatureUID DigitalSignaturesSequence DischargeDiagnosisDescription DistributionAddress
    DistributionName EthnicGroup FrameComments GantryID GeneratorID HumanPerformerName HumanPerformerOrganization
    IconImageSequence IdentifyingComments ImageComments ImagePresentationComments ImagingServiceRequestComments Impressions
    InstitutionAddress InstitutionalDepartmentName InsurancePlanIdentification IntendedRecipientsOfResultsIdentificationSequence
    InterpretationApproverSequence InterpretationAuthor InterpretationDiagnosisDescription InterpretationIDIssuer
    InterpretationRecorder InterpretationText InterpretationTranscriber IssuerOfAdmissionID IssuerOfPatientID
    IssuerOfServiceEpisodeID LastMenstrualDate MAC MedicalAlerts MedicalRecordLocator MilitaryRank ModifiedAttributesSequence
    ModifiedImageDescription ModifyingDeviceID ModifyingDeviceManufacturer NameOfPhysiciansReadingStudy
    NamesOfIntendedRecipientsOfResults Occupation OriginalAttributesSequence OrderCallbackPhoneNumber OrderEnteredBy
    OrderEntererLocation OtherPatientIDs OtherPatientIDsSequence OtherPatientNames ParticipantSequence PatientAddress
    PatientComments PatientState PatientTransportArrangements PatientAge PatientBirthName PatientBirthTime
    PatientInstitutionResidence PatientInsurancePlanCodeSequence PatientMotherBirthName PatientPrimaryLanguageCodeSequence
    PatientPrimaryLanguageModifierCodeSequence PatientReligiousPreference PatientSize PatientTelephoneNumbers PatientWeight
    PerformedLocation PerformedProcedureStepDescription PerformedProcedureStepEndDate PerformedProcedureStepEndTime
    PerformedProcedureStepID PerformedProcedureStepStartDate PerformedProcedureStepStartTime PerformedStationAETitle
    PerformedStationGeographicLocationCodeSequence PerformedStationName PerformedStationNameCodeSequence
    PerformingPhysicianIdentificationSequence PerformingPhysicianName PersonAddress PersonTelephoneNumbers
    PhysicianApprovingInterpretation PhysiciansReadingStudyIdentificationSequence PhysiciansOfRecord
    PhysiciansOfRecordIdentificationSequence PlateID PreMedication PregnancyStatus ReasonForTheImagingServiceRequest
    ReasonForStudy ReferencedDigitalSignatureSequence ReferencedPatientAliasSequence ReferencedPatientSequence
    ReferencedSOPInstanceMACSequence ReferringPhysicianAddress ReferringPhysicianIdentificationSequence
    ReferringPhysicianTelephoneNumbers RegionOfResidence RequestAttributesSequence RequestedContrastAgent
    RequestedProcedureComments RequestedProcedureID RequestedProcedureLocation RequestingPhysician RequestingService
    ResponsibleOrganization ResponsiblePerson ResultsComments ResultsDistributionListSequence ResultsIDIssuer
    ScheduledHumanPerformersSequence ScheduledPatientInstitutionResidence ScheduledPerformingPhysicianIdentificationSequence
    ScheduledPerformingPhysicianName ScheduledProcedureStepEndDate ScheduledProcedureStepEndTime
    ScheduledProcedureStepDescription ScheduledProcedureStepLocation ScheduledProcedureStepStartDate
    ScheduledProcedureStepStartTime ScheduledStationAETitle ScheduledStationGeographicLocationCodeSequence
    ScheduledStationName ScheduledStationNameCodeSequence ScheduledStudyLocation ScheduledStudyLocationAETitle
    SeriesDescription ServiceEpisodeDescription ServiceEpisodeID SmokingStatus SpecialNeeds StudyComments StudyDescription
    StudyIDIssuer TextComments TextString TimezoneOffsetFromUTC TopicAuthor TopicKeywords TopicSubject TopicTitle
    VerifyingOrganization VisitComments AcquisitionDeviceProcessingDescription DetectorID OperatorIdentificationSequence
    ProtocolName SeriesDate SeriesTime AcquisitionDateTime SourceImageSequence DerivationImageSequence
    DeviceUID DeviceSerialNumber DeviceDescription
""")
BASIC_EMPTY = _keywords("""
    AccessionNumber ContentCreatorName FillerOrderNumberImagingServiceRequest PatientBirthDate PatientSex
    PlacerOrderNumberImagingServiceRequest ReferringPhysicianName StudyDate StudyTime
    VerifyingObserverIdentificationCodeSequence ContentDate ContentTime ContrastBolusAgent AcquisitionDate AcquisitionTime
    PatientSexNeutered ReferencedStudySequence RequestedProcedureDescription ReviewerName InstitutionCodeSequence
    InstitutionName OperatorsName ReferencedPerformedProcedureStepSequence StationName
""")
BASIC_DUMMY = _keywords("GraphicAnnotationSequence PersonIdentificationCodeSequence PersonName VerifyingObserverName VerifyingObserverSequence")
# Handled apart: PatientName and PatientID get the patient's pseudonym, StudyID a study pseudonym.

PATIENT_CHARACTERISTICS = _keywords("PatientSex PatientAge PatientSize PatientWeight EthnicGroup SmokingStatus PregnancyStatus PatientSexNeutered")
DEVICE_IDENTITY = _keywords("""
    DeviceSerialNumber StationName DetectorID GantryID GeneratorID PlateID CassetteID DeviceUID DeviceDescription
    ModifyingDeviceID ModifyingDeviceManufacturer PerformedStationName PerformedStationAETitle
""")
DESCRIPTORS = _keywords("""
    StudyDescription SeriesDescription ImageComments ProtocolName AcquisitionComments AcquisitionProtocolDescription
    AcquisitionDeviceProcessingDescription RequestedProcedureDescription PerformedProcedureStepDescription
    ScheduledProcedureStepDescription FrameComments ContrastBolusAgent AdditionalPatientHistory
""")
# PS3.15 Table E.3.10-1 (Retain Safe Private Option), the entries for the vendors we meet: (creator, group, element).
SAFE_PRIVATE = {
    ("SIEMENS MR HEADER", 0x0019, 0x0C), ("SIEMENS MR HEADER", 0x0019, 0x0D), ("SIEMENS MR HEADER", 0x0019, 0x0E),
    ("SIEMENS MR HEADER", 0x0019, 0x27), ("GEMS_PARM_01", 0x0043, 0x39),
    ("Philips Imaging DD 001", 0x2001, 0x03), ("Philips Imaging DD 001", 0x2001, 0x04),
}
# Modalities that often carry burned-in annotations when the file does not say otherwise.
BURNED_IN_MODALITIES = {"US", "SC", "XC"}
# UIDs that identify an instance of this release: folded with the protection settings.
INSTANCE_UIDS = {"SOPInstanceUID", "SeriesInstanceUID", "MediaStorageSOPInstanceUID", "ReferencedSOPInstanceUID",
                 "ReferencedSOPInstanceUIDInFile"}


def burned_in_reason(ds: Dataset) -> str | None:
    """Why ``ds`` may show identifying text in its pixels, or None."""
    flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if flag == "YES":
        return "BurnedInAnnotation is YES"
    if not flag and modality in BURNED_IN_MODALITIES:
        return f"modality {modality} without a BurnedInAnnotation attribute (may show text in the pixels)"
    return None


_TEXT_VRS = {"SH", "LO", "ST", "LT", "UT", "UC", "PN"}


def _empty_value(elem) -> Any:
    return Sequence([]) if elem.VR == "SQ" else None


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
        randomizer = _dicognito_randomizer(self.pseudonyms)
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
                    elem.value = _empty_value(elem)
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
            if elem.VR not in _TEXT_VRS or not elem.value:
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


# -- the steward record ---------------------------------------------------------------------------------
def default_steward_dir(out: Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + STEWARD_SUFFIX)


def check_steward_location(steward: Path, out: Path, inputs: Iterable[Path] = ()) -> Path:
    """The private record must live outside the release (and outside the inputs)."""
    steward = Path(steward).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    if steward == out or out in steward.parents:
        raise DeidError(f"the steward record {steward} would be inside the release {out}: "
                        "choose a folder outside the release (by default it is written next to it)")
    for raw in inputs:
        src = Path(raw).expanduser().resolve()
        # a file input: a new folder beside it is fine (as for the release itself); a folder input: not inside it
        if steward == src or (src.is_dir() and src in steward.parents):
            raise DeidError(f"the steward record {steward} would be inside the input {src}: choose a folder outside the inputs")
    if steward.exists() and not steward.is_dir():
        raise DeidError(f"the steward record {steward} exists and is not a folder")
    try:  # one record per release: never overwrite the map of another one
        other = json.loads((steward / STEWARD_FILE).read_text(encoding="utf-8")).get("release")
    except (OSError, ValueError, AttributeError):
        other = None
    if other and Path(other) != out:
        raise DeidError(f"the steward folder {steward} already holds the private record of another release ({other}): "
                        "choose another folder")
    return steward


def _write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(document, indent=2, default=str))
    os.replace(tmp, path)


STEWARD_FILE = "steward-record.json"


def write_steward_record(steward: Path, *, release: Path, options: DeidOptions, table: dict[str, Any],
                         files: dict[str, str] | None = None, skipped: list[dict[str, str]] | None = None) -> Path:
    """Write the private record (UID map, pseudonym table, source -> release file names) for ``release``.

    The folder is created with mode 0700; the file with 0600. It holds original identifiers: it must
    stay with the hospital's data steward.
    """
    steward = Path(steward)
    steward.mkdir(parents=True, exist_ok=True, mode=0o700)
    document = {
        "warning": "PRIVATE: links the release to the original patients; keep it inside the hospital, never share it",
        "software": {"name": "SALM Desktop", "version": __version__},
        "release": str(release),
        "deidentification": options.release_facts(),
        "secret": str(options.secret) if options.secret else str(default_secret_path()),
        "uid_map": table.get("uid_map", {}),
        "patients": table.get("patients", {}),
        "series_ids": table.get("series_ids", {}),
        "units": table.get("units", {}),
        "files": files or {},
        "skipped": skipped or [],
        "private_attributes_dropped": table.get("private_attributes_dropped", 0),
    }
    path = steward / STEWARD_FILE
    _write_json_atomic(path, document)
    return path


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
