"""The release is de-identified by default and holds no link back (issue 15, items 1-3).

Every study in ../shared/data/dicom is protected with fast settings and the default de-identification;
then every byte of every output file is searched for the sources' identifiers, dciodvfy must find no
error the source did not have, dcmdump and SimpleITK read the release with unchanged geometry, and
the pseudonyms are the same with the same secret and different with another one.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import UID_dictionary

from salm_desktop.cli import main as cli_main
from salm_desktop.core.export.deid import STEWARD_FILE, DeidOptions
from salm_desktop.core.jobs import JobError, run_protect_job
from salm_desktop.core.protect import ProtectSettings

FAST = dict(method="random", mask_ratio=0.2, seed=3, device="cpu")
# Encoding variants share MR_small's SOPInstanceUID, so a folder job loads them once: each gets its own job.
VARIANTS = ["MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm", "MR_small_implicit.dcm",
            "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]
NAMED = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName", "ReferringPhysicianName",
         "StudyID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


def _secret(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _source_dicoms(inp: Path) -> list[Path]:
    files = [inp] if inp.is_file() else sorted(p for p in inp.rglob("*") if p.is_file())
    out = []
    for path in files:
        try:
            pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not DICOM (NRRD, NIfTI, text)
            continue
        out.append(path)
    return out


def _identifiers(paths: list[Path]) -> set[str]:
    """The sources' identifying values: the named attributes (and their name parts) and every instance UID."""
    found: set[str] = set()

    def visit(_ds, elem) -> None:
        if elem.VR == "UI" and elem.value and not (elem.keyword or "").endswith("ClassUID"):
            values = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
            found.update(str(v) for v in values if str(v) not in UID_dictionary)

    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in NAMED:
            value = str(ds.get(keyword, "") or "").strip()
            if value:
                found.add(value)
                found.update(part for part in re.split(r"[\^ ]+", value) if len(part) >= 4)
        ds.walk(visit)
    return {v for v in found if len(v) >= 4}  # shorter values ("1", "M") occur by chance in any binary file


def _readable_forms(path: Path) -> list[bytes]:
    """The file's bytes, plus what its compressed parts hold (gzip, zip members, PDF streams)."""
    data = path.read_bytes()
    forms = [data]
    if data[:2] == b"\x1f\x8b":
        forms.append(gzip.decompress(data))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            forms += [zf.read(name) for name in zf.namelist()]
    if data[:4] == b"%PDF":
        for stream in re.findall(rb"stream\r?\n(.*?)endstream", data, flags=re.S):
            try:
                forms.append(zlib.decompress(stream))
            except zlib.error:
                pass
    return forms


def _leaks(out: Path, identifiers: set[str]) -> list[str]:
    """Every (file, identifier) where the identifier occurs in the file's name or in any of its bytes, as
    UTF-8 text and, in the documents (JSON, HTML, PDF), as UTF-16 too. A number (an ID, a date, a UID)
    counts only as a whole number: a short ID such as 27018 occurs by chance among the digits of any
    new 2.25 UID."""
    numeric = {v for v in identifiers if re.fullmatch(r"[0-9.]+", v)}
    text = {v for v in identifiers if v not in numeric}
    wide = [(v, v.encode("utf-16-le").lower()) for v in identifiers]
    numbers = re.compile(rb"[0-9][0-9.]*[0-9]|[0-9]")
    found = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        found += [f"{rel}: file name holds {v!r}" for v in identifiers if v.lower() in rel.lower()]
        document = path.suffix.lower() in (".json", ".html", ".pdf")
        for form in _readable_forms(path):
            lower = form.lower()
            found += [f"{rel}: holds {v!r}" for v in text if v.lower().encode("utf-8") in lower]
            tokens = {t.decode("ascii").strip(".") for t in numbers.findall(form)}
            found += [f"{rel}: holds {v!r}" for v in numeric & tokens]
            if document:
                found += [f"{rel}: holds {v!r} (UTF-16)" for v, needle in wide if needle in lower]
    return sorted(set(found))


def _short(study: Path, base: Path, files: int = 16) -> Path:
    """``study`` itself, or for a long series (the 150-slice fMRI) a copy of its first ``files`` slices and
    its other files: the slices of one series carry the same identifiers, file after file."""
    dicoms = sorted(study.rglob("*.dcm"))
    if len(dicoms) <= 2 * files:
        return study
    copy = base / study.name
    for path in sorted(p for p in study.rglob("*") if p.is_file()):
        if path.suffix != ".dcm" or path in dicoms[:files]:
            (copy / path.relative_to(study)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy / path.relative_to(study))
    return copy


