"""`esc predict` and esccli.predict: windows, formats and rates, timelines, inputs, output schemas, bad files.

The model is the tiny one trained on synthetic sounds (1 s windows at 16 kHz, see conftest.py); it recognises
tests/synthetic.py's class_signal. click >= 8.2's CliRunner keeps stderr apart: r.stdout is only stdout.
"""

import csv
import io
import json
import os
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from esccli import predict as core
from esccli.checkpoint import load as load_model
from esccli.cli import app
from esccli.cli.predict import AUDIO_GLOB, _clock
from synthetic import assert_one_line_error, class_signal, wav_bytes

runner = CliRunner()

SR = 16000  # the tiny model's rate; its window is 1 s
A, B = "mouse_click", "washing_machine"  # two classes the tiny model tells apart with > 90% confidence
CLASS = {"mouse_click": 31, "washing_machine": 35}
JSON_KEYS = {"file", "duration", "sample_rate", "channels", "top", "note", "silent", "error"}


def run(model, *args, input=None):
    return runner.invoke(app, ["predict", "--model", str(model), *map(str, args)], input=input)


def write(path: Path, x: np.ndarray, sr: int, subtype: str = "PCM_16", fmt: str | None = None) -> Path:
    sf.write(path, x, sr, subtype=subtype, format=fmt)
    return path


def sound(name: str, seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    return class_signal(CLASS[name], seconds, sr, seed=seed)


def records(r) -> dict:
    return {rec["file"]: rec for rec in json.loads(r.stdout)}


@pytest.fixture(scope="module")
def model(trained_model):
    return trained_model


@pytest.fixture(scope="module")
def loaded(trained_model):
    return load_model(trained_model)


# --- windows, without a model ---------------------------------------------------------------------------------

def test_window_positions():
    W, H = 100, 50
    assert core.window_starts(0, W, H) == []
    assert core.window_starts(1, W, H) == [(0, 1)]  # one sample: one padded window
    assert core.window_starts(30, W, H) == [(0, 30)]
    assert core.window_starts(100, W, H) == [(0, 100)]  # exactly one window: no copy of its end
    # audio after the last whole window, however little: one more window, ending with the recording
    assert core.window_starts(101, W, H) == [(0, 100), (1, 101)]
    assert core.window_starts(124, W, H) == [(0, 100), (24, 124)]
    assert core.window_starts(200, W, H) == [(0, 100), (50, 150), (100, 200)]
    assert core.window_starts(230, W, H) == [(0, 100), (50, 150), (100, 200), (130, 230)]
    assert core.window_starts(300, W, 100) == [(0, 100), (100, 200), (200, 300)]
    assert core.window_starts(301, W, 100) == [(0, 100), (100, 200), (200, 300), (201, 301)]
    # a hop longer than the window leaves gaps between whole windows (esc predict refuses one), not at the end
    assert core.window_starts(400, W, 150) == [(0, 100), (150, 250), (300, 400)]
    assert core.window_starts(470, W, 150) == [(0, 100), (150, 250), (300, 400), (370, 470)]
    # esc predict asks for SHORT_SECONDS of audio in such a last window (a shorter tail would repeat the window
    # before it to add what no ESC-50 sound is as short as)
    assert core.window_starts(124, W, H, min_tail=25) == [(0, 100)]
    assert core.window_starts(125, W, H, min_tail=25) == [(0, 100), (25, 125)]
    with pytest.raises(ValueError):
        core.window_starts(10, W, 0)


def test_a_sound_at_the_very_end_of_a_recording_is_heard(model, tmp_path):
    # 1 s windows, 0.5 s apart: 1 s of silence, then 0.3 s of sound. Before, a tail under a quarter window was
    # dropped, and this file was "silent"; now its last window is the recording's last second, as a file of its own
    x = np.concatenate([np.zeros(SR, np.float32), sound(A, 0.3)])
    r = run(model, write(tmp_path / "late.wav", x, SR), write(tmp_path / "last.wav", x[-SR:], SR),
            write(tmp_path / "tiny-tail.wav", sound(A, 1.2), SR), "--json", "--windows")
    assert r.exit_code == 0, r.output
    late, last, tiny = json.loads(r.stdout)
    assert [(w["start"], w["end"]) for w in late["windows"]] == [(0.0, 1.0), (0.3, 1.3)]
    assert [(w["start"], w["end"]) for w in tiny["windows"]] == [(0.0, 1.0)]  # 0.2 s left: under SHORT_SECONDS
    assert late["windows"][0]["class"] is None and late["windows"][0]["silent"]
    assert not late["windows"][1]["silent"]
    assert late["top"] == last["top"] == late["windows"][1]["top"]


def test_streamed_windows_are_the_reference_windows():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(0, 2000))
        window, hop = int(rng.integers(1, 300)), int(rng.integers(1, 400))
        x = rng.standard_normal(n).astype(np.float32)
        cuts = np.sort(rng.integers(0, n + 1, size=int(rng.integers(0, 6))))
        blocks = np.split(x, cuts)
        min_tail = int(rng.integers(1, 100))
        got = [(s, w.copy()) for s, w in core.iter_windows(iter(blocks), window, hop, min_tail)]
        want = core.window_starts(n, window, hop, min_tail)
        assert [(s, s + w.size) for s, w in got] == want, (n, window, hop, cuts)
        for s, w in got:
            np.testing.assert_array_equal(w, x[s:s + w.size])


