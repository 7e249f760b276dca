"""Writing files so that a crash, a full disk or Ctrl-C never leaves a half-written one, and locking a
folder against a second esc process.

Every file esc writes goes through `atomic_write`: the data go to a temporary file in the same folder,
are flushed to disk, and only then renamed over the target, so readers see the old file or the new one.
"""

import contextlib
import glob
import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Iterator

from esccli.errors import EscError


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temporary file next to `path`; on clean exit fsync it and rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    if hasattr(os, "fchmod"):  # mkstemp makes 0600 files; give the usual permissions instead
        os.fchmod(fd, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# a temporary of atomic_write untouched for this long belongs to no live write (one renames its file within
# moments of its last byte; unless its process was stopped that long): it is what a killed process left
STALE_TEMPORARY_SECONDS = 3600
MKSTEMP_PART = "[a-z0-9_]" * 8  # the random part of a tempfile.mkstemp name, as a glob


def remove_stale_temporaries(folder: Path, names: list[str] | None = None,
                             older_than: float = STALE_TEMPORARY_SECONDS) -> list[Path]:
    """Delete atomic_write's temporary files in `folder` (".<name>.<random>.tmp") of the files `names` (None: of any
    file, for a folder only esc writes in) not modified for `older_than` seconds (0: all of them, for a caller whose
    lock says no write is in progress): what a process killed while writing left behind. Returns those deleted."""
    patterns = [f".{glob.escape(n)}.{MKSTEMP_PART}.tmp" for n in names] if names is not None else [".*.tmp"]
    removed = []
    now = time.time()
    for tmp in {p for pattern in patterns for p in Path(folder).glob(pattern)}:
        try:
            if not tmp.is_file() or (older_than > 0 and now - tmp.stat().st_mtime < older_than):
                continue
            tmp.unlink()
            removed.append(tmp)
        except OSError:  # gone meanwhile, or not ours to delete: leave it
            pass
    return removed


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class LockBusy(EscError):
    pass


@contextlib.contextmanager
def folder_lock(lock_path: Path, what: str, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock_path` (created if needed) for the duration of the block.

    With wait=True a second process blocks until the first is done (and then usually finds the work done);
    with wait=False it fails at once with a message naming `what`.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as f:
        _lock(f, wait, what)
        try:
            yield
        finally:
            _unlock(f)


try:  # POSIX
    import fcntl

    def _lock(f, wait: bool, what: str) -> None:
        flags = fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(f.fileno(), flags)
        except BlockingIOError:
            raise LockBusy(f"another esc process is already busy with {what}", "wait for it to finish") from None

    def _unlock(f) -> None:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)

except ImportError:  # Windows
    import msvcrt

    def _lock(f, wait: bool, what: str) -> None:
        mode = msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK
        try:
            msvcrt.locking(f.fileno(), mode, 1)
        except OSError:
            raise LockBusy(f"another esc process is already busy with {what}", "wait for it to finish") from None

    def _unlock(f) -> None:
        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
