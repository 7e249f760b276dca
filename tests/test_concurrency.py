"""Several esc processes at once on one data directory: two `esc featurize`, a featurize killed half way, and
two writers of one model file with a reader watching. Whatever the interleaving, what is on disk afterwards
is whole, checked, and what a single process would have made.
"""

import fcntl
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from esccli import checkpoint
from esccli.features import PRESETS, FeatureParams
from esccli.featurize import cache_dir, load_or_build
from esccli.fsutil import sha256_file
from esccli.models import ModelConfig, build_model
from esccli.paths import layout
from synthetic import install, read_cache

ARGS = ["--n-mels", "32", "--jobs", "1"]  # a small feature set, one worker each: the two cores are shared
PARAMS = FeatureParams(**{**PRESETS["default"].to_dict(), "n_mels": 32})
CONFIG = ModelConfig("escnet", 50, 32, 51, {"stem": 8, "channels": [16, 32], "head": "flatten"})



def esc(home: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, ESC_HOME=str(home), COLUMNS="200")
    return subprocess.Popen([sys.executable, "-m", "esccli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, synth_dataset):
    """A single-process build of PARAMS, in a home of its own."""
    return load_or_build(layout(tmp_path_factory.mktemp("fresh-home")), PARAMS, dataset_root=synth_dataset, jobs=1)


def assert_whole_cache(folder: Path, fresh) -> None:
    cached = read_cache(folder, PARAMS)
    assert cached is not None, "the cache left on disk is not readable"
    assert np.array_equal(cached.features, fresh.features) and np.array_equal(cached.modulation, fresh.modulation)
    assert cached.filenames == fresh.filenames and np.array_equal(cached.targets, fresh.targets)
    assert sorted(p.name for p in folder.iterdir()) == ["features.npy", "index.json", "modulation.npy"]  # no temporaries


def test_two_featurize_processes_at_once(esc_home, synth_dataset, fresh):
    install(synth_dataset, esc_home)
    procs = [esc(esc_home, "featurize", *ARGS, "--json") for _ in range(2)]  # real `esc` processes
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    records = [json.loads(out) for out, _ in outs]
    assert sorted(r["built"] for r in records) == [False, True]  # one built it, the other waited and read it
    assert records[0]["cache"] == records[1]["cache"]
    assert all("Traceback" not in err for _, err in outs)
    folder = Path(records[0]["cache"])
    assert folder == cache_dir(layout(esc_home), PARAMS, sha256_file(synth_dataset / "meta" / "esc50.csv"))
    assert_whole_cache(folder, fresh)
    assert [p.name for p in (esc_home / "features").iterdir()] == [folder.name]


def lock_is_held(lock: Path) -> bool:
    if not lock.exists():
        return False
    with open(lock, "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return False


def _build(home: str, dataset: str) -> None:
    load_or_build(layout(Path(home)), PARAMS, dataset_root=Path(dataset), jobs=1)


def test_a_featurize_killed_half_way_leaves_nothing_used(esc_home, synth_dataset, fresh):
    """SIGKILL while it holds the cache lock (building, or writing): the kernel frees the lock, and the next run
    builds a whole cache, whatever the killed one left. (A forked process: no second torch import to wait for.)"""
    folder = cache_dir(layout(esc_home), PARAMS, sha256_file(synth_dataset / "meta" / "esc50.csv"))
    lock = layout(esc_home).locks / f"features-{folder.name}.lock"
    proc = multiprocessing.get_context("fork").Process(target=_build, args=(str(esc_home), str(synth_dataset)))
    proc.start()
    deadline = time.monotonic() + 60
    while not lock_is_held(lock) and proc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.is_alive(), "the build finished before it could be killed"
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    assert not lock_is_held(lock)
    left = read_cache(folder, PARAMS)  # nothing, or (killed after its last write) the whole thing
    assert left is None or np.array_equal(left.features, fresh.features)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".features.npy.killed.tmp").write_bytes(b"half")  # what a kill during write_cache leaves

    fs = load_or_build(layout(esc_home), PARAMS, dataset_root=synth_dataset, jobs=1)
    assert fs.built == (left is None)
    if fs.built:
        assert_whole_cache(folder, fresh)


def _write(path: str, writer: int, saves: int) -> None:
    """Save a small model `saves` times, each a little different, as training does after every epoch."""
    torch.manual_seed(writer)
    model = build_model(CONFIG)
    meta = {"name": f"writer{writer}", "model": CONFIG.to_dict(), "features": {"n_mels": 32, "clip_seconds": 1.0},
            "classes": [str(i) for i in range(50)], "train": {"fold": None, "writer": writer}}
    first = next(iter(model.state_dict().values()))
    for i in range(saves):
        with torch.no_grad():
            first.view(-1)[0] = float(i)
        meta["train"]["save"] = i
        checkpoint.save(Path(path), meta, model.state_dict())


def test_two_writers_of_one_model_file_and_a_reader(tmp_path):
    path = tmp_path / "models" / "m.pt"
    saves = 40
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write, args=(str(path), w, saves)) for w in (1, 2)]
    for p in procs:
        p.start()
    reads = 0
    while any(p.is_alive() for p in procs):  # read it as often as we can while they write
        if path.exists():
            blob = checkpoint.read(path)  # raises ModelError on a torn or half-written file
            assert blob["train"]["writer"] in (1, 2)
            reads += 1
        time.sleep(0.001)
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert reads > 0

    lm = checkpoint.load(path)  # whole, checksum right, and builds the model it describes
    writer = lm.meta["train"]["writer"]
    assert lm.meta["train"]["save"] == saves - 1 and lm.meta["name"] == f"writer{writer}"
    torch.manual_seed(writer)  # the weights are that writer's own, not a mix of both
    expected = build_model(CONFIG).state_dict()
    expected[next(iter(expected))].view(-1)[0] = float(saves - 1)
    got = lm.model.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temporaries left


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    import os

    from esccli.fsutil import atomic_write_bytes

    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "f").read_bytes() == b"x"
