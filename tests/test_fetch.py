"""`esc fetch`: downloading (from a real HTTP server on 127.0.0.1), installing, the fast path, the CLI.

Damaged and malicious archives, full disks, Ctrl-C and concurrent processes are in test_fetch_faults.py.
"""

import csv
import functools
import io
import json
import random
import shutil
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

import esccli.fetch
import synthetic
from esccli.cli import app
from esccli.dataset import verify_dataset
from esccli.errors import DatasetError, DownloadError, EscError
from esccli.fetch import (ARCHIVE_NAME, DEFAULT_URL, MARKER, MAX_RETRIES, OLD_URLS, again_command, download,
                          fetch_dataset, read_marker, reinstall_command)
from esccli.paths import Layout

runner = CliRunner()


# --- test data: small dataset folders and archives, built once per session ----------------------------------

CLIP_RATE = 320  # Hz

@functools.lru_cache(maxsize=None)
def _clip_bytes() -> bytes:
    # 5 s, as every ESC-50 clip lasts (fetch checks it), at a low rate to keep the archives small (3 kB a clip)
    return synthetic.wav_bytes(synthetic.class_signal(3, 5.0, CLIP_RATE, seed=0), CLIP_RATE)


def build_dataset(root: Path, per_class: int = 1) -> Path:
    """An ESC-50-shaped folder in a fraction of a second: every clip is the same small, valid WAV."""
    root = Path(root)
    rows = synthetic.rows(per_class)
    (root / "audio").mkdir(parents=True)
    for r in rows:
        (root / "audio" / r["filename"]).write_bytes(_clip_bytes())
    synthetic.write_csv(root / "meta" / "esc50.csv", rows)
    (root / "README.md").write_text("test copy\n")
    return root


@functools.lru_cache(maxsize=None)
def _tiny(base: Path) -> tuple[Path, Path]:
    root = build_dataset(base / "tiny" / "ESC-50-master", per_class=1)
    return root, synthetic.make_archive(base / "tiny.zip", root)


def full_archive(path: Path, drop_rows=()) -> Path:
    """A zip shaped like the complete download (2000 clips), written straight from memory (no folder)."""
    rows = synthetic.rows(8)
    with zipfile.ZipFile(path, "w") as z:
        for r in rows:
            z.writestr(f"ESC-50-master/audio/{r['filename']}", _clip_bytes())
        keep = [r for i, r in enumerate(rows) if i not in set(drop_rows)]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=synthetic.FIELDS)
        w.writeheader()
        w.writerows(keep)
        z.writestr("ESC-50-master/meta/esc50.csv", buf.getvalue())
    return path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(folder, zip) of a balanced subset: 1 clip per class per fold, 250 clips. Read-only."""
    yield _tiny(tmp_path_factory.getbasetemp())
    shutil.rmtree(tmp_path_factory.getbasetemp() / "tiny", ignore_errors=True)


@pytest.fixture(scope="session")
def full(tmp_path_factory) -> Path:
    """A zip holding the complete dataset's 2000 clips. Read-only."""
    path = tmp_path_factory.getbasetemp() / "full.zip"
    return path if path.exists() else full_archive(path)


@pytest.fixture(autouse=True)
def quick_and_tidy(tmp_path, monkeypatch):
    """Skip the whole-machine sync before each install (it guards against power cuts, not test failures), and
    delete what the test wrote while it is still only in memory: deleting files once they are written out
    takes about 1.5 ms each on this machine's disk, a cost that would land on a later test session."""
    monkeypatch.setattr(esccli.fetch, "_sync_to_disk", lambda: None)
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def layout(esc_home) -> Layout:
    return Layout(esc_home)


def leftovers(home: Path) -> list[str]:
    """Temporary or set-aside dataset folders left in the data directory."""
    return sorted(p.name for p in Path(home).glob(".ESC-50.*")) if Path(home).exists() else []


