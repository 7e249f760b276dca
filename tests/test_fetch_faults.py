"""`esc fetch` against things going wrong: malicious or damaged archives, broken datasets, a full disk, Ctrl-C,
a process killed half way, and two processes at once. Whatever happens, the data directory holds either the
previous dataset or the new one, verified, and no temporary folder.
"""

import errno
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

import esccli.archive
import synthetic
from esccli.archive import Limits, ReadFailed, copy_stream, human_size, safe_members
from esccli.cli import app
from esccli.dataset import verify_dataset
from esccli.errors import DatasetError, DownloadError, EscError, Interrupted
from esccli.fetch import ARCHIVE_NAME, fetch_dataset, read_marker
from esccli.fsutil import folder_lock
from test_fetch import Server, full_archive, layout, leftovers, quick_and_tidy, tiny  # noqa: F401

runner = CliRunner()


# --- crafting archives ---------------------------------------------------------------------------------------

def rezip(src: Path, dest: Path, extra=(), compression=zipfile.ZIP_STORED) -> Path:
    """A copy of the zip `src` with `extra` (ZipInfo or name, bytes) entries added at the end."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for zi in zin.infolist():
            zout.writestr(zi, zin.read(zi))
        for info, data in extra:
            zout.writestr(info, data, compress_type=compression)
    return dest


def patch_declared_size(data: bytes, name: str, size: int) -> bytes:
    """Rewrite the uncompressed size an entry declares, in its local header and in the central directory."""
    b, n = bytearray(data), name.encode()
    for sig, name_at, size_at in ((b"PK\x03\x04", 30, 22), (b"PK\x01\x02", 46, 24)):
        i = b.find(sig)
        while i != -1:
            if b[i + name_at:i + name_at + len(n)] == n:
                b[i + size_at:i + size_at + 4] = size.to_bytes(4, "little")
            i = b.find(sig, i + 1)
    return bytes(b)


def assert_untouched(layout, before=None):
    """No temporary folder left; the dataset is absent, or is still exactly the one installed `before`."""
    assert leftovers(layout.home) == []
    if before is None:
        assert not layout.dataset.exists()
    else:
        assert read_marker(layout.dataset)["source"] == before
        assert len(verify_dataset(layout.dataset, allow_subset=True)) == 250


# --- archives that must be refused before anything is written ------------------------------------------------

@pytest.mark.parametrize("name", [
    "../evil.txt",
    "ESC-50-master/../../evil.txt",
    "ESC-50-master/audio/../../../evil.txt",
    "..\\evil.txt",
    "C:/evil.txt",
    "C:\\evil.txt",
    "ABSOLUTE",
])
def test_entries_escaping_the_folder_are_refused(layout, tiny, tmp_path, name):
    if name == "ABSOLUTE":
        name = str(tmp_path / "abs-evil.txt")
    bad = rezip(tiny[1], tmp_path / "bad.zip", extra=[(zipfile.ZipInfo(name), b"gotcha")])
    with pytest.raises(DownloadError, match="unsafe entry name") as e:
        fetch_dataset(layout, source=bad, allow_subset=True)
    assert "\n" not in str(e.value)
    assert_untouched(layout)
    assert list(tmp_path.rglob("*evil*")) == []


def test_a_symlink_entry_is_refused(layout, tiny, tmp_path):
    link = zipfile.ZipInfo("ESC-50-master/audio/passwd.wav")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    bad = rezip(tiny[1], tmp_path / "bad.zip", extra=[(link, b"/etc/passwd")])
    with pytest.raises(DownloadError, match="symbolic link"):
        fetch_dataset(layout, source=bad, allow_subset=True)
    assert_untouched(layout)


def test_an_entry_listed_twice_is_refused(layout, tiny, tmp_path):
    with zipfile.ZipFile(tiny[1]) as z:
        first = next(n for n in z.namelist() if n.endswith(".wav"))
    with pytest.warns(UserWarning, match="Duplicate name"):
        bad = rezip(tiny[1], tmp_path / "bad.zip", extra=[(first, b"other")])
    with pytest.raises(DownloadError, match="twice"):
        fetch_dataset(layout, source=bad, allow_subset=True)
    assert_untouched(layout)


def test_a_highly_compressed_entry_is_refused_as_a_zip_bomb(layout, tiny, tmp_path):
    bad = rezip(tiny[1], tmp_path / "bomb.zip", extra=[("ESC-50-master/pad.bin", bytes(4 << 20))],
                compression=zipfile.ZIP_DEFLATED)
    assert bad.stat().st_size < tiny[1].stat().st_size + 50_000
    with pytest.raises(DownloadError, match="zip bomb"):
        fetch_dataset(layout, source=bad, allow_subset=True)
    assert_untouched(layout)


def test_a_huge_declared_size_is_refused(layout, tiny, tmp_path):
    data = rezip(tiny[1], tmp_path / "a.zip", extra=[("ESC-50-master/a.bin", b"a" * 100),
                                                     ("ESC-50-master/b.bin", b"b" * 100)]).read_bytes()
    data = patch_declared_size(data, "ESC-50-master/a.bin", 0xFFFF0000)
    data = patch_declared_size(data, "ESC-50-master/b.bin", 0xFFFF0000)
    (tmp_path / "bomb.zip").write_bytes(data)
    with zipfile.ZipFile(tmp_path / "bomb.zip") as z:
        assert sum(zi.file_size for zi in z.infolist()) > 8 << 30
        with pytest.raises(DownloadError, match="zip bomb"):
            safe_members(z, Limits(max_ratio=float("inf")))  # refused for its total alone
    with pytest.raises(DownloadError, match="zip bomb"):
        fetch_dataset(layout, source=tmp_path / "bomb.zip", allow_subset=True)
    assert_untouched(layout)


def test_the_total_size_limit_can_be_lowered(layout, tiny):
    with pytest.raises(DownloadError, match="more than the 100.0 KB limit"):
        fetch_dataset(layout, source=tiny[1], allow_subset=True, limits=Limits(max_total=100_000))
    assert_untouched(layout)


def test_an_entry_larger_than_it_declares_is_stopped(layout, tiny, tmp_path):
    name = "ESC-50-master/meta/notes.bin"
    data = rezip(tiny[1], tmp_path / "a.zip", extra=[(name, os.urandom(300_000))],
                 compression=zipfile.ZIP_DEFLATED).read_bytes()
    (tmp_path / "liar.zip").write_bytes(patch_declared_size(data, name, 1000))
    with pytest.raises(DownloadError, match="damaged"):
        fetch_dataset(layout, source=tmp_path / "liar.zip", allow_subset=True)
    assert_untouched(layout)


def test_copy_stream_never_writes_more_than_declared():
    out = io.BytesIO()
    with pytest.raises(ReadFailed, match="more than the 1000 bytes"):
        copy_stream(io.BytesIO(b"x" * 5000), out, 1000)
    assert len(out.getvalue()) <= 1000 + esccli.archive.CHUNK
    with pytest.raises(ReadFailed, match="not the 1000"):
        copy_stream(io.BytesIO(b"x" * 10), io.BytesIO(), 1000)


# --- damaged archives ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, words", [
    ("truncated", "not a complete zip archive"),
    ("garbage", "not a complete zip archive"),
    ("html", "web page"),
    ("text", "not a zip archive"),
    ("flipped", "damaged"),
])
def test_damaged_archives_are_refused(layout, tiny, tmp_path, kind, words):
    data = tiny[1].read_bytes()
    bad = tmp_path / "bad.zip"
    if kind == "truncated":
        bad.write_bytes(data[:len(data) * 6 // 10])
    elif kind == "garbage":
        bad.write_bytes(b"PK\x03\x04" + os.urandom(20_000))
    elif kind == "html":
        bad.write_bytes(b"<!DOCTYPE html>\n<html><body>Not found</body></html>")
    elif kind == "text":
        bad.write_bytes(b"fold,target\n1,2\n")
    else:  # a byte changed inside a clip: the CRC check finds it
        mid = bytearray(data)
        mid[len(data) // 2] ^= 0xFF
        bad.write_bytes(bytes(mid))
    with pytest.raises(DownloadError, match=words) as e:
        fetch_dataset(layout, source=bad, allow_subset=True)
    assert "\n" not in str(e.value)
    assert_untouched(layout)


def test_a_zip_without_esc50_inside(layout, tmp_path):
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("photos/cat.jpg", b"meow")
    with pytest.raises(DownloadError, match="no meta/esc50.csv"):
        fetch_dataset(layout, source=tmp_path / "other.zip")
    assert_untouched(layout)


# --- archives and folders whose dataset is incomplete -------------------------------------------------------

def broken_copy(tiny, tmp_path, how: str) -> tuple[Path, str]:
    """A copy of the tiny dataset with one problem; returns (folder, a name the error must mention)."""
    root = tmp_path / "broken" / "ESC-50-master"
    shutil.copytree(tiny[0], root)
    victim = sorted((root / "audio").iterdir())[7]
    if how == "missing":
        victim.unlink()
    elif how == "cut short":  # a copy stopped part way: the header is whole and says more than the file holds
        victim.write_bytes(victim.read_bytes()[:1000])
    else:
        victim.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + b"\x00" * 200)
    return root, victim.name


@pytest.mark.parametrize("how, words", [("missing", "1 listed clip is missing from audio/"),
                                        ("undecodable", "1 clip is unreadable or cut short"),
                                        ("cut short", "lasts 1.49 s, not 5 s as every ESC-50 clip does")])
@pytest.mark.parametrize("as_zip", [True, False])
def test_a_missing_or_broken_clip_is_named_and_the_old_dataset_stays(layout, tiny, tmp_path, how, words, as_zip):
    fetch_dataset(layout, source=tiny[0], allow_subset=True)
    root, name = broken_copy(tiny, tmp_path, how)
    source = synthetic.make_archive(tmp_path / "broken.zip", root) if as_zip else root
    with pytest.raises(DatasetError) as e:
        fetch_dataset(layout, source=source, allow_subset=True, force=True)
    assert words in str(e.value) and name in str(e.value)
    assert str(source) in str(e.value) and ".ESC-50.tmp" not in str(e.value)
    assert_untouched(layout, before=str(tiny[0]))


def test_a_csv_with_missing_rows_is_reported(layout, tmp_path):
    archive = full_archive(tmp_path / "short.zip", drop_rows=(5, 6, 7))  # 3 of fold 1's dogs
    with pytest.raises(DatasetError) as e:
        fetch_dataset(layout, source=archive)
    msg = str(e.value)
    assert "lists 1997 clips, expected 2000" in msg and "fold 1, class dog: 5 clips, expected 8" in msg
    assert_untouched(layout)


# --- a full disk ---------------------------------------------------------------------------------------------

def fail_after(monkeypatch, calls: int, exc: BaseException):
    """Make the unpack/copy function fail on its `calls`-th use, after some files have been written."""
    real = esccli.archive.copy_stream
    count = [0]

    def flaky(src, dst, declared, counted=None):
        count[0] += 1
        if count[0] >= calls:
            dst.write(src.read(100))
            raise exc
        return real(src, dst, declared, counted)

    monkeypatch.setattr(esccli.archive, "copy_stream", flaky)


@pytest.mark.parametrize("from_folder", [False, True])
def test_disk_full_while_unpacking_keeps_the_old_dataset(layout, tiny, monkeypatch, from_folder):
    fetch_dataset(layout, source=tiny[0], allow_subset=True)
    with monkeypatch.context() as m:
        fail_after(m, 40, OSError(errno.ENOSPC, "No space left on device"))
        with pytest.raises(EscError, match="disk is full") as e:
            fetch_dataset(layout, source=tiny[0] if from_folder else tiny[1], allow_subset=True, force=True)
        assert "\n" not in str(e.value)
    assert_untouched(layout, before=str(tiny[0]))
    r = fetch_dataset(layout, source=tiny[1], allow_subset=True, force=True)  # space freed: it works
    assert r.source == str(tiny[1]) and leftovers(layout.home) == []


def test_not_enough_free_space_is_said_before_unpacking(layout, tiny, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    with pytest.raises(EscError, match="not enough free disk space"):
        fetch_dataset(layout, source=tiny[1], allow_subset=True)
    assert_untouched(layout)


def test_cli_disk_full_is_one_line(tiny, monkeypatch):
    fail_after(monkeypatch, 3, OSError(errno.ENOSPC, "No space left on device"))
    r = runner.invoke(app, ["fetch", "--from", str(tiny[1]), "--allow-subset"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.strip().startswith("error: the disk is full") and len(r.stderr.strip().splitlines()) == 1


# --- Ctrl-C --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("replacing", [False, True])
def test_ctrl_c_while_unpacking_leaves_no_half_dataset(layout, tiny, monkeypatch, replacing):
    if replacing:
        fetch_dataset(layout, source=tiny[0], allow_subset=True)
    with monkeypatch.context() as m:
        fail_after(m, 60, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            fetch_dataset(layout, source=tiny[1], allow_subset=True, force=replacing)
    assert_untouched(layout, before=str(tiny[0]) if replacing else None)
    r = fetch_dataset(layout, source=tiny[1], allow_subset=True, force=replacing)
    assert r.source == str(tiny[1]) and not r.already_present


def test_ctrl_c_while_verifying_leaves_no_half_dataset(layout, tiny):
    def progress(stage, done, total):
        if stage == "verify" and done == 100:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch_dataset(layout, source=tiny[1], allow_subset=True, progress=progress)
    assert_untouched(layout)


def test_ctrl_c_while_downloading_keeps_the_part_for_a_resume(layout, tiny):
    body = tiny[1].read_bytes()

    def progress(stage, done, total):
        if stage == "download" and done > len(body) // 2:
            raise KeyboardInterrupt

    with Server(body) as srv:
        with pytest.raises(Interrupted) as e:  # which says what it kept
            fetch_dataset(layout, url=srv.url, allow_subset=True, progress=progress)
        part = layout.downloads / (ARCHIVE_NAME + ".part")
        kept = part.stat().st_size
        assert str(e.value) == (f"download interrupted; {human_size(kept)} saved in {part} "
                                "(run the same command again to resume)") and e.value.exit_code == 130
        assert 0 < kept < len(body)
        assert_untouched(layout)
        r = fetch_dataset(layout, url=srv.url, allow_subset=True, keep_archive=True)
    assert srv.requests == [None, f"bytes={kept}-"]
    assert r.archive.read_bytes() == body


def test_leftovers_of_a_killed_process_are_cleaned_up(layout, tiny):
    fetch_dataset(layout, source=tiny[1], allow_subset=True)
    # killed between moving the old dataset aside and renaming the new one in, with a temporary folder around
    os.rename(layout.dataset, layout.home / ".ESC-50.old-dead")
    (layout.home / ".ESC-50.tmp-dead" / "ESC-50" / "audio").mkdir(parents=True)
    r = fetch_dataset(layout, source=tiny[1], allow_subset=True)
    assert r.already_present and r.clips == 250
    assert leftovers(layout.home) == []


# --- two processes -------------------------------------------------------------------------------------------

def test_a_second_fetch_waits_for_the_lock(layout, tiny):
    notes, results = [], []
    with folder_lock(layout.locks / "dataset.lock", "the dataset"):
        t = threading.Thread(target=lambda: results.append(
            fetch_dataset(layout, source=tiny[1], allow_subset=True, notify=notes.append)))
        t.start()
        deadline = time.monotonic() + 10
        while not notes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert any("waiting" in n for n in notes)
        assert not results and not layout.dataset.exists()
    t.join(10)
    assert results and results[0].clips == 250


def test_two_processes_at_once_leave_one_valid_dataset(tiny, esc_home):
    cmd = [sys.executable, "-m", "esccli", "fetch", "--from", str(tiny[1]), "--allow-subset", "--json"]
    env = dict(os.environ, ESC_HOME=str(esc_home))
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    records = [json.loads(out) for out, _ in outs]
    assert sorted(r["already_present"] for r in records) == [False, True]
    assert len(verify_dataset(esc_home / "ESC-50", allow_subset=True)) == 250
    assert leftovers(esc_home) == []
