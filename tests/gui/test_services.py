"""The wizard's door to the core (gui/services.py): what a protection run hands back to the state."""

from __future__ import annotations

import shutil
from pathlib import Path

from salm_desktop.gui import model as m
from salm_desktop.gui import services


def test_an_unreadable_file_is_left_out_and_the_rest_of_the_study_is_protected(dicom_dir: Path, tmp_path: Path):
    folder = tmp_path / "in"
    shutil.copytree(dicom_dir / "ct_3slice_dcmqi" / "dicom", folder)
    # a JPEG 2000 file whose header is fine but whose codestream is broken: it fails only when decoded
    data = (dicom_dir / "pydicom_small" / "MR_small_jp2klossless.dcm").read_bytes()
    fragment = data.find(b"\xfe\xff\x00\xe0", data.find(b"\xfe\xff\x00\xe0") + 8) + 8
    (folder / "broken_j2k.dcm").write_bytes(data[: fragment + 2] + b"\0" * 2000 + data[fragment + 2002:])
    settings = m.WizardSettings(method="random", label_source="clusters")
    state = m.WizardState(inputs=[folder], load_result=services.load([folder], settings))
    asked = [s.id for s in state.selected_series]
    assert len(asked) == 2  # the broken file passes the header scan

    run = services.protect(state.selected_series, settings)
    try:
        assert [(s.path.name, "cannot decode pixel data" in s.reason) for s in run.skipped] == [("broken_j2k.dcm", True)]
        assert [len(s.samples) for s in run.series] == [3]
        state.drop_unreadable(run.series, asked, run.skipped)
        assert [s.id for s in state.series] == [run.series[0].id]  # the series that lost its only file is gone
        assert any(s.path.name == "broken_j2k.dcm" for s in state.load_result.skipped)
        assert run.result.protected(run.series[0].id, 0).shape == (512, 512)
    finally:
        run.result.close()