def test_top_classes_and_min_probability():
    p = np.array([0.1, 0.6, 0.05, 0.25])
    classes = ["dog", "rooster", "pig", "made_up"]
    top = core.top_classes(p, classes, 3)
    assert [g.name for g in top] == ["rooster", "made_up", "dog"]
    assert top[0] == ("rooster", "animals", 0.6)
    assert top[1].category is None  # not an ESC-50 class
    assert [g.name for g in core.top_classes(p, classes, 3, min_probability=0.2)] == ["rooster", "made_up"]
    assert core.top_classes(p, classes, 10)[-1].name == "pig"


@pytest.mark.parametrize("seconds, shown", [(0, "0:00.0"), (7.5, "0:07.5"), (59.94, "0:59.9"), (59.97, "1:00.0"),
                                            (119.96, "2:00.0"), (3599.99, "1:00:00.0"), (3723, "1:02:03.0")])
def test_times_are_rounded_before_they_are_split_into_minutes(seconds, shown):
    assert _clock(seconds) == shown  # never "0:60.0"


def test_timeline_merges_runs_and_tiles_the_file():
    def w(start, name, p):
        return core.Window(start, start + 1.0, name, p, [])

    wins = [w(0, "dog", 0.9), w(0.5, "dog", 0.7), w(1.0, "cat", 0.8), w(1.5, None, None), w(2.0, "cat", 0.3)]
    segs = core.timeline(wins, 3.0)
    assert [(s.name, s.windows, s.silent) for s in segs] == [("dog", 2, False), ("cat", 1, False), (None, 1, True),
                                                             ("cat", 1, False)]
    assert segs[0].start == 0 and segs[-1].end == 3.0
    assert all(a.end == b.start for a, b in zip(segs, segs[1:]))
    assert segs[0].end == pytest.approx(1.25)  # halfway between the centres 1.0 and 1.5
    assert segs[0].probability == pytest.approx(0.8) and segs[2].probability is None
    # under min_probability a window is unsure and joins the unsure ones next to it
    wins.append(w(2.5, "dog", 0.4))
    segs = core.timeline(wins, 3.5, min_probability=0.5)
    assert [(s.name, s.windows, s.silent) for s in segs] == [("dog", 2, False), ("cat", 1, False), (None, 1, True),
                                                             (None, 2, False)]
    assert segs[-1].probability is None


