"""The attribute tables of DICOM PS3.15 (Basic Profile, Table E.1-1, and the options of CID 7050) that
:class:`~salm_desktop.core.export.deid.DicomDeidentifier` applies, and the burned-in annotation check."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence


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


TEXT_VRS = {"SH", "LO", "ST", "LT", "UT", "UC", "PN"}


def empty_value(elem) -> Any:
    return Sequence([]) if elem.VR == "SQ" else None
