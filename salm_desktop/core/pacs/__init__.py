"""PACS in and out: retrieve a study over DICOMweb/DIMSE into a private temporary folder, and send a
finished release back (STOW-RS / C-STORE) with a send journal. Qt-free; see docs/pacs.md."""

from salm_desktop.core.pacs.endpoints import (Credentials, Endpoint, PacsError, credentials_from_env, is_pacs_spec,
                                              parse_endpoint)
from salm_desktop.core.pacs.retrieve import (RetrieveResult, Selection, StudyQuery, find_studies, private_retrieval,
                                             retrieve)
from salm_desktop.core.pacs.send import SendReport, journal_path, send_release

__all__ = ["Credentials", "Endpoint", "PacsError", "RetrieveResult", "Selection", "SendReport", "StudyQuery", "credentials_from_env", "find_studies",
           "is_pacs_spec", "journal_path", "parse_endpoint", "private_retrieval", "retrieve", "send_release"]