def test_glob_and_gather(tmp_path):
    assert AUDIO_GLOB == core.AUDIO_GLOB  # spelled out twice so that --help needs no numpy
    assert core.expand_braces("*.{wav,flac}") == ["*.wav", "*.flac"]
    assert core.expand_braces("{a,b}{1,2}") == ["a1", "a2", "b1", "b2"]
    root = tmp_path / "root"
    for rel in ["a.wav", "B.WAV", "sub/c.flac", "sub/deeper/d.ogg", "sub/notes.txt", ".hidden.wav", ".git/e.wav"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    got = core.gather([root, tmp_path / "nope.wav", tmp_path / "empty"])
    names = [str(Path(g).relative_to(root)) for g in got[:4]]
    assert names == ["B.WAV", "a.wav", "sub/c.flac", "sub/deeper/d.ogg"]
    assert got[4] == tmp_path / "nope.wav"  # kept: it gets its own error
    assert isinstance(got[5], core.Unusable) and "no files matching" in got[5].error
    assert [Path(g).name for g in core.gather([root], "*.flac")] == ["c.flac"]
    assert [Path(g).name for g in core.gather([root], "sub/*/*.ogg")] == ["d.ogg"]
    # '**/' matches no folder too, as in a shell: the folder's own files are found
    assert [Path(g).name for g in core.gather([root], "**/*.wav")] == ["B.WAV", "a.wav"]
    assert [Path(g).name for g in core.gather([root], "**/*.{wav,ogg}")] == ["B.WAV", "a.wav", "d.ogg"]
    if os.geteuid() != 0:  # root reads any folder
        locked = root / "sub" / "locked"
        locked.mkdir()
        locked.chmod(0)
        try:
            bad = [g for g in core.gather([root]) if isinstance(g, core.Unusable)]
            assert len(bad) == 1 and "cannot read this folder" in bad[0].error and "locked" in bad[0].name
        finally:
            locked.chmod(0o755)


# --- the core with the model ------------------------------------------------------------------------------------

def test_windows_of_many_files_share_batches(loaded, tmp_path):
    """Six one-window files with batch size 4 take two forward passes, not six."""
    paths = [write(tmp_path / f"{i}.wav", sound(A, 1.0, seed=i), SR) for i in range(6)]
    sizes = []
    handle = loaded.model.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    try:
        results = list(core.predict_files(paths, loaded, batch_size=4))
    finally:
        handle.remove()
    assert sizes == [4, 2]
    assert [r.file for r in results] == [str(p) for p in paths]
    assert all(r.top[0].name == A for r in results)


def test_memory_stays_bounded_on_a_long_file(loaded, tmp_path):
    """Ten minutes at 16 kHz is 38 MB of float32 once decoded; predicting it holds a few blocks at most."""
    seconds = 600
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(seconds * SR)).astype(np.float32)
    path = write(tmp_path / "long.wav", x, SR)
    whole = x.nbytes
    del x
    block_seconds, hop = 10.0, 1.0
    list(core.predict_files([write(tmp_path / "warm.wav", sound(A, 1.0), SR)], loaded))  # imports, mel filters
    tracemalloc.start()
    try:
        [r] = core.predict_files([path], loaded, hop_seconds=hop, batch_size=16, block_seconds=block_seconds)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.error is None
    assert r.n_windows == len(core.window_starts(seconds * SR, SR, int(hop * SR))) == seconds
    # one read block (int16 -> float32 twice), the buffer it joins, one batch: a few MB
    assert peak < whole / 6, f"peak {peak / 1e6:.1f} MB for a {whole / 1e6:.0f} MB recording"


def test_bad_file_in_the_middle_of_a_batch(loaded, tmp_path):
    good = [write(tmp_path / f"{i}.wav", sound(B, 1.5, seed=i), SR) for i in range(2)]
    nan = sound(B, 3.0).astype(np.float32)
    nan[int(2.5 * SR)] = np.nan  # after two windows went to the batch
    bad = write(tmp_path / "nan.wav", nan, SR, subtype="FLOAT")
    results = list(core.predict_files([good[0], bad, core.AudioBytes("-", b""), good[1]], loaded, batch_size=3))
    assert [r.error is None for r in results] == [True, False, False, True]
    assert "NaN" in results[1].error and results[1].top == []
    assert results[2].error == "empty input (0 bytes)"
    assert results[3].top[0].name == B


def test_a_model_output_that_is_not_a_number_is_the_files_error(loaded, tmp_path):
    """Never a NaN probability in the results (it is not JSON): the file it came from gets an error instead."""
    paths = [write(tmp_path / f"{i}.wav", sound(B, 1.0, seed=i), SR) for i in range(2)]
    calls = []

    def poison_the_second_batch(module, args, output):
        calls.append(1)
        return output * float("nan") if len(calls) == 2 else output

    handle = loaded.model.register_forward_hook(poison_the_second_batch)
    try:
        results = list(core.predict_files(paths, loaded, batch_size=1))
    finally:
        handle.remove()
    assert results[0].error is None and results[0].top[0].name == B
    assert results[1].error == "the model's output for this file is not a number" and results[1].top == []


