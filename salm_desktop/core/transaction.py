"""The one output transaction of single jobs and batch jobs: checks, lock, temporary folder, rename.

Safety rules (DESIGN.md): the output is written to a temporary folder next to its final place and
renamed into place (``os.replace``) when complete, so a cancelled or failed job leaves nothing
half-written; an existing non-empty output folder is refused unless overwriting is asked for; an
output folder inside an input tree (or around one) is refused; one job per output folder at a time.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from salm_desktop.core.progress import Progress

PARTIAL_PREFIX = ".salm-partial-"


class JobError(Exception):
    """A job that cannot run or could not finish; the message is one line for the user."""



# -- checks before anything runs --------------------------------------------------------------------
def _is_within(path: Path, parent: Path) -> bool:
    try:
        path.relative_to(parent)
        return True
    except ValueError:
        return False


def check_output_location(inputs: Sequence[Path], out_dir: Path, overwrite: bool = False) -> Path:
    """Validate the output folder; returns it resolved. Raises :class:`JobError` with a clear reason."""
    out = Path(out_dir).expanduser().resolve()
    for raw in inputs:
        src = Path(raw).expanduser().resolve()
        root = src if src.is_dir() else src.parent
        if out == src or (src.is_dir() and _is_within(out, root)):
            raise JobError(f"output folder {out} is inside the input {src}: choose a folder outside the input tree")
        if _is_within(src, out):
            raise JobError(f"output folder {out} contains the input {src}: choose a separate, new folder")
    if out.exists() and not out.is_dir():
        raise JobError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise JobError(f"output folder {out} already exists and is not empty; choose a new folder or allow overwriting")
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise JobError(f"cannot create output folder {out}: {parent} is a file")
    return out



def _os_message(exc: OSError) -> str:
    where = exc.filename or ""
    if exc.errno == errno.ENOSPC:
        reason = "no space left on the device"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "the output location is not writable"
    else:
        reason = exc.strerror or str(exc)
    return f"could not write the output{f' ({where})' if where else ''}: {reason}"



# -- one job per output folder ------------------------------------------------------------------------
class OutputLock:
    """An exclusive ``flock`` on a lock file for one output folder, held from the checks to the rename.

    The kernel drops the lock when the process dies (kill -9 included), so a crash never leaves a
    stale lock. The lock files live in the temporary folder, keyed by the resolved output path, so a
    read-only or not yet existing output parent can still be locked.
    """

    def __init__(self, out: Path, fd: int, path: Path) -> None:
        self.out, self._fd, self.path = out, fd, path

    @classmethod
    def acquire(cls, out: Path) -> "OutputLock | None":
        import fcntl

        folder = Path(tempfile.gettempdir()) / f"salm-locks-{os.getuid() if hasattr(os, 'getuid') else 0}"
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
        except OSError:
            return None  # no lock possible: the rename-time check still refuses a folder that appeared
        path = folder / (hashlib.sha256(str(out).encode("utf-8", "surrogateescape")).hexdigest()[:24] + ".lock")
        for _attempt in range(5):
            try:
                fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            except OSError:
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise JobError(f"another SALM job is writing to {out}; wait for it to finish or choose another output folder") from None
            except OSError:
                os.close(fd)
                return None
            try:  # the holder before us may have unlinked the file after we opened it: lock the live one
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()} {out}\n".encode("utf-8", "surrogateescape"))
                    return cls(out, fd, path)
            except OSError:
                pass
            os.close(fd)
        return None

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None


def recover_interrupted(out: Path, progress: Progress | None = None) -> None:
    """Clean up after a job on ``out`` that was killed (call with the output lock held).

    A temporary folder of a killed job is removed. A kill during an overwrite, between moving the old
    output aside and moving the new one in, leaves the old output in a backup folder: it is put back.
    """
    import re

    parent = out.parent
    if not parent.is_dir():
        return
    partial = re.compile(rf"^{re.escape(PARTIAL_PREFIX)}{re.escape(out.name)}-[a-z0-9_]{{8}}$")
    backup = re.compile(rf"^{re.escape(PARTIAL_PREFIX)}old-{re.escape(out.name)}-[a-z0-9_]{{8}}$")
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        try:
            if backup.match(entry.name) and entry.is_dir():
                old = entry / "old"
                if old.is_dir() and not out.exists():
                    os.replace(old, out)
                    if progress is not None:
                        progress.log(f"restored the previous output {out} (an overwrite was interrupted)")
                shutil.rmtree(entry, ignore_errors=True)
            elif partial.match(entry.name) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                if progress is not None:
                    progress.log(f"removed {entry.name}, left by an interrupted job")
        except OSError:
            continue



def _remove_empty(folders: list[Path]) -> None:
    """Remove folders this job created (innermost first) if they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass



def _umask() -> int:
    """The process umask, read without changing it where /proc allows (threads may be writing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _move_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished temporary folder to ``out`` (atomic on one filesystem)."""
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:  # appeared while we were working
            raise JobError(f"output folder {out} was created by someone else while the job ran; nothing was written")
        backup = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}old-{out.name}-", dir=out.parent))
        os.replace(out, backup / "old")
        try:
            os.replace(tmp, out)
        except OSError:
            os.replace(backup / "old", out)
            raise
        shutil.rmtree(backup, ignore_errors=True)
        return
    if out.is_dir():
        out.rmdir()  # empty: replace it
    os.replace(tmp, out)


class OutputTransaction:
    """Everything of one output folder is written under :attr:`tmp` (next to ``out``, so the rename is
    atomic) and appears at ``out`` only on :meth:`commit`; :meth:`abort` removes it and the parent
    folders the transaction created. Use as ``with OutputTransaction(out) as tx: ... tx.commit()``;
    leaving the block without a commit aborts."""

    def __init__(self, out: Path, overwrite: bool = False) -> None:
        self.out, self.overwrite = Path(out), overwrite
        self.tmp: Path | None = None  # None once committed or aborted
        self._root: Path | None = None
        self._created: list[Path] = []

    def __enter__(self) -> "OutputTransaction":
        out = self.out
        self._created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]  # removed on failure
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = self._root = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{out.name}-", dir=out.parent))
            self.tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; the output folder is an ordinary one
        except OSError as exc:
            _remove_empty(self._created)
            raise JobError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
        return self

    def final(self, path: Path | None) -> Path | None:
        """Where ``path`` (under :attr:`tmp`) is once committed."""
        return None if path is None or self._root is None else self.out / Path(path).relative_to(self._root)

    def commit(self) -> None:
        assert self.tmp is not None, "commit outside the transaction"
        _move_into_place(self.tmp, self.out, self.overwrite)
        self.tmp, self._created = None, []  # committed: abort() has nothing left to undo

    def abort(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        _remove_empty(self._created)

    def __exit__(self, *exc_info) -> None:
        if self.tmp is not None:
            self.abort()