@pytest.fixture(scope="module")
def releases(dicom_dir: Path, tmp_path_factory):
    """One default (de-identified) job per study folder of shared/data/dicom, one per encoding variant."""
    base = tmp_path_factory.mktemp("deid")
    secret = _secret(base / "secret", "hospital-secret-0123456789abcdef")
    inputs = [_short(d, base / "inputs") for d in sorted(dicom_dir.iterdir()) if d.is_dir()]
    inputs += [dicom_dir / "pydicom_small" / v for v in VARIANTS]
    jobs = {}
    for inp in inputs:
        out = base / "release" / inp.name
        result = run_protect_job([inp], out, ProtectSettings(**FAST), report=inp.name == "ct_3slice_dcmqi",
                                 deid=DeidOptions(secret=secret))
        jobs[inp.name] = (inp, out, result)
    return jobs


def test_every_study_is_released(releases, dicom_dir):
    assert {name for name in releases} >= {d.name for d in dicom_dir.iterdir() if d.is_dir()}
    for name, (inp, out, result) in releases.items():
        assert result.files, name
        assert result.steward_record is not None and result.steward_record.is_file()
        assert out not in result.steward_record.parents  # the private record lies outside the release


def test_no_byte_of_the_release_holds_a_source_identifier(releases):
    for name, (inp, out, _) in releases.items():
        identifiers = _identifiers(_source_dicoms(inp))
        assert len(identifiers) >= 5, f"{name}: too few identifiers to look for"
        assert _leaks(out, identifiers) == [], name


def test_no_byte_of_the_release_holds_an_internal_series_id(releases):
    # internal series ids are hashes of source UIDs that anyone with PACS access can recompute: a link back
    for name, (inp, out, result) in releases.items():
        internal = set(json.loads(result.steward_record.read_text())["series_ids"].values())
        assert internal, name
        assert _leaks(out, internal) == [], name


