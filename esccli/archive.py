"""Unpacking a zip archive without trusting it.

An archive from the network is checked as a whole before one byte is written: every entry must be a plain
file or folder whose name stays inside the target (no absolute paths, `..`, drive letters, symlinks or device
files), and the sizes it declares must stay under a limit, with no large entry compressed suspiciously well.
While unpacking, the bytes actually produced are counted against what each entry declared, so a lying header
cannot fill the disk.
"""

import errno
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from esccli.errors import DownloadError, EscError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or the end record of an empty zip
CHUNK = 1 * MiB                              # bytes copied per read/write while unpacking
FREE_SPACE_MARGIN = 64 * MiB                 # left free on the disk after unpacking
ESC50_CSV = ("meta", "esc50.csv")            # the file that marks the dataset's root folder inside an archive

Progress = Callable[[str, int, "int | None"], None]


@dataclass(frozen=True)
class Limits:
    """What an archive may declare before it is refused as a possible zip bomb.

    ESC-50 unpacks to about 900 MB in some 2,100 entries; WAV audio barely compresses (ratio < 2).
    """

    max_total: int = 4 * GiB      # sum of the entries' uncompressed sizes
    max_entries: int = 100_000
    max_ratio: float = 100.0      # uncompressed / compressed size, checked for entries above ratio_floor
    ratio_floor: int = 1 * MiB


LIMITS = Limits()


def human_size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def check_zip(path: Path, label: str | None = None) -> None:
    """Raise DownloadError unless `path` starts like a zip and has a readable central directory."""
    label = label or str(path)
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise EscError(f"cannot read {path}: {e.strerror or e}") from None
    if not head.startswith(ZIP_MAGIC):
        if looks_like_html(head):
            raise DownloadError(f"{label} is a web page, not a zip archive",
                                "the address may need a login, or point to a page about the file")
        raise DownloadError(f"{label} is not a zip archive")
    if not zipfile.is_zipfile(path):
        raise DownloadError(f"{label} is not a complete zip archive (truncated or damaged)",
                            "get a fresh copy of the archive")


def looks_like_html(head: bytes) -> bool:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith(b"<")  # <!DOCTYPE html>, <html>, <?xml ...>


def entry_parts(name: str) -> list[str] | None:
    """The path components of a zip entry name, or None if it would escape the folder it is unpacked into."""
    if "\x00" in name:
        return None
    n = name.replace("\\", "/")
    if n.startswith("/") or re.match(r"^[A-Za-z]:", n):
        return None
    parts = [p for p in n.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return parts


def safe_members(zf: zipfile.ZipFile, limits: Limits = LIMITS) -> list[zipfile.ZipInfo]:
    """All entries of `zf`, after checking every one; raise DownloadError naming the first unsafe entry.

    Refused: absolute names, `..`, drive letters, symlinks and other non-regular files, encrypted entries,
    names listed twice, too many entries, a declared total above limits.max_total, and large entries whose
    compression ratio is above limits.max_ratio.
    """
    label = Path(zf.filename).name if zf.filename else "the archive"
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise DownloadError(f"{label} has {len(infos)} entries, more than the {limits.max_entries} allowed")
    seen: set[str] = set()
    total = 0
    for zi in infos:
        parts = entry_parts(zi.filename)
        if parts is None:
            raise DownloadError(f"{label} contains an unsafe entry name {zi.filename!r}: refusing to unpack it")
        kind = stat.S_IFMT(zi.external_attr >> 16)
        if stat.S_ISLNK(zi.external_attr >> 16):
            raise DownloadError(f"{label} contains a symbolic link {zi.filename!r}: refusing to unpack it")
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise DownloadError(f"{label} contains a special file {zi.filename!r}: refusing to unpack it")
        if zi.flag_bits & 0x1:
            raise DownloadError(f"{label} contains an encrypted entry {zi.filename!r}")
        key = "/".join(parts).casefold() + ("/" if zi.is_dir() else "")
        if key in seen:
            raise DownloadError(f"{label} lists {zi.filename!r} twice: refusing to unpack it")
        seen.add(key)
        if zi.is_dir():
            continue
        if zi.file_size > limits.ratio_floor and zi.file_size > limits.max_ratio * max(zi.compress_size, 1):
            raise DownloadError(
                f"{label}: entry {zi.filename!r} would expand {zi.file_size / max(zi.compress_size, 1):.0f}-fold "
                f"to {human_size(zi.file_size)}: refusing a possible zip bomb")
        total += zi.file_size
    if total > limits.max_total:
        raise DownloadError(f"{label} would unpack to {human_size(total)}, more than the "
                            f"{human_size(limits.max_total)} limit: refusing a possible zip bomb")
    return infos


def find_root(members: list[zipfile.ZipInfo], label: str) -> list[str]:
    """The path components of the folder holding meta/esc50.csv (e.g. ["ESC-50-master"]; [] for the top)."""
    roots = []
    for zi in members:
        parts = entry_parts(zi.filename)
        if parts and not zi.is_dir() and tuple(parts[-2:]) == ESC50_CSV:
            roots.append(parts[:-2])
    if not roots:
        raise DownloadError(f"{label} does not hold ESC-50: there is no meta/esc50.csv inside")
    depth = min(len(r) for r in roots)
    shallowest = [r for r in roots if len(r) == depth]
    if len(shallowest) > 1:
        where = ", ".join("/".join(r) or "." for r in shallowest)
        raise DownloadError(f"{label} holds several ESC-50 copies ({where})")
    return shallowest[0]


def unpack(archive: Path, dest: Path, progress: Progress | None = None, limits: Limits = LIMITS,
           label: str | None = None) -> Path:
    """Unpack the ESC-50 folder found in `archive` (the one holding meta/esc50.csv) so that it becomes `dest`.

    Everything is checked before anything is written; `dest` must not exist yet. Entries outside the
    dataset's folder are checked but not unpacked. Raises DownloadError for an unsafe or damaged archive and
    EscError when the disk is full; `dest` may then hold part of the archive, so unpack into a temporary
    folder and delete it on failure.
    """
    archive, dest = Path(archive), Path(dest)
    label = label or str(archive)
    check_zip(archive, label)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError) as e:
        raise DownloadError(f"{label} is damaged: {e}", "get a fresh copy of the archive") from None
    with zf:
        members = safe_members(zf, limits)
        root = find_root(members, label)
        todo = [(zi, entry_parts(zi.filename)[len(root):]) for zi in members
                if entry_parts(zi.filename)[:len(root)] == root]
        total = sum(zi.file_size for zi, _ in todo if not zi.is_dir())
        check_free_space(dest.parent, total, "unpack ESC-50")
        try:
            dest.mkdir(parents=False, exist_ok=False)
        except OSError as e:
            raise write_error(e, dest, label) from None
        done = 0
        if progress:
            progress("unpack", 0, total)
        made = {dest}
        for zi, rel in todo:
            if not rel:
                continue
            target = dest.joinpath(*rel)
            folder = target if zi.is_dir() else target.parent
            try:
                if folder not in made:
                    folder.mkdir(parents=True, exist_ok=True)
                    made.add(folder)
            except OSError as e:
                raise write_error(e, target, label) from None
            if not zi.is_dir():
                done = _unpack_entry(zf, zi, target, label, done, total, progress)
    return dest