# --- a real HTTP server that can misbehave --------------------------------------------------------------------

class Server:
    """Serves `body` at /ESC-50-master.zip on 127.0.0.1, honouring `Range: bytes=N-` unless told not to.

    cuts: absolute byte offsets; the n-th request is cut off (connection closed) at the n-th offset.
    Every request's Range header (or None) is recorded in `requests`.
    """

    def __init__(self, body: bytes, cuts=(), ignore_range=False, status=200, content_type="application/zip",
                 send_length=True, bogus_range=False):
        self.body, self.cuts, self.ignore_range = body, list(cuts), ignore_range
        self.status, self.content_type, self.send_length = status, content_type, send_length
        self.bogus_range = bogus_range  # answer every request with a 206 for the wrong bytes
        self.requests: list[str | None] = []
        self.if_range: list[str | None] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{ARCHIVE_NAME}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        spec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                spec.requests.append(rng)
                spec.if_range.append(self.headers.get("If-Range"))
                if spec.bogus_range:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes 7-{len(spec.body) - 1}/{len(spec.body)}")
                    self.send_header("Content-Length", str(len(spec.body) - 7))
                    self.end_headers()
                    self.wfile.write(spec.body[7:])
                    return
                if spec.status != 200:
                    page = f"<html><body>{spec.status}</body></html>".encode()
                    self.send_response(spec.status)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                data, start = spec.body, 0
                if rng and not spec.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", spec.content_type)
                self.send_header("ETag", '"v1"')
                if spec.send_length:
                    self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                cut = spec.cuts.pop(0) if spec.cuts else None
                if cut is not None and start <= cut < len(data):  # cut == start: not a byte
                    self.wfile.write(data[start:cut])  # then the connection closes (HTTP/1.0)
                else:
                    self.wfile.write(data[start:])

        return Handler


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --- downloading ---------------------------------------------------------------------------------------------