# --- esc predict: formats, rates, channels, lengths -------------------------------------------------------------

def test_formats_rates_and_channels(model, tmp_path):
    x = lambda sr, seconds=2.0: sound(A, seconds, sr, seed=sr)  # noqa: E731
    files = {
        "8k.wav": (x(8000), 8000, "PCM_16"),
        "16k.wav": (x(16000), 16000, "PCM_16"),
        "44k.wav": (x(44100), 44100, "PCM_16"),
        "48k.wav": (x(48000), 48000, "PCM_16"),
        "96k.wav": (x(96000), 96000, "PCM_16"),
        "u8.wav": (x(16000), 16000, "PCM_U8"),
        "24bit.wav": (x(22050), 22050, "PCM_24"),
        "float.wav": (x(16000), 16000, "FLOAT"),
        "stereo.flac": (np.stack([x(44100), 0.5 * x(44100)], axis=1), 44100, "PCM_24"),
        "three.wav": (np.stack([x(48000), 0.8 * x(48000), 0.5 * x(48000)], axis=1), 48000, "PCM_16"),
        "vorbis.ogg": (x(44100), 44100, "VORBIS"),
    }
    for name, (data, sr, subtype) in files.items():
        write(tmp_path / name, data, sr, subtype)
    write(tmp_path / "short.wav", x(16000, 0.3), 16000)
    write(tmp_path / "one.wav", np.array([0.5], np.float32), 16000)
    write(tmp_path / "one-44k.wav", np.array([0.5], np.float32), 44100)
    names = [*files, "short.wav", "one.wav", "one-44k.wav"]
    r = run(model, *[tmp_path / n for n in names], "--json", "--windows")
    assert r.exit_code == 1, r.output  # one-44k.wav: nothing left of one sample after resampling
    recs = records(r)
    assert list(recs) == [str(tmp_path / n) for n in names]
    for name, (data, sr, _) in files.items():
        rec = recs[str(tmp_path / name)]
        assert rec["error"] is None, (name, rec["error"])
        assert rec["top"][0]["class"] == A, (name, rec["top"])
        assert rec["sample_rate"] == sr and rec["channels"] == (1 if data.ndim == 1 else data.shape[1])
        assert rec["duration"] == pytest.approx(2.0, abs=1e-3)
        assert len(rec["windows"]) == 3  # 0-1, 0.5-1.5, 1-2
    short = recs[str(tmp_path / "short.wav")]
    assert short["error"] is None and len(short["top"]) == 3
    assert [(w["start"], w["end"]) for w in short["windows"]] == [(0.0, 0.3)]  # one window, padded
    one = recs[str(tmp_path / "one.wav")]  # one sample is no sound
    assert one["error"].startswith("silent") and one["duration"] == pytest.approx(1 / 16000, abs=1e-6)
    assert "too short" in recs[str(tmp_path / "one-44k.wav")]["error"]


def test_long_recording_timeline(model, tmp_path):
    """60 s: class A for 30 s, then class B; the timeline shows A then B, changing near 30 s."""
    x = np.concatenate([sound(A, 30.0, seed=1), sound(B, 30.0, seed=2)])
    path = write(tmp_path / "a-then-b.wav", x, SR)

    r = run(model, path)
    assert r.exit_code == 0, r.output
    table, timeline = r.stdout.split(": timeline")
    assert A in table and B in table  # both among the file's top classes
    assert timeline.index(A) < timeline.index(B)
    assert timeline.count(A) == 1 and timeline.count(B) == 1, timeline  # merged into two rows

    r = run(model, path, "--json", "--windows")
    [rec] = json.loads(r.stdout)
    wins = rec["windows"]
    assert len(wins) == 119 and wins[0]["start"] == 0.0 and wins[-1]["end"] == 60.0
    tops = [w["class"] for w in wins]
    change = tops.index(B)
    assert set(tops[:change]) == {A} and set(tops[change:]) == {B}
    assert 29.0 <= wins[change]["start"] <= 30.0
    assert {g["class"] for g in rec["top"][:2]} == {A, B}


