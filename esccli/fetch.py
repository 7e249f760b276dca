"""Getting ESC-50 onto the disk: download (or take a local copy), unpack, verify, install atomically.

    fetch_dataset(layout)                          # download from DEFAULT_URL
    fetch_dataset(layout, source="~/ESC-50-master.zip")   # or an archive / unpacked folder already at hand

The order of steps makes every failure harmless:

1. Hold the dataset lock for the whole operation: a second esc process waits, then finds the dataset there.
2. A dataset already installed and verified (its marker file matches its csv) is left alone.
3. The download streams into `downloads/ESC-50-master.zip.part`, resumes with an HTTP Range request after an
   interruption, and is renamed to `.zip` only when complete.
4. The archive is checked whole (zip bombs, unsafe names) and unpacked into a temporary folder next to the
   dataset; the copy is verified clip by clip (every clip must decode).
5. Only then is it renamed into place; a dataset it replaces is moved aside first and deleted last.

Ctrl-C, a full disk or a bad archive at any point leave the previous dataset (if any) as it was and no
temporary folder behind; a partial download is kept for the next run to resume.
"""

import contextlib
import http.client
import json
import os
import secrets
import shlex
import shutil
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from esccli import __version__
from esccli import archive as _archive
from esccli.archive import (LIMITS, ZIP_MAGIC, Limits, Progress, ReadFailed, check_free_space, check_zip,
                            human_size, looks_like_html, unpack, write_error)
from esccli.dataset import META_CSV, NUM_CLIPS, audio_path, check_balance, read_metadata, verify_dataset
from esccli.errors import DatasetError, DownloadError, EscError, Interrupted
from esccli.fsutil import LockBusy, atomic_write_text, folder_lock, sha256_file
from esccli.paths import Layout

DEFAULT_URL = "https://github.com/karolpiczak/ESC-50/archive/master.zip"
OLD_URLS = ("https://github.com/karoldvl/ESC-50/archive/master.zip",)  # earlier defaults, named by older installs
ARCHIVE_NAME = "ESC-50-master.zip"   # the download's name in layout.downloads (+ ".part" while incomplete)
MARKER = ".esc-verified.json"        # written into the dataset once it has been verified
MARKER_VERSION = 1
DOWNLOAD_CHUNK = 64 * 1024
TIMEOUT = 30.0                       # seconds without a byte from the server before an attempt fails
MAX_DELAY = 60.0                     # the longest wait between two tries of a download
MAX_RETRIES = 10                     # tries after the first, at most (with MAX_DELAY, under 10 minutes of waiting)
TMP_PREFIX = ".ESC-50.tmp-"          # unpacking happens in layout.home/.ESC-50.tmp-XXXX
OLD_PREFIX = ".ESC-50.old-"          # a replaced dataset waits here until the new one is in place

Notify = Callable[[str], None]


@dataclass(frozen=True)
class FetchResult:
    path: Path              # the installed dataset folder
    clips: int              # clips listed and verified
    source: str             # the URL, archive or folder it came from
    already_present: bool   # True when nothing had to be done
    full: bool              # all 2000 clips (False for a balanced subset installed with allow_subset)
    archive: Path | None = None  # the downloaded archive, when kept

    def as_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["archive"] = str(self.archive) if self.archive else None
        return d


def again_command(source: str | None, full: bool = True) -> str:
    """The command that installs ESC-50 again from `source` (the URL, archive or folder an install came from;
    None or a local path that is gone: a download from DEFAULT_URL). A bare `esc fetch --force` downloads, which is
    no use after an install from a file or from another address."""
    words = ["esc", "fetch", "--force"]
    if source and source != DEFAULT_URL and source not in OLD_URLS:
        if "://" in source:
            words += ["--url", shlex.quote(source)]
        elif Path(source).exists():
            words += ["--from", shlex.quote(source)]
    if not full:
        words.append("--allow-subset")
    return " ".join(words)


