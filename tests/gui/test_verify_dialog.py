"""The wizard's ownership hooks: the export-step key option and the verify dialog (real keys, real CSVs)."""

from __future__ import annotations


import numpy as np
import pytest

from salm_desktop.core.jobs import run_protect_job
from salm_desktop.core.ownership.keydir import read_keydir
from salm_desktop.core.protect import ProtectSettings


@pytest.fixture(scope="module")
def keyed(medmnist_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("gui-keys")
    with np.load(medmnist_dir / "breastmnist.npz") as z:
        np.savez(root / "b16.npz", train_images=z["train_images"][:16], train_labels=z["train_labels"][:16])
    run_protect_job([root / "b16.npz"], root / "release", ProtectSettings(method="random", seed=0, device="cpu"),
                    report=False, keys=root / "keys")
    return root


def test_export_option_gives_a_key_folder_only_when_checked(qtbot, tmp_path):
    from salm_desktop.gui.verify_dialog import OwnershipKeysOption

    option = OwnershipKeysOption()
    qtbot.addWidget(option)
    option.folder.setText(str(tmp_path / "keys"))
    assert option.keydir() is None and not option.picker.isEnabled()
    option.enabled.setChecked(True)
    assert option.keydir() == tmp_path / "keys" and option.picker.isEnabled()


def test_the_export_page_and_the_menu_carry_the_hooks(window):
    assert window.export_page.ownership.keydir() is None
    actions = [a.text() for m in window.menuBar().actions() for a in m.menu().actions()]
    assert "Verify a suspect model…" in actions
    dialog = window.open_verify()
    assert dialog.isVisible()
    dialog.close()


def test_verify_dialog_flags_matching_answers_and_explains_bad_input(qtbot, keyed):
    from salm_desktop.gui.verify_dialog import VerifyDialog

    record = read_keydir(keyed / "keys")
    lines = ["query,label"]
    for qid, key, sign in zip(record.query_ids, record.query_keys, record.query_signs):
        secret = int(record.labels[key])
        lines.append(f"{qid},{secret if sign > 0 else 1 - secret}")
    good = keyed / "good.csv"
    good.write_text("\n".join(lines) + "\n")
    dialog = VerifyDialog()
    qtbot.addWidget(dialog)
    dialog.keys.setText(str(keyed / "keys"))
    dialog.predictions.setText(str(good))
    dialog.release.setText(str(keyed / "release"))
    dialog.verify_button.click()
    assert dialog.last is not None and dialog.last["hits"] == record.count and dialog.last["release_checked"]
    assert "strong evidence" in dialog.result.toPlainText().lower() and "Bonferroni" in dialog.result.toPlainText()
    short = keyed / "short.csv"
    short.write_text("\n".join(lines[:10]) + "\n")
    dialog.predictions.setText(str(short))
    dialog.verify_button.click()
    assert dialog.last is None and "short.csv" in dialog.result.toPlainText() and "no answer" in dialog.result.toPlainText()