def test_hop_option(model, tmp_path):
    path = write(tmp_path / "ten.wav", sound(B, 10.0), SR)
    for hop, n in [(None, 19), (1.0, 10), (0.25, 37)]:
        r = run(model, path, "--json", "--windows", *(["--hop", hop] if hop else []))
        [rec] = json.loads(r.stdout)
        starts = [w["start"] for w in rec["windows"]]
        assert len(starts) == n == len(core.window_starts(10 * SR, SR, int((hop or 0.5) * SR))), hop
        assert np.allclose(np.diff(starts), hop or 0.5)
    assert run(model, path, "--hop", "0").exit_code == 2  # a usage error
    # longer than the model's 1 s window: the audio between windows would never be heard
    assert_one_line_error(run(model, path, "--hop", "1.5"), "hop of 1.5 s is longer than the model's 1 s windows",
                          "--hop 1 or less")


def test_stdin(model, tmp_path):
    data = wav_bytes(sound(A, 2.0, 44100), 44100)
    r = run(model, "-", "--json", input=data)
    assert r.exit_code == 0, r.output
    [rec] = json.loads(r.stdout)
    assert rec["file"] == "-" and rec["sample_rate"] == 44100 and rec["top"][0]["class"] == A
    flac = io.BytesIO()
    sf.write(flac, sound(B, 1.0), SR, format="FLAC")
    path = write(tmp_path / "a.wav", sound(A, 1.0), SR)
    r = run(model, path, "-", "--json", input=flac.getvalue())
    assert [rec["top"][0]["class"] for rec in json.loads(r.stdout)] == [A, B]
    r = run(model, "-", "--json", input=b"")
    assert r.exit_code == 1 and json.loads(r.stdout)[0]["error"] == "empty input (0 bytes)"
    r = run(model, "-", "--json", input=b"not audio at all")
    assert r.exit_code == 1 and "not a readable audio file" in json.loads(r.stdout)[0]["error"]
    assert_one_line_error(run(model, "-", "-", input=data), "once")


def test_a_pipe_is_read_once_as_stdin_is(model, tmp_path):
    # `esc predict <(ffmpeg -i film.mp4 -f wav -)`: a pipe has no size, and audio_info then the stream would read it
    # twice; it used to be refused as an "empty file (0 bytes)"
    import os
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    data = wav_bytes(sound(A, 2.0, 44100), 44100)
    writer = threading.Thread(target=fifo.write_bytes, args=(data,), daemon=True)  # never joined if not read
    writer.start()
    try:
        r = run(model, str(fifo), "--json")
    finally:
        writer.join(timeout=10)
    assert r.exit_code == 0, r.output
    [rec] = json.loads(r.stdout)
    assert rec["file"] == str(fifo) and rec["sample_rate"] == 44100 and rec["top"][0]["class"] == A


def test_folders_and_glob(model, tmp_path):
    root = tmp_path / "recordings"
    (root / "day1" / "am").mkdir(parents=True)
    write(root / "top.wav", sound(A, 1.0), SR)
    write(root / "day1" / "b.flac", sound(B, 1.0), SR)
    write(root / "day1" / "am" / "c.ogg", sound(A, 1.0), SR, "VORBIS")
    (root / "day1" / "readme.txt").write_text("not audio")
    r = run(model, root, "--json")
    assert r.exit_code == 0, r.output
    got = {Path(f).relative_to(root).as_posix(): rec["top"][0]["class"] for f, rec in records(r).items()}
    assert got == {"top.wav": A, "day1/b.flac": B, "day1/am/c.ogg": A}
    r = run(model, root, "--glob", "*.{flac,ogg}", "--json")
    assert sorted(Path(f).name for f in records(r)) == ["b.flac", "c.ogg"]
    r = run(model, root, "--glob", "*.mp3", "--json")
    assert r.exit_code == 1 and "no files matching *.mp3" in json.loads(r.stdout)[0]["error"]


# --- output schemas ---------------------------------------------------------------------------------------------

