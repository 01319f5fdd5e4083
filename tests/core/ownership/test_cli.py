"""protect --keys: the key folder is checked before anything is loaded or written."""

from __future__ import annotations

from salm_desktop import cli


def test_protect_refuses_a_key_folder_inside_the_release(medmnist_dir, tmp_path, capsys):
    out = tmp_path / "release"
    code = cli.main(["protect", str(medmnist_dir / "breastmnist.npz"), "--out", str(out), "--keys", str(out / "keys"),
                     "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "inside the release" in err and "Traceback" not in err
    assert not out.exists()


def test_verify_needs_a_key_folder_that_exists(tmp_path, capsys):
    pred = tmp_path / "pred.csv"
    pred.write_text("query,label\n")
    assert cli.main(["verify", "--keys", str(tmp_path / "nowhere"), "--predictions", str(pred)]) == 2
    assert "no such key folder" in capsys.readouterr().err