def reinstall_command(root: Path) -> str:
    """again_command for the dataset installed at `root`, from its verification record (a copy put there by hand
    has none: a download)."""
    marker = read_marker(root) or {}
    source = marker.get("source")
    return again_command(source if isinstance(source, str) and source != str(root) else None,
                         full=marker.get("full", True) is not False)


def fetch_dataset(
    layout: Layout,
    url: str | None = None,
    source: Path | str | None = None,
    force: bool = False,
    allow_subset: bool = False,
    keep_archive: bool | None = None,
    progress: Progress | None = None,
    notify: Notify | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    limits: Limits = LIMITS,
    timeout: float = TIMEOUT,
) -> FetchResult:
    """Make sure a verified ESC-50 is installed in layout.dataset, and say where it came from.

    url: download from there instead of DEFAULT_URL. source: install from a local .zip or an unpacked folder
    (one holding meta/esc50.csv and audio/, or holding one such folder) instead of downloading.
    force: fetch and replace even if a verified dataset is installed (a complete earlier download is not
    reused unless it was kept; a partial one is still resumed).
    allow_subset: accept a balanced subset (the same number of clips per class and fold) instead of all 2000.
    keep_archive: keep the downloaded zip after installing (True), or delete it (False); None: as the last fetch
    that said (kept archives stay, and later fetches, --force ones too, reuse them). An archive that no longer
    installs is deleted, kept or not. A `source` archive is never deleted. A complete archive refused only
    because it is a subset is kept, for a run with allow_subset to install.
    progress(stage, done, total): stages "download" and "unpack"/"copy" count bytes, "verify" counts clips.
    notify(message): one-sentence news (resuming, retrying, waiting for another process...).
    """
    if url and source:
        raise EscError("give either a URL to download or a local archive or folder, not both")
    progress = progress or (lambda stage, done, total: None)
    notify = notify or (lambda message: None)
    try:
        layout.home.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EscError(f"cannot create the data directory {layout.home}: {e.strerror or e}") from None

    with _dataset_lock(layout, notify):
        _tidy(layout)
        if not force:
            present = _installed(layout, allow_subset, progress, notify)
            if present:
                if source is None and keep_archive is not None:
                    _keep_or_drop_archive(layout, keep_archive, notify)
                return present
        if source is not None:
            return _install_local(layout, Path(source).expanduser(), allow_subset, progress, limits)
        return _install_download(layout, url or DEFAULT_URL, force, allow_subset, keep_archive, progress, notify,
                                 retries, backoff, limits, timeout)


# --- what is installed ---------------------------------------------------------------------------------------

def read_marker(root: Path) -> dict | None:
    """The verification record of an installed dataset, if it has one and it still matches its csv."""
    root = Path(root)
    try:
        marker = json.loads((root / MARKER).read_text(encoding="utf-8"))
        if marker.get("version") != MARKER_VERSION:
            return None
        if marker.get("csv_sha256") != sha256_file(root / META_CSV):
            return None
    except (OSError, ValueError, AttributeError):
        return None
    return marker