def test_json_schema(model, tmp_path):
    good = write(tmp_path / "good.wav", sound(A, 2.0), SR)
    r = run(model, good, tmp_path / "missing.wav", "--json", "--top-k", "4")
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    ok, bad = json.loads(r.stdout)
    assert set(ok) == set(bad) == JSON_KEYS  # no "windows" without --windows
    assert ok["file"] == str(good) and ok["error"] is None and ok["note"] is None and ok["duration"] == pytest.approx(2.0)
    assert len(ok["top"]) == 4 and set(ok["top"][0]) == {"class", "category", "probability"}
    assert ok["top"][0] == {"class": A, "category": "interior/domestic", "probability": ok["top"][0]["probability"]}
    probs = [g["probability"] for g in ok["top"]]
    assert probs == sorted(probs, reverse=True) and 0.5 < probs[0] <= 1.0
    assert bad["error"] == "no such file" and bad["top"] == [] and bad["duration"] is None

    r = run(model, good, "--format", "json", "--windows", "--min-confidence", "0.2")
    [rec] = json.loads(r.stdout)
    assert set(rec) == JSON_KEYS | {"windows"}
    assert all(g["probability"] >= 0.2 for g in rec["top"]) and len(rec["top"]) >= 1
    w = rec["windows"][0]
    assert set(w) == {"start", "end", "class", "category", "probability", "top", "silent"}
    assert (w["start"], w["end"], w["class"]) == (0.0, 1.0, A)
    assert all(g["probability"] >= 0.2 for g in w["top"])
    assert_one_line_error(run(model, good, "--json", "--format", "csv"), "--json")


def test_csv_schema(model, tmp_path):
    good = write(tmp_path / "good.wav", sound(B, 1.5), SR)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    r = run(model, good, empty, "--format", "csv", "--top-k", "2")
    assert r.exit_code == 1
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["file", "rank", "class", "category", "probability", "error"]
    assert rows[1][:3] == [str(good), "1", B] and rows[2][:2] == [str(good), "2"]
    assert float(rows[1][4]) >= float(rows[2][4]) and rows[1][5] == ""
    assert rows[3] == [str(empty), "", "", "", "", "empty file (0 bytes)"]
    assert len(rows) == 4

    r = run(model, good, "--format", "csv", "--top-k", "2", "--windows")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert list(rows[0]) == ["file", "start", "end", "rank", "class", "category", "probability", "error"]
    summary = [row for row in rows if row["start"] == ""]
    per_window = [row for row in rows if row["start"] != ""]
    assert len(summary) == 2 and len(per_window) == 2 * 2  # windows 0-1 and 0.5-1.5, two ranks each
    assert [(w["start"], w["end"], w["rank"]) for w in per_window][::2] == [("0.000", "1.000", "1"),
                                                                          ("0.500", "1.500", "1")]

    # a silent window is one row that says so, not a row of empty ranks
    late = write(tmp_path / "late.wav", np.concatenate([np.zeros(SR, np.float32), sound(B, 0.5)]), SR)
    rows = list(csv.DictReader(io.StringIO(run(model, late, "--format", "csv", "--windows").stdout)))
    per_window = [(row["start"], row["class"], row["error"]) for row in rows if row["start"] != ""]
    assert per_window[0] == ("0.000", "", "silent") and per_window[1][1:] == (B, "")


