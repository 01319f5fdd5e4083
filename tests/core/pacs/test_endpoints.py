"""Parsing PACS endpoints and keeping credentials out of every message."""

from __future__ import annotations

import pytest

from salm_desktop.core.pacs import Credentials, PacsError, credentials_from_env, parse_endpoint


def test_dicomweb_url_with_study_and_series():
    e = parse_endpoint("dicomweb:https://pacs.example.org:8443/dicom-web/studies/1.2.3/series/4.5")
    assert (e.kind, e.url, e.study, e.series) == ("dicomweb", "https://pacs.example.org:8443/dicom-web", "1.2.3", "4.5")
    assert parse_endpoint("dicomweb:http://h:80/wado").study is None


def test_dimse_spec():
    e = parse_endpoint("dimse:ORTHANC@10.0.0.5:4242")
    assert (e.kind, e.aet, e.host, e.port, e.display) == ("dimse", "ORTHANC", "10.0.0.5", 4242, "dimse:ORTHANC@10.0.0.5:4242")


@pytest.mark.parametrize("bad", ["dimse:ORTHANC@host", "dimse:A_TITLE_LONGER_THAN_16@h:1", "dicomweb:ftp://h/x",
                                 "dimse:X@h:70000", "pacs:x", "dicomweb:http://h/dicom-web?StudyDate=2020"])
def test_bad_specs_are_refused_clearly(bad):
    with pytest.raises(PacsError, match="expected|not supported"):
        parse_endpoint(bad)


def test_credentials_in_the_url_are_refused_without_echoing_them():
    with pytest.raises(PacsError) as info:
        parse_endpoint("dicomweb:https://alice:hunter2@pacs.example.org/dicom-web")
    assert "hunter2" not in str(info.value) and "SALM_PACS_" in str(info.value)


def test_credentials_from_env_and_files_never_show_in_repr(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("tok-123-secret\n", encoding="utf-8")
    creds = credentials_from_env({"SALM_PACS_TOKEN_FILE": str(token_file)})
    assert creds.token == "tok-123-secret"
    assert "tok-123-secret" not in repr(creds)
    assert creds.http_session().headers["Authorization"] == "Bearer tok-123-secret"
    basic = credentials_from_env({"SALM_PACS_USER": "u", "SALM_PACS_PASSWORD": "pw-secret"})
    assert basic.http_session().auth == ("u", "pw-secret") and "pw-secret" not in repr(basic)
    with pytest.raises(PacsError, match="cannot read the token file"):
        credentials_from_env({"SALM_PACS_TOKEN_FILE": str(tmp_path / "missing")})
    assert Credentials().ssl_context() is None