def test_download_installs_verifies_and_deletes_the_archive(layout, tiny):
    body = tiny[1].read_bytes()
    seen = []
    with Server(body) as srv:
        r = fetch_dataset(layout, url=srv.url, allow_subset=True, backoff=0,
                          progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert (r.path, r.clips, r.source, r.already_present, r.full, r.archive) == \
        (layout.dataset, 250, srv.url, False, False, None)
    assert len(verify_dataset(layout.dataset, allow_subset=True)) == 250
    assert (layout.dataset / "README.md").is_file()
    assert list(layout.downloads.iterdir()) == []  # no zip, .part or side file left
    assert leftovers(layout.home) == []
    downloads = [(d, t) for s, d, t in seen if s == "download"]
    assert downloads[-1] == (len(body), len(body))
    assert [d for d, _ in downloads] == sorted(d for d, _ in downloads)
    assert {s for s, _, _ in seen} == {"download", "unpack", "verify"}
    assert read_marker(layout.dataset)["clips"] == 250


def test_keep_archive_keeps_a_byte_identical_zip(layout, tiny):
    with Server(tiny[1].read_bytes()) as srv:
        r = fetch_dataset(layout, url=srv.url, allow_subset=True, keep_archive=True)
        assert r.archive == layout.downloads / ARCHIVE_NAME
        assert r.archive.read_bytes() == tiny[1].read_bytes()
        # kept once, kept after: a later install reuses it, and so does a forced one
        shutil.rmtree(layout.dataset)
        notes = []
        again = fetch_dataset(layout, url=srv.url, allow_subset=True, notify=notes.append)
        assert any("using the archive kept earlier" in n for n in notes) and len(srv.requests) == 1
        assert again.archive == r.archive and r.archive.read_bytes() == tiny[1].read_bytes()
        notes = []
        fetch_dataset(layout, url=srv.url, allow_subset=True, force=True, notify=notes.append)
        assert len(srv.requests) == 1 and any("using the archive kept earlier" in n for n in notes)  # not fetched again
        # until told otherwise: then it is deleted after the install
        fetch_dataset(layout, url=srv.url, allow_subset=True, force=True, keep_archive=False)
        assert not r.archive.exists() and len(srv.requests) == 1
        r = fetch_dataset(layout, url=srv.url, allow_subset=True, force=True)
        assert r.archive is None and len(srv.requests) == 2 and not (layout.downloads / ARCHIVE_NAME).exists()


def test_a_download_cut_short_still_remembers_to_keep_the_archive(layout, tiny):
    body = tiny[1].read_bytes()
    with Server(body, cuts=[len(body) // 2]) as srv:
        with pytest.raises(DownloadError):
            fetch_dataset(layout, url=srv.url, allow_subset=True, keep_archive=True, retries=0)
        r = fetch_dataset(layout, url=srv.url, allow_subset=True, retries=0)  # resumed; nothing said about keeping
    assert r.archive == layout.downloads / ARCHIVE_NAME and r.archive.read_bytes() == body


def test_keep_or_drop_the_archive_when_the_dataset_is_installed_already(layout, tiny):
    with Server(tiny[1].read_bytes()) as srv:
        r = fetch_dataset(layout, url=srv.url, allow_subset=True, keep_archive=True)
        notes = []
        again = fetch_dataset(layout, url=srv.url, allow_subset=True, keep_archive=False, notify=notes.append)
    assert again.already_present and any("deleted the archive" in n for n in notes)
    assert list(layout.downloads.iterdir()) == []  # the archive and its record


def test_force_installs_from_an_archive_that_never_was_installed(layout, tiny):
    with Server(tiny[1].read_bytes()) as srv:
        fetch_dataset(layout, source=tiny[0], allow_subset=True)  # something installed already
        with pytest.raises(DatasetError, match="the archive is kept"):
            fetch_dataset(layout, url=srv.url, force=True)  # refused as a subset
        r = fetch_dataset(layout, url=srv.url, force=True, allow_subset=True)
        assert len(srv.requests) == 1 and r.clips == 250  # from the archive downloaded by the refused run
        fetch_dataset(layout, url=srv.url, force=True, allow_subset=True)
        assert len(srv.requests) == 2  # installed and not kept: --force downloads a fresh one
    assert list(layout.downloads.iterdir()) == []


def test_retries_count_from_the_last_try_that_got_further(layout, tiny):
    body = tiny[1].read_bytes()
    half = len(body) // 2
    with Server(body, cuts=[half, half, half]) as srv:  # the first request stops half way, the next two at once
        with pytest.raises(DownloadError) as e:
            download(srv.url, layout.downloads / ARCHIVE_NAME, retries=2, backoff=0)
    assert len(srv.requests) == 3 and "(2 tries in a row without a byte more)" in str(e.value)


def test_a_kept_archive_that_no_longer_installs_is_deleted_not_reused_forever(layout, tiny):
    with Server(tiny[1].read_bytes()) as srv:
        r = fetch_dataset(layout, url=srv.url, allow_subset=True, keep_archive=True)
        r.archive.write_bytes(r.archive.read_bytes()[:1000])  # damaged since
        shutil.rmtree(layout.dataset)
        with pytest.raises(DownloadError) as e:
            fetch_dataset(layout, url=srv.url, allow_subset=True)
        assert f"the archive from an earlier download ({r.archive}) did not install and is deleted" in str(e.value)
        assert not r.archive.exists() and json.loads((layout.downloads / (ARCHIVE_NAME + ".json")).read_text()) == {
            "kept": True}  # only the wish to keep the next one
        again = fetch_dataset(layout, url=srv.url, allow_subset=True)  # a fresh copy, kept as before
    assert again.clips == 250 and again.archive.read_bytes() == tiny[1].read_bytes() and len(srv.requests) == 2


def test_a_subset_refused_keeps_its_download_for_the_run_that_allows_it(layout, tiny):
    with Server(tiny[1].read_bytes()) as srv:
        with pytest.raises(DatasetError) as e:
            fetch_dataset(layout, url=srv.url)
        assert "--allow-subset" in str(e.value) and "the archive is kept" in str(e.value)
        assert (layout.downloads / ARCHIVE_NAME).is_file() and not layout.dataset.exists()
        r = fetch_dataset(layout, url=srv.url, allow_subset=True)
        assert len(srv.requests) == 1  # not downloaded again
    assert r.clips == 250 and r.archive is None
    assert not (layout.downloads / ARCHIVE_NAME).exists()  # used, and not asked to be kept


def test_an_interrupted_download_resumes_with_a_range_request(layout, tiny):
    body = tiny[1].read_bytes()
    half = len(body) // 2
    with Server(body, cuts=[half]) as srv:
        with pytest.raises(DownloadError) as e:
            fetch_dataset(layout, url=srv.url, allow_subset=True, retries=0)
        assert "closed" in str(e.value) and "resume" in str(e.value) and "\n" not in str(e.value)
        part = layout.downloads / (ARCHIVE_NAME + ".part")
        assert part.stat().st_size == half
        assert not layout.dataset.exists()

        notes = []
        r = fetch_dataset(layout, url=srv.url, allow_subset=True, retries=0, keep_archive=True, notify=notes.append)
    assert srv.requests == [None, f"bytes={half}-"]
    assert srv.if_range == [None, '"v1"']  # the server would send the whole file again had it changed
    assert r.archive.read_bytes() == body
    assert any("resuming" in n for n in notes)
    assert not part.exists()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_download_survives_drops_at_random_points(tmp_path, tiny, seed):
    body = tiny[1].read_bytes()
    cuts = sorted(random.Random(seed).sample(range(1, len(body)), 4))
    with Server(body, cuts=cuts) as srv:
        out = download(srv.url, tmp_path / "a.zip", retries=1, backoff=0)
    assert out.read_bytes() == body
    assert srv.requests[0] is None and all(r.startswith("bytes=") for r in srv.requests[1:])
    assert len(srv.requests) == 5


def test_a_server_that_ignores_range_makes_it_start_over(tmp_path, tiny):
    body = tiny[1].read_bytes()
    with Server(body, cuts=[len(body) // 3], ignore_range=True) as srv:
        notes = []
        out = download(srv.url, tmp_path / "a.zip", retries=1, backoff=0, notify=notes.append)
    assert out.read_bytes() == body
    assert srv.requests == [None, f"bytes={len(body) // 3}-"]
    assert any("cannot resume" in n for n in notes)


def test_stale_partial_file_with_the_stdlib_server_which_ignores_range(tmp_path, tiny):
    served = tmp_path / "www"
    served.mkdir()
    shutil.copy(tiny[1], served / ARCHIVE_NAME)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{ARCHIVE_NAME}"
        dest = tmp_path / "dl" / ARCHIVE_NAME
        dest.parent.mkdir()
        (dest.parent / (ARCHIVE_NAME + ".part")).write_bytes(b"junk" * 1000)
        (dest.parent / (ARCHIVE_NAME + ".part.json")).write_text(json.dumps({"url": url}))
        download(url, dest, retries=0)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert dest.read_bytes() == tiny[1].read_bytes()


def test_range_not_satisfiable_on_a_complete_part_just_finishes(tmp_path, tiny):
    body = tiny[1].read_bytes()
    dest = tmp_path / ARCHIVE_NAME
    with Server(body) as srv:
        (tmp_path / (ARCHIVE_NAME + ".part")).write_bytes(body)
        (tmp_path / (ARCHIVE_NAME + ".part.json")).write_text(json.dumps({"url": srv.url, "etag": '"v1"'}))
        download(srv.url, dest, retries=0)
    assert srv.requests == [f"bytes={len(body)}-"]
    assert dest.read_bytes() == body


def test_range_not_satisfiable_on_an_oversized_part_starts_over(tmp_path, tiny):
    body = tiny[1].read_bytes()
    dest = tmp_path / ARCHIVE_NAME
    with Server(body) as srv:
        (tmp_path / (ARCHIVE_NAME + ".part")).write_bytes(body + b"extra")
        (tmp_path / (ARCHIVE_NAME + ".part.json")).write_text(json.dumps({"url": srv.url}))
        download(srv.url, dest, retries=0)
    assert srv.requests == [f"bytes={len(body) + 5}-", None]
    assert dest.read_bytes() == body


def test_a_server_whose_partial_answers_make_no_sense(tmp_path, tiny):
    with Server(tiny[1].read_bytes(), bogus_range=True) as srv:
        with pytest.raises(DownloadError, match="make no sense"):
            download(srv.url, tmp_path / "a.zip", retries=0)
    assert len(srv.requests) == 3


def test_a_partial_download_of_another_url_is_not_resumed(tmp_path, tiny):
    body = tiny[1].read_bytes()
    (tmp_path / (ARCHIVE_NAME + ".part")).write_bytes(body[:1000])
    (tmp_path / (ARCHIVE_NAME + ".part.json")).write_text(json.dumps({"url": "http://elsewhere/x.zip"}))
    with Server(body) as srv:
        download(srv.url, tmp_path / ARCHIVE_NAME, retries=0)
    assert srv.requests == [None]


def test_unknown_length_is_fine(tmp_path, tiny):
    with Server(tiny[1].read_bytes(), send_length=False) as srv:
        out = download(srv.url, tmp_path / "a.zip", retries=0)
    assert out.read_bytes() == tiny[1].read_bytes()


def test_http_404_fails_at_once_with_one_line(layout):
    with Server(b"", status=404) as srv:
        with pytest.raises(DownloadError) as e:
            fetch_dataset(layout, url=srv.url, retries=3, backoff=0)
    assert srv.requests == [None]
    assert "HTTP 404" in str(e.value) and "\n" not in str(e.value)
    assert not layout.dataset.exists()


def test_http_500_is_retried_then_reported(layout):
    sleeps = []
    with Server(b"", status=500) as srv:
        with pytest.raises(DownloadError) as e:
            download(srv.url, layout.downloads / ARCHIVE_NAME, retries=2, backoff=0.5, sleep=sleeps.append)
    assert len(srv.requests) == 3
    assert sleeps == [0.5, 1.0]  # exponential backoff
    assert "HTTP 500" in str(e.value) and "3 tries in a row" in str(e.value) and "\n" not in str(e.value)


def test_the_cli_refuses_more_retries_than_the_ceiling():
    r = runner.invoke(app, ["fetch", "--retries", str(MAX_RETRIES + 1)])
    assert r.exit_code == 2 and f"less than or equal to {MAX_RETRIES}" in r.stderr


def test_retries_and_their_waits_have_a_ceiling(layout):
    sleeps = []
    with Server(b"", status=500) as srv:
        with pytest.raises(DownloadError):
            download(srv.url, layout.downloads / ARCHIVE_NAME, retries=50, backoff=1.0, sleep=sleeps.append)
    assert len(srv.requests) == 1 + MAX_RETRIES == 11
    assert sleeps == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, 60.0]  # MAX_DELAY: 60 s at most


@pytest.mark.parametrize("body, ctype, words", [
    (b"<!DOCTYPE html><html><body>Sign in</body></html>", "text/html; charset=utf-8", "web page"),
    (b"\n  <html><body>Sign in</body></html>", "application/octet-stream", "web page"),
    (b"\x00\x01 not a zip at all " * 100, "application/zip", "not a zip"),
])
def test_something_that_is_not_a_zip_is_refused(layout, body, ctype, words):
    with Server(body, content_type=ctype) as srv:
        with pytest.raises(DownloadError) as e:
            fetch_dataset(layout, url=srv.url, retries=0)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert not layout.dataset.exists()
    assert not (layout.downloads / ARCHIVE_NAME).exists()
    assert not (layout.downloads / (ARCHIVE_NAME + ".part")).exists()


def test_no_server_listening_is_one_clear_line(layout):
    url = f"http://127.0.0.1:{closed_port()}/x.zip"
    with pytest.raises(DownloadError) as e:
        fetch_dataset(layout, url=url, retries=1, backoff=0)
    assert "refused" in str(e.value) and "\n" not in str(e.value)


def test_an_unknown_host_is_one_clear_line(layout):
    with pytest.raises(DownloadError) as e:
        fetch_dataset(layout, url="http://esc50.invalid/x.zip", retries=0)
    assert "esc50.invalid" in str(e.value) and "\n" not in str(e.value)


def test_only_http_urls(layout):
    with pytest.raises(DownloadError, match="http"):
        fetch_dataset(layout, url="ftp://example.org/x.zip")


def test_a_complete_earlier_download_is_reused_after_a_failed_install(layout, tiny, monkeypatch):
    body = tiny[1].read_bytes()
    with Server(body) as srv:
        import esccli.archive

        def full_disk(*a, **k):
            raise OSError(28, "No space left on device")

        with monkeypatch.context() as m:
            m.setattr(esccli.archive, "copy_stream", full_disk)
            with pytest.raises(EscError, match="disk is full"):
                fetch_dataset(layout, url=srv.url, allow_subset=True)
        assert (layout.downloads / ARCHIVE_NAME).read_bytes() == body  # kept for the next run
        notes = []
        r = fetch_dataset(layout, url=srv.url, allow_subset=True, notify=notes.append)
    assert len(srv.requests) == 1
    assert any("downloaded earlier" in n for n in notes)
    assert r.clips == 250 and not (layout.downloads / ARCHIVE_NAME).exists()


# --- installing from what the user has -----------------------------------------------------------------------

def test_install_from_the_shared_synthetic_archive(layout, synth_archive):
    r = fetch_dataset(layout, source=synth_archive, allow_subset=True)
    assert r.clips == 250 and r.source == str(synth_archive) and not r.full
    assert synth_archive.is_file()  # an archive given with --from is never deleted
    assert leftovers(layout.home) == []


def test_install_from_a_folder_holding_the_dataset_folder(layout, tiny, tmp_path):
    outer = tmp_path / "unzipped"
    shutil.copytree(tiny[0], outer / "ESC-50-master")
    (outer / "ESC-50-master" / ".git").mkdir()
    (outer / "ESC-50-master" / ".git" / "big").write_bytes(b"x" * 1000)
    r = fetch_dataset(layout, source=outer, allow_subset=True)
    assert r.clips == 250 and r.source == str(outer / "ESC-50-master")
    assert not (layout.dataset / ".git").exists()
    assert (outer / "ESC-50-master" / "audio").is_dir()  # the user's copy is left alone


def test_flac_clips_listed_as_wav_are_fine(layout, tmp_path):
    root = tmp_path / "ESC-50-16k"
    (root / "audio").mkdir(parents=True)
    flac = synthetic.wav_bytes(synthetic.class_signal(3, 5.0, CLIP_RATE, seed=0), CLIP_RATE, fmt="FLAC")
    rows = synthetic.rows(1)
    for r in rows:
        (root / "audio" / r["filename"]).with_suffix(".flac").write_bytes(flac)
    synthetic.write_csv(root / "meta" / "esc50.csv", rows)
    archive = synthetic.make_archive(tmp_path / "flac.zip", root)
    r = fetch_dataset(layout, source=archive, allow_subset=True)
    assert r.clips == 250 and {p.suffix for p in (layout.dataset / "audio").iterdir()} == {".flac"}


def test_a_folder_that_is_not_esc50(layout, tmp_path):
    with pytest.raises(DatasetError, match="does not hold ESC-50"):
        fetch_dataset(layout, source=tmp_path)


def test_a_missing_source(layout, tmp_path):
    with pytest.raises(EscError, match="does not exist"):
        fetch_dataset(layout, source=tmp_path / "nope.zip")


def test_a_subset_needs_allow_subset(layout, tiny):
    with pytest.raises(DatasetError) as e:
        fetch_dataset(layout, source=tiny[1])
    assert "250 clips, not 2000" in str(e.value) and "--allow-subset" in str(e.value)
    assert not layout.dataset.exists() and leftovers(layout.home) == []


def test_url_and_source_together_are_refused(layout, tiny):
    with pytest.raises(EscError, match="not both"):
        fetch_dataset(layout, url="http://127.0.0.1/x.zip", source=tiny[1])


# --- the fast path, --force ----------------------------------------------------------------------------------

def test_a_second_fetch_does_nothing(layout, tiny):
    fetch_dataset(layout, source=tiny[1], allow_subset=True)
    stages = []
    r = fetch_dataset(layout, source=tiny[1], allow_subset=True, progress=lambda s, d, t: stages.append(s))
    assert r.already_present and r.clips == 250 and r.source == str(tiny[1])
    assert stages == []  # no unpacking, not even a decode: the marker vouches for the clips


def test_without_a_marker_the_installed_copy_is_verified_once(layout, tiny):
    fetch_dataset(layout, source=tiny[1], allow_subset=True)
    (layout.dataset / MARKER).unlink()
    stages = []
    r = fetch_dataset(layout, source=tiny[1], allow_subset=True, progress=lambda s, d, t: stages.append(s))
    assert r.already_present and set(stages) == {"verify"}
    assert read_marker(layout.dataset)["clips"] == 250


def test_a_changed_csv_invalidates_the_marker(layout, tiny):
    fetch_dataset(layout, source=tiny[1], allow_subset=True)
    csv = layout.dataset / "meta" / "esc50.csv"
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text("".join(lines[:-1]))  # one row gone: no longer balanced
    notes = []
    r = fetch_dataset(layout, source=tiny[1], allow_subset=True, notify=notes.append)
    assert not r.already_present and r.clips == 250
    assert any("failed verification" in n for n in notes)


def test_a_deleted_clip_makes_it_fetch_again(layout, tiny):
    fetch_dataset(layout, source=tiny[1], allow_subset=True)
    next((layout.dataset / "audio").iterdir()).unlink()
    r = fetch_dataset(layout, source=tiny[1], allow_subset=True)
    assert not r.already_present and len(list((layout.dataset / "audio").iterdir())) == 250


def test_an_installed_subset_does_not_satisfy_a_full_fetch(layout, tiny, full):
    fetch_dataset(layout, source=tiny[1], allow_subset=True)
    notes = []
    r = fetch_dataset(layout, source=full, notify=notes.append)
    assert (r.clips, r.full, r.source, r.already_present) == (2000, True, str(full), False)
    assert len(list((layout.dataset / "audio").iterdir())) == 2000
    assert any("subset" in n for n in notes)
    assert fetch_dataset(layout).already_present  # a full dataset needs no download


def test_files_are_synced_before_the_dataset_appears(layout, tiny, monkeypatch):
    calls = []
    monkeypatch.setattr(esccli.fetch, "_sync_to_disk", lambda: calls.append(layout.dataset.exists()))
    fetch_dataset(layout, source=tiny[1], allow_subset=True)
    assert calls == [False]


def test_force_replaces_the_dataset(layout, tiny):
    fetch_dataset(layout, source=tiny[1], allow_subset=True)
    r = fetch_dataset(layout, source=tiny[0], allow_subset=True, force=True)
    assert not r.already_present and r.source == str(tiny[0])
    assert read_marker(layout.dataset)["source"] == str(tiny[0])
    assert leftovers(layout.home) == []


# --- the command line ----------------------------------------------------------------------------------------

def test_cli_install_then_nothing_to_do(tiny, esc_home):
    r = runner.invoke(app, ["fetch", "--from", str(tiny[1]), "--allow-subset"])
    assert r.exit_code == 0, r.output
    assert "Installed" in r.stdout and "250 clips" in r.stdout
    r = runner.invoke(app, ["fetch", "--from", str(tiny[1]), "--allow-subset"])
    assert r.exit_code == 0 and "already installed" in r.stdout and len(r.stdout.strip().splitlines()) == 1
    # the way to install it again names where it came from: a bare --force would download from GitHub
    assert r.stdout.strip().endswith(f"To install it again: `esc fetch --force --from {tiny[1]} --allow-subset`")


def test_the_command_to_install_again_names_the_source(tmp_path, layout, tiny):
    assert again_command(DEFAULT_URL) == again_command(None) == "esc fetch --force"
    assert again_command(OLD_URLS[0]) == "esc fetch --force"  # an install from the old default: the new default
    assert again_command("http://127.0.0.1:8000/a b.zip") == "esc fetch --force --url 'http://127.0.0.1:8000/a b.zip'"
    assert again_command(str(tmp_path), full=False) == f"esc fetch --force --from {tmp_path} --allow-subset"
    assert again_command(str(tmp_path / "gone.zip")) == "esc fetch --force"  # nothing there to install from

    fetch_dataset(layout, source=tiny[1], allow_subset=True)
    assert reinstall_command(layout.dataset) == f"esc fetch --force --from {tiny[1]} --allow-subset"
    (layout.dataset / MARKER).unlink()  # a copy put there by hand: not "from itself"
    assert reinstall_command(layout.dataset) == "esc fetch --force"


def test_cli_json(tiny, esc_home):
    r = runner.invoke(app, ["fetch", "--from", str(tiny[1]), "--allow-subset", "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["path"] == str(esc_home / "ESC-50") and rec["clips"] == 250
    assert rec["source"] == str(tiny[1]) and rec["already_present"] is False
    r = runner.invoke(app, ["fetch", "--from", str(tiny[1]), "--allow-subset", "--json"])
    assert json.loads(r.stdout)["already_present"] is True


def test_cli_download_with_keep_archive(tiny, esc_home):
    with Server(tiny[1].read_bytes()) as srv:
        r = runner.invoke(app, ["fetch", "--url", srv.url, "--allow-subset", "--keep-archive"])
    assert r.exit_code == 0, r.output
    assert "kept the archive" in r.stderr
    assert (esc_home / "downloads" / ARCHIVE_NAME).is_file()


def one_line_error(r) -> str:
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_cli_errors_are_one_red_line(tiny, tmp_path):
    assert "does not exist" in one_line_error(runner.invoke(app, ["fetch", "--from", str(tmp_path / "x.zip")]))
    assert "--allow-subset" in one_line_error(runner.invoke(app, ["fetch", "--from", str(tiny[1])]))
    assert "not both" in one_line_error(runner.invoke(app, ["fetch", "--from", str(tiny[1]), "--url", "http://x/"]))
    url = f"http://127.0.0.1:{closed_port()}/x.zip"
    assert "refused" in one_line_error(runner.invoke(app, ["fetch", "--url", url, "--retries", "0"]))
    with Server(b"", status=404) as srv:
        assert "HTTP 404" in one_line_error(runner.invoke(app, ["fetch", "--url", srv.url]))


def test_cli_help():
    r = runner.invoke(app, ["fetch", "--help"])
    assert r.exit_code == 0
    for opt in ("--url", "--from", "--force", "--allow-subset", "--keep-archive", "--json"):
        assert opt in r.output