def test_quiet_hiss_dither_and_a_dc_offset_are_silence_a_quiet_sound_is_not(model, tmp_path):
    rng = np.random.default_rng(0)
    n = 2 * SR
    dither = (rng.integers(-1, 2, n) + rng.integers(-1, 2, n)) / 32768  # 16-bit TPDF dither: 2 LSB at most
    files = {
        "dither.wav": (dither, "PCM_16"),
        "hiss.wav": (rng.standard_normal(n) * 10 ** (-90 / 20), "FLOAT"),  # -90 dBFS RMS
        "dc.wav": (np.full(n, 0.25) + dither, "PCM_16"),
        "short-dc.wav": (np.full(SR // 2, 0.25) + dither[: SR // 2], "PCM_16"),  # shorter than a window: padded
        # 5 dB quieter than the quietest ESC-50 clip (peaks at -40 dBFS): still a sound
        "quiet.wav": (sound(B, 2.0) / np.max(np.abs(sound(B, 2.0))) * 10 ** (-45 / 20), "FLOAT"),
    }
    paths = [write(tmp_path / name, x.astype(np.float32), SR, subtype) for name, (x, subtype) in files.items()]
    for rate in (8000, 44100):  # resampled: the resampler rings where the offset starts and ends
        paths.append(write(tmp_path / f"dc-{rate}.wav", np.full(3 * rate, 0.25, np.float32), rate, "PCM_16"))
    recs = records(run(model, *paths, "--json"))
    for name in ("dither.wav", "hiss.wav", "dc.wav", "short-dc.wav", "dc-8000.wav", "dc-44100.wav"):
        assert recs[str(tmp_path / name)]["error"].startswith("silent") and recs[str(tmp_path / name)]["silent"], name
    quiet = recs[str(tmp_path / "quiet.wav")]
    assert quiet["error"] is None and not quiet["silent"] and quiet["top"][0]["class"] == B
    click = np.zeros(SR, np.float32)
    click[100:100 + SR // 100] = 1e-3  # 10 ms above -70 dBFS: a sound; 1 sample less: silence
    shorter = click.copy()
    shorter[100] = 0.0
    assert not core.is_silent(click, SR) and core.is_silent(shorter, SR)
    assert core.is_silent(np.zeros(0, np.float32), SR) and core.is_silent(np.full(SR, 0.5), SR)
    pop = np.zeros(SR, np.float32)
    pop[500:551] = 0.5  # a one-sided pop of 51 samples: it must not move the offset, or all the rest stands out
    assert core.is_silent(pop, SR)
    brief = np.sin(np.arange(SR // 100 - 16) / 3.0).astype(np.float32)  # 9 ms, loud: all of a brief recording
    assert not core.is_silent(brief, SR) and core.is_silent(np.array([0.5], np.float32), SR)


# --- bad input ----------------------------------------------------------------------------------------------------

@pytest.fixture
def bad_files(tmp_path) -> dict:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "zero.wav").write_bytes(b"")
    (d / "text.wav").write_text("this is not audio\n" * 20)
    header = wav_bytes(sound(A, 1.0), SR)
    (d / "header.wav").write_bytes(header[:30])  # cut inside the 44-byte header
    write(d / "no-samples.wav", np.zeros(0, np.float32), SR)
    write(d / "silent.wav", np.zeros(2 * SR, np.float32), SR)
    nan = sound(A, 1.0)
    nan[100] = np.nan
    write(d / "nan.wav", nan, SR, "FLOAT")
    (d / "folder").mkdir()
    return {
        "missing.wav": "no such file",
        "zero.wav": "empty file (0 bytes)",
        "text.wav": "not a readable audio file",
        "header.wav": "not a readable audio file",
        "no-samples.wav": "no samples",
        "silent.wav": "silent (nothing louder than -70 dBFS for 10 ms or more): nothing to classify; amplify it if it holds a sound",
        "nan.wav": "NaN",
        "folder": "no files matching",
    }


def test_bad_files_are_reported_and_the_good_still_classified(model, tmp_path, bad_files):
    d = tmp_path / "bad"
    first = write(tmp_path / "first.wav", sound(A, 1.0), SR)
    last = write(tmp_path / "last.wav", sound(B, 3.0), SR)
    args = [first, *[d / n for n in bad_files], last]

    r = run(model, *args, "--json")
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    recs = records(r)
    assert recs[str(first)]["top"][0]["class"] == A and recs[str(last)]["top"][0]["class"] == B
    for name, words in bad_files.items():
        rec = recs[str(d / name)]
        assert words in rec["error"], (name, rec["error"])
        assert rec["top"] == []

    r = run(model, *args)  # the table: good files on stdout, one red line per bad file on stderr
    assert r.exit_code == 1
    assert "first.wav" in r.stdout and "last.wav" in r.stdout and A in r.stdout and B in r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == len(bad_files), r.stderr
    for line, (name, words) in zip(lines, bad_files.items()):
        assert name in line and words in line, line
    assert "Traceback" not in r.output


def test_all_good_exits_0(model, tmp_path):
    r = run(model, write(tmp_path / "x.wav", sound(A, 1.0), SR))
    assert r.exit_code == 0 and r.stderr == ""
    assert A in r.stdout and ": timeline" not in r.stdout  # one window: no timeline


def test_a_recording_shorter_than_any_esc50_sound_is_classified_with_a_note(model, tmp_path):
    blip = write(tmp_path / "blip.wav", sound(A, 0.2), SR)  # under SHORT_SECONDS (0.25 s)
    one = write(tmp_path / "one.wav", sound(A, 0.02), SR)  # 20 ms: still a sound (see SILENCE_SECONDS)
    long_enough = write(tmp_path / "ok.wav", sound(A, 0.3), SR)
    r = run(model, blip, one, long_enough, "--json")
    assert r.exit_code == 0, r.output
    recs = records(r)
    assert recs[str(blip)]["note"].startswith("only 0.200 s long: shorter than any sound in ESC-50")
    assert recs[str(one)]["note"].startswith("only 0.020 s long")
    assert recs[str(long_enough)]["note"] is None
    assert all(rec["top"] and rec["error"] is None for rec in recs.values())  # classified all the same
    notes = [line for line in r.stderr.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {blip}: {recs[str(blip)]['note']}", f"note: {one}: {recs[str(one)]['note']}"]
    r = run(model, blip)  # and beside the table
    assert r.exit_code == 0 and A in r.stdout and f"note: {blip}: only 0.200 s long" in r.stderr


# --- which model -----------------------------------------------------------------------------------------------

def test_bad_model_path(tmp_path):
    clip = write(tmp_path / "x.wav", sound(A, 1.0), SR)
    assert_one_line_error(run(tmp_path / "nope" / "model.pt", clip), "no model file at")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a model")
    assert_one_line_error(run(junk, clip), "junk.pt", "not a model file")
    assert_one_line_error(run("no-such-name", clip), "no model named")


def test_no_model_anywhere(tmp_path, monkeypatch):
    from esccli import store

    monkeypatch.setattr(store, "BUILTIN_PATH", tmp_path / "none.pt")
    clip = write(tmp_path / "x.wav", sound(A, 1.0), SR)
    r = runner.invoke(app, ["predict", str(clip)])
    assert_one_line_error(r, "no trained model", "esc train")


def test_builtin_model_says_so(model, tmp_path, monkeypatch):
    from esccli import store

    builtin = tmp_path / "esc-default.pt"
    shutil.copy(model, builtin)
    monkeypatch.setattr(store, "BUILTIN_PATH", builtin)
    clip = write(tmp_path / "x.wav", sound(A, 1.0), SR)
    r = runner.invoke(app, ["predict", str(clip), "--json"])
    assert r.exit_code == 0, r.output
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "using the built-in model" in r.stderr
    assert json.loads(r.stdout)[0]["top"][0]["class"] == A


def test_the_builtin_model_can_be_named_and_made_the_default_again(model, tmp_path, monkeypatch, esc_home):
    from esccli import store
    from esccli.paths import layout

    builtin = tmp_path / "esc-default.pt"
    shutil.copy(model, builtin)
    monkeypatch.setattr(store, "BUILTIN_PATH", builtin)
    (esc_home / "models").mkdir(parents=True)
    shutil.copy(model, esc_home / "models" / "mine.pt")
    clip = write(tmp_path / "x.wav", sound(A, 1.0), SR)

    r = runner.invoke(app, ["predict", str(clip), "--json"])  # the newest trained model is the default
    assert r.exit_code == 0 and "using the default model" in r.stderr and "-m builtin" in r.stderr, r.output
    r = runner.invoke(app, ["predict", "-m", "builtin", str(clip), "--json"])
    assert r.exit_code == 0 and "using the built-in model" in r.stderr, r.output

    r = runner.invoke(app, ["models", "--default", "builtin"])
    assert r.exit_code == 0 and (esc_home / "models" / "DEFAULT").read_text().strip() == "builtin", r.output
    assert "predict and eval use the built-in model" in r.stderr
    assert store.resolve(layout(esc_home), None) == (builtin, True)
    r = runner.invoke(app, ["predict", str(clip), "--json"])
    assert r.exit_code == 0 and "using the built-in model" in r.stderr, r.output

    assert runner.invoke(app, ["models", "--default", "mine"]).exit_code == 0
    assert store.resolve(layout(esc_home), None) == (esc_home / "models" / "mine.pt", False)
    assert_one_line_error(runner.invoke(app, ["train", "--name", "builtin"]), "'builtin' is the name of the built-in model")
