"""The one output transaction: a temporary folder next to the output, renamed into place on commit."""

from __future__ import annotations

import pytest

from salm_desktop.core.transaction import PARTIAL_PREFIX, JobError, OutputTransaction


def test_commit_renames_the_temporary_folder_into_place(tmp_path):
    out = tmp_path / "new" / "release"
    with OutputTransaction(out) as tx:
        assert tx.tmp.parent == out.parent and tx.tmp.name.startswith(PARTIAL_PREFIX)
        (tx.tmp / "sub").mkdir()
        (tx.tmp / "sub" / "a.txt").write_text("a")
        where = tx.final(tx.tmp / "sub" / "a.txt")
        tx.commit()
    assert where == out / "sub" / "a.txt" and where.read_text() == "a"
    assert [p.name for p in out.parent.iterdir()] == ["release"]


def test_leaving_without_commit_removes_everything_it_made(tmp_path):
    out = tmp_path / "a" / "b" / "release"
    with pytest.raises(RuntimeError):
        with OutputTransaction(out) as tx:
            (tx.tmp / "half.dcm").write_bytes(b"x")
            raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []  # the parents it created are gone too


def test_an_output_that_appeared_meanwhile_is_not_replaced(tmp_path):
    out = tmp_path / "release"
    with OutputTransaction(out) as tx:
        out.mkdir()
        (out / "theirs.txt").write_text("someone else's")
        with pytest.raises(JobError, match="created by someone else"):
            tx.commit()
    assert (out / "theirs.txt").read_text() == "someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["release"]


def test_overwrite_replaces_the_old_output_whole(tmp_path):
    out = tmp_path / "release"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with OutputTransaction(out, overwrite=True) as tx:
        (tx.tmp / "new.txt").write_text("new")
        tx.commit()
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["release"]