def _unpack_entry(zf, zi, target: Path, label: str, done: int, total: int, progress) -> int:
    try:
        src = zf.open(zi)
    except Exception as e:  # a bad local header, an unsupported method...: all mean the archive is unusable
        raise DownloadError(f"{label} is damaged: {zi.filename}: {e}", "get a fresh copy of the archive") from None
    with src:
        try:
            dst = open(target, "xb")  # exclusive: two entries can never write one file
        except OSError as e:
            raise write_error(e, target, label) from None
        with dst:
            def counted(n: int) -> None:
                nonlocal done
                done += n
                if progress:
                    progress("unpack", done, total)

            try:
                copy_stream(src, dst, zi.file_size, counted)
            except ReadFailed as e:
                raise DownloadError(f"{label} is damaged: {zi.filename}: {e.cause}",
                                    "get a fresh copy of the archive") from None
            except OSError as e:
                raise write_error(e, target, label) from None
    return done


class ReadFailed(Exception):
    """The source of a copy could not be read (a damaged archive entry, a file that changed...)."""

    def __init__(self, cause):
        super().__init__(str(cause))
        self.cause = cause


def copy_stream(src: BinaryIO, dst: BinaryIO, declared: int, counted: Callable[[int], None] | None = None) -> int:
    """Copy `src` to `dst`, refusing to produce more (or fewer) bytes than `declared`.

    Errors reading `src` are raised as ReadFailed, errors writing `dst` as the OSError they are.
    Tests replace this function to simulate a full disk or Ctrl-C in the middle of unpacking.
    """
    n = 0
    while True:
        try:
            block = src.read(CHUNK)
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as e:  # zlib.error, BadZipFile (bad CRC), EOFError (truncated), OSError (bz2)...
            raise ReadFailed(e) from None
        if not block:
            break
        n += len(block)
        if n > declared:
            raise ReadFailed(f"holds more than the {declared} bytes it declares (a zip bomb?)")
        dst.write(block)
        if counted:
            counted(len(block))
    if n != declared:
        raise ReadFailed(f"holds {n} bytes, not the {declared} it declares")
    return n


def write_error(e: OSError, path: Path, label: str = "the archive") -> EscError:
    """An OSError met while writing, as the one-line error a user can act on."""
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return EscError(f"the disk is full: could not write {path}",
                        "free some space (ESC-50 needs about 1.5 GB) or choose another --data-dir")
    if isinstance(e, FileExistsError):
        return DownloadError(f"{label} lists the file {path.name} twice (or in two letter cases)")
    return EscError(f"cannot write {path}: {e.strerror or e}")


def check_free_space(folder: Path, need: int, doing: str) -> None:
    """Raise EscError if the disk holding `folder` has less than `need` bytes (plus a margin) free."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # cannot tell: let the writes find out
    if free < need + FREE_SPACE_MARGIN:
        raise EscError(f"not enough free disk space in {folder} to {doing}: "
                       f"{human_size(need)} needed, {human_size(free)} free",
                       "free some space or choose another --data-dir")