def _write_marker(root: Path, clips: int, full: bool, source: str) -> None:
    atomic_write_text(root / MARKER, json.dumps({
        "version": MARKER_VERSION,
        "csv_sha256": sha256_file(root / META_CSV),
        "clips": clips,
        "full": full,
        "source": source,
        "verified_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }, indent=2) + "\n")


def _installed(layout: Layout, allow_subset: bool, progress: Progress, notify: Notify) -> FetchResult | None:
    """The installed dataset if it is good enough, else None (after saying why it will be replaced)."""
    root = layout.dataset
    if not (root / META_CSV).is_file():
        if root.exists():
            notify(f"{root} is not a complete ESC-50 copy (no {META_CSV}); installing a new one")
        return None
    marker = read_marker(root)
    if marker:
        if not allow_subset and not marker.get("full"):
            notify(f"the installed copy is a subset of {marker.get('clips')} clips; fetching the full ESC-50")
            return None
        try:  # verified before and the csv is unchanged: just check that every clip is still there
            clips = read_metadata(root)
        except DatasetError:
            clips = None
        if clips is not None and all(audio_path(root, c.filename) for c in clips):
            return FetchResult(root, len(clips), str(marker.get("source", root)), True, bool(marker.get("full")))
    try:
        verify_dataset(root, decode=False, allow_subset=allow_subset)
        clips = verify_dataset(root, decode=True, allow_subset=allow_subset,
                               progress=lambda i, n: progress("verify", i, n))
    except DatasetError as e:
        lines = str(e).splitlines()
        first = (lines[1] if len(lines) > 1 else lines[0]).strip()
        notify(f"the installed copy in {root} failed verification ({first}); installing a new one")
        return None
    full = not check_balance(clips)
    source = str((marker or {}).get("source", root))
    with contextlib.suppress(OSError):
        _write_marker(root, len(clips), full, source)
    return FetchResult(root, len(clips), source, True, full)


# --- installing ----------------------------------------------------------------------------------------------

def _install_download(layout, url, force, allow_subset, keep_archive, progress, notify, retries, backoff, limits,
                      timeout) -> FetchResult:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"cannot download {url!r}: only http:// and https:// addresses are supported",
                            "for an archive or folder you already have, use --from")
    archive = layout.downloads / ARCHIVE_NAME
    meta = _download_meta(archive)
    keep = bool(meta.get("kept")) if keep_archive is None else keep_archive  # kept once, kept until told not to
    # an archive of this URL already here is used, unless --force asks for a fresh one of an archive that was
    # installed and not kept (one refused as a subset, or cut off by a full disk, never was)
    reused = (archive.is_file() and meta.get("url") == url and bool(meta.get("complete"))
              and (not force or bool(meta.get("kept")) or not meta.get("installed")))
    if reused:
        notify(f"using the archive {'kept' if meta.get('kept') else 'downloaded'} earlier: {archive}"
               + (" (delete it to download a fresh copy)" if force else ""))
    else:
        if keep:  # written first: a download cut short still remembers the wish
            _update_download_meta(archive, kept=True)
        download(url, archive, progress=progress, notify=notify, retries=retries, backoff=backoff,
                 timeout=timeout)
    _update_download_meta(archive, kept=keep)
    try:
        result = _install_archive(layout, archive, url, allow_subset, progress, limits)
    except SubsetRefused as e:  # a sound archive, refused by a choice the user can change: keep it for that run
        raise DatasetError(e.message, f"{e.hint}; the archive is kept in {archive.parent} for that run") from None
    except (DownloadError, DatasetError) as e:  # the archive itself is bad: never used again, kept or not
        _remove(archive, _meta_path(archive))
        if keep:  # the wish to keep the next one stays
            with contextlib.suppress(EscError):
                _update_download_meta(archive, kept=True)
        if reused:
            raise type(e)(e.message, f"the archive from an earlier download ({archive}) did not install and is "
                                     "deleted: run again to download a fresh copy") from None
        raise
    if keep:
        _update_download_meta(archive, installed=True)
        return FetchResult(result.path, result.clips, result.source, False, result.full, archive)
    _remove(archive, _meta_path(archive))
    return result


def _keep_or_drop_archive(layout: Layout, keep: bool, notify: Notify) -> None:
    """--keep-archive / --no-keep-archive when the dataset is installed already: what to do with the archive."""
    archive = layout.downloads / ARCHIVE_NAME
    if not archive.is_file():
        return
    if keep:
        _update_download_meta(archive, kept=True)
    else:
        _remove(archive, _meta_path(archive))
        notify(f"deleted the archive {archive}")


def _install_local(layout, source: Path, allow_subset, progress, limits) -> FetchResult:
    if not source.exists():
        raise EscError(f"{source} does not exist")
    source = source.absolute()
    if source.is_dir():
        return _install_folder(layout, source, allow_subset, progress)
    return _install_archive(layout, source, str(source), allow_subset, progress, limits)


def _install_archive(layout, archive: Path, label: str, allow_subset, progress, limits) -> FetchResult:
    check_zip(archive, label)
    with _scratch(layout) as tmp:
        root = tmp / "ESC-50"
        unpack(archive, root, progress=progress, limits=limits, label=label)
        return _verify_and_swap(layout, root, label, allow_subset, progress)


def _install_folder(layout, source: Path, allow_subset, progress) -> FetchResult:
    src = _folder_root(source)
    _refuse_subset(src, str(src), allow_subset)
    verify_dataset(src, decode=False, allow_subset=allow_subset)  # cheap checks before copying anything
    files = _dataset_files(src)
    total = sum(f.stat().st_size for f in files)
    with _scratch(layout) as tmp:
        root = tmp / "ESC-50"
        check_free_space(tmp, total, "copy ESC-50")
        done = 0
        progress("copy", 0, total)

        def counted(n: int) -> None:
            nonlocal done
            done += n
            progress("copy", done, total)

        made = set()
        for f in files:
            target = root / f.relative_to(src)
            try:
                fin = open(f, "rb")
            except OSError as e:
                raise EscError(f"cannot read {f}: {e.strerror or e}") from None
            with fin:
                try:
                    if target.parent not in made:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        made.add(target.parent)
                    with open(target, "xb") as fout:
                        _archive.copy_stream(fin, fout, os.fstat(fin.fileno()).st_size, counted)
                except ReadFailed as e:  # unreadable, or changed while being copied
                    raise EscError(f"cannot read {f}: {e}") from None
                except OSError as e:
                    raise write_error(e, target) from None
        return _verify_and_swap(layout, root, str(src), allow_subset, progress)


def _verify_and_swap(layout, root: Path, label: str, allow_subset: bool, progress) -> FetchResult:
    _refuse_subset(root, label, allow_subset)
    try:  # the csv and the files' presence first: a broken archive is reported without decoding 2000 clips
        verify_dataset(root, decode=False, allow_subset=allow_subset)
        clips = verify_dataset(root, decode=True, allow_subset=allow_subset,
                               progress=lambda i, n: progress("verify", i, n))
    except DatasetError as e:
        raise _relabel(e, root, label) from None
    full = not check_balance(clips)
    try:
        _write_marker(root, len(clips), full, label)
    except OSError as e:
        raise write_error(e, root / MARKER) from None
    _sync_to_disk()
    try:
        _swap_in(root, layout.dataset)
    except OSError as e:
        raise EscError(f"cannot move the new dataset into {layout.dataset}: {e.strerror or e}") from None
    return FetchResult(layout.dataset, len(clips), label, False, full)


def _sync_to_disk() -> None:
    """Have the new files reach the disk before a rename publishes them (a power cut must not leave a verified
    dataset of empty files): one sync instead of 2000 fsyncs, which take seconds on some disks."""
    if hasattr(os, "sync"):
        os.sync()


def _swap_in(new: Path, target: Path) -> None:
    """Rename `new` to `target`; a dataset already there is moved aside first and deleted once `new` is in."""
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(OLD_PREFIX + secrets.token_hex(4))
        os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        _remove(old)


def _relabel(e: DatasetError, root: Path, label: str) -> DatasetError:
    """The verifier's message names the temporary folder; name the archive or folder the user gave instead."""
    return DatasetError(e.message.replace(str(root), label), e.hint)


class SubsetRefused(DatasetError):
    """A sound ESC-50 subset, refused because the full dataset was asked for."""


def _refuse_subset(root: Path, label: str, allow_subset: bool) -> None:
    """Say at once (before decoding anything) that an archive or folder is a subset, not the full dataset."""
    if allow_subset:
        return
    try:
        clips = read_metadata(root)
    except DatasetError:
        return  # verify_dataset reports it, with the other problems
    if len(clips) < NUM_CLIPS and not check_balance(clips, allow_subset=True):
        raise SubsetRefused(f"{label} holds a subset of ESC-50 ({len(clips)} clips, not {NUM_CLIPS})",
                            "add --allow-subset to install it anyway")


def _folder_root(source: Path) -> Path:
    """The dataset folder given, or the one dataset folder inside it (e.g. the unpacked ESC-50-master/)."""
    if (source / META_CSV).is_file():
        return source
    try:
        inside = [d for d in sorted(source.iterdir()) if d.is_dir() and (d / META_CSV).is_file()]
    except OSError as e:
        raise EscError(f"cannot read the folder {source}: {e.strerror or e}") from None
    if len(inside) == 1:
        return inside[0]
    if inside:
        raise DatasetError(f"{source} holds several ESC-50 copies: {', '.join(d.name for d in inside)}",
                           "point --from at one of them")
    raise DatasetError(f"{source} does not hold ESC-50: no {META_CSV} in it",
                       "point --from at the folder holding meta/ and audio/, or at the zip")


def _dataset_files(root: Path) -> list[Path]:
    """The files that make up a dataset folder: meta/, audio/ and top-level files such as the README.

    Hidden files and folders (.git, .DS_Store, an old marker) and anything else are left out.
    """
    files = [p for p in sorted(root.iterdir()) if p.is_file() and not p.name.startswith(".")]
    for sub in ("meta", "audio"):
        for folder, dirs, names in os.walk(root / sub, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files += [Path(folder) / n for n in sorted(names)
                      if not n.startswith(".") and (Path(folder) / n).is_file()]
    return files


# --- scratch space, locking, leftovers -----------------------------------------------------------------------

@contextlib.contextmanager
def _scratch(layout: Layout):
    """A temporary folder next to the dataset (same disk, so the final rename is atomic), always removed."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=layout.home))
    except OSError as e:
        raise write_error(e, layout.home) from None
    try:
        yield tmp
    finally:
        _remove(tmp)


@contextlib.contextmanager
def _dataset_lock(layout: Layout, notify: Notify):
    lock = layout.locks / "dataset.lock"
    with contextlib.ExitStack() as stack:
        try:
            try:
                stack.enter_context(folder_lock(lock, "the dataset", wait=False))
            except LockBusy:
                notify("another esc process is installing the dataset; waiting for it to finish")
                stack.enter_context(folder_lock(lock, "the dataset", wait=True))
        except OSError as e:
            raise EscError(f"cannot create the lock file {lock}: {e.strerror or e}") from None
        yield


def _tidy(layout: Layout) -> None:
    """Clean up after a process that was killed outright (we hold the lock, so nobody else is using these)."""
    for old in sorted(layout.home.glob(OLD_PREFIX + "*")):
        if not layout.dataset.exists() and (old / META_CSV).is_file():
            with contextlib.suppress(OSError):  # killed between the two renames: put the old dataset back
                os.rename(old, layout.dataset)
            continue
        _remove(old)
    for tmp in layout.home.glob(TMP_PREFIX + "*"):
        _remove(tmp)


def _remove(*paths: Path) -> None:
    for p in paths:
        try:
            if p.is_symlink() or p.is_file():
                p.unlink()
            elif p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


# --- downloading ---------------------------------------------------------------------------------------------

class _Retry(Exception):
    """A failure worth another attempt (network trouble, a 5xx answer)."""


def _meta_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".json")


def _update_download_meta(path: Path, **fields) -> None:
    try:
        atomic_write_text(_meta_path(path), json.dumps({**_download_meta(path), **fields}))
    except OSError as e:
        raise write_error(e, _meta_path(path)) from None


def _download_meta(path: Path) -> dict:
    """What the side file of a download (`path`.json) records: for the .part, the URL and the server's validators;
    for the archive, the same once complete, and whether esc fetch was asked to keep it and installed it."""
    try:
        meta = json.loads(_meta_path(path).read_text(encoding="utf-8"))
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def download(
    url: str,
    dest: Path,
    progress: Progress | None = None,
    notify: Notify | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Download `url` to `dest`, through `dest`.part, resuming a partial download of the same URL.

    A side file `dest`.part.json records the URL and the server's ETag / Last-Modified so that a resumed download
    is refused by the server (If-Range) if the file changed meanwhile; once complete, it becomes `dest`.json
    (with "complete", keeping that file's "kept"), so the record of an archive already at `dest` stays true
    until the new one replaces it. Network errors and 5xx answers are
    retried `retries` times (at most MAX_RETRIES), waiting backoff, 2*backoff, 4*backoff... seconds (at most
    MAX_DELAY each); a failure after new bytes arrived starts the count afresh. Raises DownloadError with one
    line saying what went wrong, and Interrupted on Ctrl-C or SIGTERM, saying what was saved; the .part file is
    kept for the next run.
    """
    dest = Path(dest)
    progress = progress or (lambda stage, done, total: None)
    notify = notify or (lambda message: None)
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(e, dest.parent) from None
    if part.exists() and _download_meta(part).get("url") != url:
        _remove(part, _meta_path(part))  # a partial download of something else
    retries = min(retries, MAX_RETRIES)
    try:
        _download_until_complete(url, dest, part, progress, notify, retries, backoff, timeout, sleep)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: say what is kept (the .part, to resume from)
        saved = _size(part)
        raise Interrupted(f"download interrupted; {human_size(saved)} saved in {part}" if saved else
                          "download interrupted before its first byte",
                          "run the same command again to resume" if saved else None) from None
    meta = {**_download_meta(part), "complete": True, "kept": bool(_download_meta(dest).get("kept"))}
    try:  # no moment where a record describes another file: a record lost on the way means a new download
        _meta_path(dest).unlink(missing_ok=True)
        os.replace(part, dest)
        atomic_write_text(_meta_path(dest), json.dumps(meta))
        _meta_path(part).unlink(missing_ok=True)
    except OSError as e:
        raise write_error(e, Path(e.filename) if e.filename else dest) from None
    return dest


def _download_until_complete(url: str, dest: Path, part: Path, progress: Progress, notify: Notify, retries: int,
                             backoff: float, timeout: float, sleep: Callable[[float], None]) -> None:
    """download's attempts, retries and waits, until `part` is complete (see download)."""
    failures = restarts = 0
    got_further = False  # whether the first failure of the current run of them still brought new bytes
    while True:
        before = _size(part)
        try:
            if _attempt(url, dest, part, progress, notify, timeout):
                return
            restarts += 1  # the partial file had to be dropped: start again from 0 at once
            if restarts > 2:
                raise DownloadError(f"cannot download {url}: the server's answers to resumed downloads make no sense")
            continue
        except _Retry as e:
            if _size(part) > before:  # new bytes start the count afresh
                failures, got_further = 1, True
            else:
                failures, got_further = failures + 1, got_further and failures > 0
            if failures > retries:
                saved = _size(part)
                hint = f"{human_size(saved)} saved; run the same command again to resume" if saved else None
                stalled = failures - got_further
                tries = f" ({stalled} tries in a row without a byte more)" if stalled > 1 else ""
                raise DownloadError(f"cannot download {url}: {e}{tries}", hint) from None
            delay = min(MAX_DELAY, backoff * 2 ** (failures - 1))
            notify(f"{e}; retrying" + (f" in {delay:.0f} s" if delay >= 1 else ""))
            sleep(delay)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _attempt(url: str, dest: Path, part: Path, progress: Progress, notify: Notify, timeout: float) -> bool:
    """One request. True when `part` is complete; False when it was dropped and the download must restart."""
    offset = _size(part)
    meta = _download_meta(part) if offset else {}
    headers = {"User-Agent": f"esc/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = meta.get("etag") if not str(meta.get("etag", "W/")).startswith("W/") else meta.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        with e:
            if e.code == 416 and offset:
                total = _range_total(e.headers.get("Content-Range"))
                if total == offset:
                    return True  # the partial file was already complete
                notify("the partial download does not match the file on the server; starting over")
                _remove(part)
                return False
            if e.code in (408, 429) or e.code >= 500:
                raise _Retry(f"the server answered HTTP {e.code} {e.reason}") from None
            raise DownloadError(f"cannot download {url}: the server answered HTTP {e.code} {e.reason}",
                                "check the address" if e.code in (404, 410) else None) from None
    except urllib.error.URLError as e:
        raise _Retry(_reason(e.reason, url)) from None
    except (OSError, http.client.HTTPException) as e:
        raise _Retry(_reason(e, url)) from None

    with resp:
        length = _int(resp.headers.get("Content-Length"))
        if resp.status == 206:
            content_range = resp.headers.get("Content-Range")
            start, total = _range_start(content_range), _range_total(content_range)
            if start != offset or (meta.get("length") and total != meta["length"]):
                notify("the server resumed at the wrong place, or the file changed; starting over")
                _remove(part)
                return False
            notify(f"resuming the download at {human_size(offset)}")
            mode, done = "ab", offset
        elif resp.status == 200:
            if offset:
                notify("the server cannot resume this download; starting over")
            mode, done, total = "wb", 0, length
            ctype = (resp.headers.get("Content-Type") or "").lower()
            if ctype.startswith(("text/html", "application/xhtml")):
                raise DownloadError(f"{url} is a web page, not a zip archive",
                                    "the address may need a login, or point to a page about the file")
            atomic_write_text(_meta_path(part), json.dumps({
                "url": url, "etag": resp.headers.get("ETag"), "last_modified": resp.headers.get("Last-Modified"),
                "length": total}))
        else:
            raise DownloadError(f"cannot download {url}: unexpected answer HTTP {resp.status} {resp.reason}")
        if total is not None:
            check_free_space(part.parent, total - done, "download ESC-50")
        progress("download", done, total)
        with open(part, mode) as f:
            head = None if done else b""  # collects the first bytes of a fresh download
            while True:
                try:
                    block = resp.read(DOWNLOAD_CHUNK)
                except (OSError, http.client.HTTPException, ValueError) as e:
                    raise _Retry(_reason(e, url)) from None
                if not block:
                    break
                if head is not None:  # the first bytes of a fresh download: is it a zip at all?
                    head += block
                    if len(head) >= 4:
                        if not head.startswith(ZIP_MAGIC):
                            f.close()
                            _remove(part)
                            what = "a web page" if looks_like_html(head) else "something else"
                            raise DownloadError(f"{url} sent {what}, not a zip archive")
                        head = None
                try:
                    f.write(block)
                except OSError as e:
                    raise write_error(e, part) from None
                done += len(block)
                progress("download", done, total)
            try:
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                raise write_error(e, part) from None
    if total is not None and done < total:
        raise _Retry(f"the connection closed after {human_size(done)} of {human_size(total)}")
    if total is not None and done > total:
        _remove(part)
        raise _Retry("the server sent more bytes than it announced")
    if done == 0:
        raise _Retry("the server sent an empty file")
    return True


def _reason(e, url: str) -> str:
    """A network failure in a few words."""
    host = urllib.parse.urlsplit(url).netloc or url
    if isinstance(e, socket.gaierror):
        return f"cannot find the server {host} (no network, or a wrong address?)"
    if isinstance(e, ConnectionRefusedError):
        return f"{host} refused the connection"
    if isinstance(e, (TimeoutError, socket.timeout)):
        return f"{host} did not answer in time"
    if isinstance(e, (http.client.IncompleteRead, http.client.RemoteDisconnected, ConnectionResetError,
                      BrokenPipeError)):
        return "the connection was closed early"
    if isinstance(e, ssl.SSLError):
        return f"secure connection to {host} failed: {e.reason or e}"
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror} ({host})"
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _range_start(content_range: str | None) -> int | None:
    """`bytes 100-199/200` -> 100."""
    try:
        return int(content_range.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


def _range_total(content_range: str | None) -> int | None:
    """`bytes 100-199/200` or `bytes */200` -> 200 (None when unknown)."""
    try:
        return int(content_range.rsplit("/", 1)[1])
    except (AttributeError, IndexError, ValueError):
        return None