def test_the_steward_record_holds_the_map_the_release_does_not(releases):
    inp, out, result = releases["ct_3slice_dcmqi"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert "uid_map" not in manifest
    assert manifest["deidentification"]["deidentified"] is True
    assert [o["code"] for o in manifest["deidentification"]["options"]] == ["113100"]
    record = json.loads(result.steward_record.read_text())
    for src in _source_dicoms(inp / "dicom"):
        a = pydicom.dcmread(src, stop_before_pixels=True)
        b = pydicom.dcmread(out / "dicom" / src.name, stop_before_pixels=True)
        for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID"):
            assert record["uid_map"][str(a.get(keyword))] == str(b.get(keyword)), keyword
        assert record["patients"][str(a.PatientID)] == str(b.PatientID)
        assert "SourceImageSequence" not in b
        assert b.PatientIdentityRemoved == "YES"
        assert [item.CodeValue for item in b.DeidentificationMethodCodeSequence] == ["113100"]
        assert b.ImageType[0] == "DERIVED"
    assert oct(result.steward_record.stat().st_mode & 0o777) == "0o600"
    report = (out / "report.html").read_text()
    assert "De-identified: DICOM PS3.15 Basic Application Confidentiality Profile" in report


def _dicom_pairs(inp: Path, out: Path) -> list[tuple[Path, Path]]:
    pairs = []
    for src in _source_dicoms(inp):
        dst = out / (src.name if inp.is_file() else src.relative_to(inp))
        if dst.is_file():
            pairs.append((src, dst))
    return pairs


def test_dciodvfy_finds_no_new_error_and_dcmdump_reads_every_file(releases, dciodvfy):
    checked = 0
    for name, (inp, out, _) in releases.items():
        pairs = _dicom_pairs(inp, out)
        assert pairs, name
        for src, dst in pairs[:12]:  # long series are alike file to file: the first 12 of each
            new = dciodvfy(dst) - dciodvfy(src)
            assert not new, f"{name}/{dst.name}: new dciodvfy errors {new}"
            dump = subprocess.run(["dcmdump", "-q", str(dst)], capture_output=True, text=True)
            assert dump.returncode == 0, dump.stderr
            checked += 1
    assert checked > 40


def _geometry(folder: Path) -> dict[int, tuple]:
    reader = sitk.ImageSeriesReader()
    found = {}
    for sid in reader.GetGDCMSeriesIDs(str(folder)):
        files = reader.GetGDCMSeriesFileNames(str(folder), sid)
        reader.SetFileNames(files)
        image = reader.Execute()
        found[len(files)] = (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    return found


@pytest.mark.parametrize("name,sub", [("ct_3slice_dcmqi", "dicom"), ("hitachi_shoulder_mr", "dicom"),
                                      ("qin_prostate_adc_mr", "dicom"), ("nih_siemens_epi_mosaic", "dicom")])
def test_simpleitk_reads_the_release_with_unchanged_geometry(releases, name, sub):
    inp, out, _ = releases[name]
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    before, after = _geometry(inp / sub), _geometry(out / sub)
    assert before and before.keys() == after.keys()
    for n in before:
        assert before[n][0] == after[n][0]
        for a, b in zip(before[n][1:], after[n][1:]):
            np.testing.assert_allclose(b, a, atol=1e-6)


def _pseudonyms(out: Path) -> dict[str, set[str]]:
    values: dict[str, set[str]] = {"PatientID": set(), "PatientName": set(), "StudyID": set(), "uids": set()}
    for path in sorted(out.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in ("PatientID", "PatientName", "StudyID"):
            values[keyword].add(str(ds.get(keyword)))
        values["uids"] |= {str(ds.get(k)) for k in ("StudyInstanceUID", "FrameOfReferenceUID", "SeriesInstanceUID", "SOPInstanceUID")}
    return values


def test_same_secret_same_pseudonyms_other_secret_none_in_common(releases, dicom_dir, tmp_path):
    inp, first, _ = releases["ct_3slice_dcmqi"]
    secret = Path(releases["ct_3slice_dcmqi"][2].steward_record).parent  # any path: the record names the secret
    record = json.loads((secret / STEWARD_FILE).read_text())
    same = run_protect_job([inp / "dicom"], tmp_path / "same", ProtectSettings(**FAST), report=False,
                           deid=DeidOptions(secret=Path(record["secret"])))
    for src in _source_dicoms(inp / "dicom"):  # byte for byte the same release
        assert (tmp_path / "same" / src.name).read_bytes() == (first / "dicom" / src.name).read_bytes()

    reseeded = run_protect_job([inp / "dicom"], tmp_path / "seed4", ProtectSettings(**{**FAST, "seed": 4}), report=False,
                               deid=DeidOptions(secret=Path(record["secret"])))
    a, b = _pseudonyms(tmp_path / "same"), _pseudonyms(tmp_path / "seed4")
    assert a["PatientID"] == b["PatientID"] and a["StudyID"] == b["StudyID"]
    ds_a = pydicom.dcmread(sorted((tmp_path / "same").glob("*.dcm"))[0])
    ds_b = pydicom.dcmread(sorted((tmp_path / "seed4").glob("*.dcm"))[0])
    assert ds_a.StudyInstanceUID == ds_b.StudyInstanceUID and ds_a.FrameOfReferenceUID == ds_b.FrameOfReferenceUID
    assert ds_a.SOPInstanceUID != ds_b.SOPInstanceUID and ds_a.SeriesInstanceUID != ds_b.SeriesInstanceUID
    assert set(reseeded.uid_map.values()).isdisjoint(same.uid_map.values())

    other = run_protect_job([inp / "dicom"], tmp_path / "other", ProtectSettings(**FAST), report=False,
                            deid=DeidOptions(secret=_secret(tmp_path / "other-secret", "another-secret-fedcba9876543210")))
    c = _pseudonyms(tmp_path / "other")
    for key in a:
        assert a[key].isdisjoint(c[key]), key
    assert json.loads(other.steward_record.read_text())["patients"] != record["patients"]


def test_options_are_applied_and_recorded_with_their_codes(dicom_dir, tmp_path):
    src = dicom_dir / "hitachi_shoulder_mr" / "dicom"
    options = DeidOptions(retain_dates=True, retain_patient_characteristics=True, retain_device_identity=True,
                          clean_descriptors=True, retain_safe_private=True,
                          secret=_secret(tmp_path / "secret", "hospital-secret-0123456789abcdef"))
    result = run_protect_job([src], tmp_path / "out", ProtectSettings(**FAST), report=False, deid=options)
    a = pydicom.dcmread(src / "001.dcm", stop_before_pixels=True)
    b = pydicom.dcmread(tmp_path / "out" / "001.dcm", stop_before_pixels=True)
    codes = [item.CodeValue for item in b.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113105", "113107", "113108", "113109", "113111"]
    assert b.PatientSex == a.PatientSex and b.get("PatientAge") == a.get("PatientAge")
    if a.get("StationName"):
        assert b.StationName == a.StationName
    if a.get("StudyDate"):  # shifted, whole days into the past
        assert b.StudyDate and b.StudyDate < a.StudyDate and b.get("StudyTime") == a.get("StudyTime")
    assert b.LongitudinalTemporalInformationModified == "MODIFIED"
    assert b.PatientName != a.PatientName and b.StudyInstanceUID != a.StudyInstanceUID
    assert not [e for e in b if e.tag.is_private and not e.tag.is_private_creator]  # nothing on the safe list here
    assert result.files


def test_keep_identity_keeps_todays_behaviour_and_says_so(dicom_dir, tmp_path, capsys):
    src = dicom_dir / "ct_3slice_dcmqi" / "dicom"
    code = cli_main(["protect", str(src), "--out", str(tmp_path / "internal"), "--method", "random", "--device", "cpu",
                     "--keep-identity", "--no-report"])
    assert code == 0
    err = capsys.readouterr().err
    assert "IDENTITY KEPT: not for release outside the hospital" in err
    manifest = json.loads((tmp_path / "internal" / "manifest.json").read_text())
    assert manifest["deidentification"] == {"deidentified": False, "identity_kept": True,
                                            "warning": "IDENTITY KEPT: not for release outside the hospital"}
    a = pydicom.dcmread(src / "01.dcm", stop_before_pixels=True)
    b = pydicom.dcmread(tmp_path / "internal" / "01.dcm", stop_before_pixels=True)
    assert b.PatientName == a.PatientName and b.StudyInstanceUID == a.StudyInstanceUID
    assert b.SourceImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert manifest["uid_map"][a.SOPInstanceUID] == b.SOPInstanceUID
    assert not (tmp_path / "internal.steward").exists()


def _burned_in_copy(dicom_dir: Path, folder: Path) -> Path:
    folder.mkdir()
    ds = pydicom.dcmread(dicom_dir / "pydicom_small" / "CT_small.dcm")
    ds.BurnedInAnnotation = "YES"
    ds.save_as(folder / "burned.dcm", enforce_file_format=True)
    return folder


def test_burned_in_annotations_are_refused_unless_allowed(dicom_dir, tmp_path, capsys):
    src = _burned_in_copy(dicom_dir, tmp_path / "in")
    secret = _secret(tmp_path / "secret", "hospital-secret-0123456789abcdef")
    with pytest.raises(JobError, match="nothing was written: burned.dcm: not written: BurnedInAnnotation is YES"):
        run_protect_job([src], tmp_path / "out", ProtectSettings(**FAST), report=False, deid=DeidOptions(secret=secret))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.steward").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "secret"]

    code = cli_main(["protect", str(src), "--out", str(tmp_path / "out"), "--method", "random", "--device", "cpu",
                     "--secret", str(secret), "--allow-burned-in", "--no-report"])
    assert code == 0, capsys.readouterr().err
    b = pydicom.dcmread(tmp_path / "out" / "burned.dcm", stop_before_pixels=True)
    assert b.PatientIdentityRemoved == "NO" and b.BurnedInAnnotation == "YES"


@pytest.mark.parametrize("problem", ["missing", "folder", "short"])
def test_an_unreadable_secret_stops_the_job_before_anything_is_written(dicom_dir, tmp_path, capsys, problem):
    secret = {"missing": tmp_path / "nope", "folder": tmp_path, "short": _secret(tmp_path / "short", "abc")}[problem]
    out = tmp_path / "out"
    code = cli_main(["protect", str(dicom_dir / "ct_3slice_dcmqi" / "dicom"), "--out", str(out), "--method", "random",
                     "--device", "cpu", "--secret", str(secret), "--no-report"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"de-identification secret {secret}" in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "out.steward").exists()


def test_a_steward_record_inside_the_release_is_refused(dicom_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli_main(["protect", str(dicom_dir / "ct_3slice_dcmqi" / "dicom"), "--out", str(out), "--method", "random",
                     "--device", "cpu", "--steward-record", str(out / "private"), "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and "would be inside the release" in err
    assert not out.exists()


def test_nifti_and_nrrd_headers_hold_no_identifiers(data_dir, tmp_path):
    import nibabel as nib

    src = tmp_path / "in"
    src.mkdir()
    img = nib.load(str(data_dir / "nifti" / "nibabel" / "anatomical.nii"))
    header = img.header.copy()
    header["descrip"] = b"JANCT000 99000 19500101"
    header["aux_file"] = b"JANCT000"
    header["intent_name"] = b"99000"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, header), str(src / "scan.nii"))
    from PIL import Image, PngImagePlugin

    (src / "png").mkdir()
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "JANCT000 99000")
    Image.fromarray(np.asarray(img.dataobj)[:, :, 10].astype(np.uint8)).save(src / "png" / "slice.png", pnginfo=info)
    volume = sitk.ReadImage(str(data_dir / "nrrd" / "pyradiomics" / "brain1_label.nrrd"))
    volume.SetMetaData("patient", "JANCT000")
    sitk.WriteImage(volume, str(src / "label.nrrd"))
    run_protect_job([src], tmp_path / "out", ProtectSettings(**FAST), report=False,
                    deid=DeidOptions(secret=_secret(tmp_path / "secret", "hospital-secret-0123456789abcdef")))
    assert _leaks(tmp_path / "out", {"JANCT000", "99000", "19500101"}) == []
    back = nib.load(str(tmp_path / "out" / "scan.nii"))
    np.testing.assert_allclose(back.affine, img.affine)
    assert (tmp_path / "out" / "png" / "slice.png").is_file()
    label = sitk.ReadImage(str(tmp_path / "out" / "label.nrrd"))
    assert label.GetSpacing() == volume.GetSpacing() and label.GetOrigin() == volume.GetOrigin()


def test_a_batch_job_is_released_the_same_way(dicom_dir, tmp_path):
    from salm_desktop.core.batch import load_config, run_batch

    cohort = tmp_path / "cohort"
    (cohort / "ct").mkdir(parents=True)
    for src in _source_dicoms(dicom_dir / "ct_3slice_dcmqi" / "dicom"):
        (cohort / "ct" / src.name).write_bytes(src.read_bytes())
    secret = _secret(tmp_path / "secret", "hospital-secret-0123456789abcdef")
    config = tmp_path / "batch.toml"
    config.write_text(f'output = "{tmp_path / "out"}"\ninputs = ["{cohort / "ct"}"]\n[settings]\nmethod = "random"\n'
                      f'device = "cpu"\nreport = false\nsecret = "{secret}"\n', encoding="utf-8")
    result = run_batch(load_config(config))
    assert result.complete, [j.as_dict() for j in result.jobs]
    release = tmp_path / "out" / "ct"
    manifest = json.loads((release / "manifest.json").read_text())
    assert "uid_map" not in manifest and manifest["deidentification"]["deidentified"] is True
    record = json.loads((tmp_path / "out" / "ct.steward" / STEWARD_FILE).read_text())
    sources = _source_dicoms(cohort / "ct")
    for src in sources:
        a = pydicom.dcmread(src, stop_before_pixels=True)
        b = pydicom.dcmread(release / src.name, stop_before_pixels=True)
        assert record["uid_map"][a.SOPInstanceUID] == b.SOPInstanceUID
    assert _leaks(release, _identifiers(sources)) == []


def test_a_steward_folder_of_another_release_is_not_overwritten(dicom_dir, tmp_path, capsys):
    src = str(dicom_dir / "hitachi_shoulder_mr" / "dicom")
    common = ["--method", "random", "--device", "cpu", "--no-report", "--steward-record", str(tmp_path / "private")]
    assert cli_main(["protect", src, "--out", str(tmp_path / "first"), *common]) == 0
    record = (tmp_path / "private" / STEWARD_FILE).read_bytes()
    assert cli_main(["protect", src, "--out", str(tmp_path / "second"), *common]) == 2
    assert "already holds the private record of another release" in capsys.readouterr().err
    assert (tmp_path / "private" / STEWARD_FILE).read_bytes() == record and not (tmp_path / "second").exists()
