"""Shared set-up for the benchmark scripts: a data dir holding the shared 16 kHz ESC-50 copy.

The benchmarks read ../shared/data/esc50-16k (the whole ESC-50 at 16 kHz). They install it once with
`esc fetch --from` into BENCH_HOME (default /tmp/esc-bench, override with ESC_BENCH_HOME) and never touch the
user's own data dir. ESC_BENCH_DATA names another ESC-50-shaped folder to install instead, a smaller balanced one
allowed (tests/test_benchmarks.py runs the scripts on a synthetic one): figures from it are not ESC-50's.
"""

import functools
import json
import os
import resource
import signal
import subprocess
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ESC_BENCH_DATA") or REPO.parent / "shared" / "data" / "esc50-16k")
BENCH_HOME = Path(os.environ.get("ESC_BENCH_HOME", "/tmp/esc-bench"))


_running: set[subprocess.Popen] = set()  # the commands run_command started that have not ended
_stopping = threading.Event()  # set by run_each when interrupted: run_command starts nothing more
_lock = threading.Lock()


def run_command(cmd: list[str], env: dict | None = None, check: bool = True,
                capture: bool = False) -> subprocess.CompletedProcess:
    """Run `cmd` and wait for it, as subprocess.run does, keeping it in `_running` meanwhile (run_each interrupts
    the commands there). Interrupted here, it interrupts the command and waits for it to stop; on any other
    exception, it kills it."""
    pipe = subprocess.PIPE if capture else None
    with _lock:
        if _stopping.is_set():
            raise KeyboardInterrupt
        p = subprocess.Popen(cmd, env=env, text=True, stdout=pipe, stderr=pipe)
        _running.add(p)
    try:
        out, err = p.communicate()
    except KeyboardInterrupt:
        p.send_signal(signal.SIGINT)
        p.communicate()
        raise
    except BaseException:
        p.kill()
        p.communicate()
        raise
    finally:
        with _lock:
            _running.discard(p)
    if check and p.returncode:
        raise subprocess.CalledProcessError(p.returncode, p.args, out, err)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def esc(*args: str, home: Path = BENCH_HOME, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    """Run `esc ARGS` with `home` as its data dir; with `capture`, its stdout and stderr are returned."""
    return run_command([sys.executable, "-m", "esccli", *args], env={**os.environ, "ESC_HOME": str(home)},
                       check=check, capture=capture)


def run_each(fn: Callable, items: list[tuple], jobs: int = 1) -> None:
    """`fn(*item)` for every item, `jobs` at a time (in threads, each running its commands with run_command).
    After a failure or an interrupt nothing new starts. On an interrupt (Ctrl-C, or `kill -INT` of this process
    alone), now or while the running items finish after a failure, the running commands are interrupted too (an
    esc train stops, keeping its last finished epoch) and no command starts any more. The running items are waited
    for, then the first failure (else the interrupt) is raised."""
    _stopping.clear()
    waiting, running = list(reversed(items)), set()  # popped from the end: in order
    pool = ThreadPoolExecutor(max_workers=jobs)  # no more items handed to it than can run at once
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                running.add(pool.submit(fn, *waiting.pop()))
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                f.result()  # a failure: nothing new starts
    except KeyboardInterrupt:
        _interrupt_commands()
        raise
    finally:
        while running:  # wait for the running items (on their futures: an interrupted Thread.join may not resume)
            try:
                wait(running)
                break
            except KeyboardInterrupt:  # meanwhile: their commands are interrupted, and the wait goes on
                _interrupt_commands()
        pool.shutdown(wait=True)


def _interrupt_commands() -> None:
    """Interrupt the running commands, and have run_command start no more."""
    with _lock:
        _stopping.set()
        for p in _running:
            p.send_signal(signal.SIGINT)


def prepare(home: Path = BENCH_HOME) -> Path:
    """Install the shared ESC-50 copy into `home` (once) and return `home`."""
    from esccli.fetch import read_marker

    if not SHARED.is_dir():
        sys.exit(f"benchmarks need the shared dataset at {SHARED}")
    if not (home / "ESC-50" / "meta" / "esc50.csv").is_file():
        # another copy than the shared one may be a balanced subset of ESC-50 (esc fetch checks that it is)
        subset = ["--allow-subset"] if os.environ.get("ESC_BENCH_DATA") else []
        esc("fetch", "--from", str(SHARED), *subset, home=home)
    source = (read_marker(home / "ESC-50") or {}).get("source")
    if source is None or Path(source).resolve() != SHARED.resolve():  # figures of one copy never from another's
        sys.exit(f"{home} holds ESC-50 installed from {source or 'an unknown source'}, not from {SHARED}: "
                 "give these benchmarks a home of their own with ESC_BENCH_HOME")
    return home


def resumable(name: str, home: Path = BENCH_HOME) -> bool:
    """Whether an `esc train --name NAME` in `home` left work to resume (a resume file, or ensemble members)."""
    from esccli.ensemble import saved_progress

    return saved_progress(home / "models" / f"{name}.pt")


def peak_rss_gb(children: bool = False) -> float:
    """Peak resident memory of this process, or of the largest of its finished child processes (as far down as
    each waited for its own: an esc train and its ensemble members), in GB. Linux reports ru_maxrss in KiB."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_maxrss * 1024 / 1e9


def parse_set(item: str) -> tuple[str, object]:
    """FIELD=VALUE -> (field, value), the value read as JSON when it parses, else as a string."""
    key, _, value = item.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def epochs_by_arch(meta: dict) -> dict[str, list[dict]]:
    """A model's training epochs (its metadata's history) by the architecture that ran them: an ensemble of members
    of different architectures (a `member_list`) has epochs of very different costs, which one median would mix."""
    model, history = meta["model"], meta["train"]["history"]
    listed = model["args"].get("member_list") if model["arch"] == "ensemble" else None
    if not listed:
        return {model["args"]["member"] if model["arch"] == "ensemble" else model["arch"]: history}
    out: dict[str, list[dict]] = {}
    for e in history:
        out.setdefault(listed[e["member"] - 1]["arch"], []).append(e)
    return out


def epoch_lines(metas: list[dict]) -> list[str]:
    """epoch_line over the epochs of these models' histories, one line per architecture when they have several."""
    by_arch: dict[str, list[dict]] = {}
    for meta in metas:
        for arch, epochs in epochs_by_arch(meta).items():
            by_arch.setdefault(arch, []).extend(epochs)
    if len(by_arch) == 1:
        return [epoch_line(next(iter(by_arch.values())))]
    return [f"{arch} {epoch_line(epochs)}" for arch, epochs in by_arch.items()]


def epoch_line(epochs: list[dict]) -> str:
    """What the epochs of trained models' history cost: the median epoch, the data pipeline's share of it, and the
    median of the epochs that also scored the held-out fold."""
    scored = [e["seconds"] for e in epochs if e["val_acc"] is not None]
    return (f"epoch: median {median([e['seconds'] for e in epochs]):.2f} s, of which data "
            f"{median([e['data_seconds'] for e in epochs]):.2f} s "
            f"({median([e['data_seconds'] / e['seconds'] for e in epochs]):.1%})"
            + (f"; the {len(scored)} that also scored the fold: {median(scored):.2f} s" if scored else ""))


def fold_model(path):
    """The stored model at `path` and the fold it held out (exits when it was trained on every fold)."""
    from esccli import checkpoint

    lm = checkpoint.load(path)
    fold = lm.meta["train"]["fold"]
    if fold is None:
        sys.exit(f"{path} was trained on every fold: there is nothing held out to score")
    return lm, fold


def feature_set(lm, home: Path = BENCH_HOME):
    """Every clip of the shared copy installed in `home` as a loaded model `lm` sees them (a FeatureSet built with
    the model's own parameters, cached on disk, and read once per process for each parameters: the scripts score
    several fold models, and ask for the features and the modulation statistics apart)."""
    return _feature_set(Path(home), lm.params)


@functools.lru_cache(maxsize=2)
def _feature_set(home: Path, params):
    from esccli.featurize import load_or_build
    from esccli.paths import layout

    return load_or_build(layout(prepare(home)), params)


def clips(lm, home: Path = BENCH_HOME):
    """Every clip of the shared copy installed in `home` as a loaded model `lm` sees them: (features
    [n, 1, n_mels, frames] float32, targets [n], folds [n]), built with the model's own parameters (cached)."""
    import numpy as np
    import torch

    fs = feature_set(lm, home)
    return (torch.from_numpy(fs.features.astype(np.float32)).unsqueeze(1), torch.from_numpy(fs.targets),
            torch.from_numpy(fs.folds))


def held_out(lm, fold: int, home: Path = BENCH_HOME):
    """The clips of `fold` as a loaded model `lm` sees them: (features [n, 1, n_mels, frames] float32, targets [n])."""
    x, y, folds = clips(lm, home)
    return x[folds == fold], y[folds == fold]


def held_out_modulation(lm, fold: int, home: Path = BENCH_HOME):
    """The modulation statistics [n, modulation.COUNT] of the clips of `fold` (in held_out's order) when `lm`, or
    one of its networks, hears them (models.needs_modulation), else None."""
    from esccli.models import needs_modulation

    if not needs_modulation(lm.model):
        return None
    fs = feature_set(lm, home)
    return fs.modulation_rows(fs.folds == fold)


def fold_model_options(ap, name: str = "bench-default") -> None:
    """The arguments of the scripts that score stored fold models: the files, or the NAME they were stored under."""
    ap.add_argument("models", nargs="*", help="fold model files [default: BENCH_HOME/models/NAME-fold1..5.pt]")
    ap.add_argument("--name", default=name)
    ap.add_argument("--threads", type=int, default=2)


def held_out_fold_models(args):
    """Each fold model fold_model_options' arguments name, as (loaded model, the fold it held out, that fold's
    features, their targets, their modulation statistics or None: held_out_modulation), to be scored on --threads
    threads."""
    import torch

    torch.set_num_threads(args.threads)
    for path in args.models or [BENCH_HOME / "models" / f"{args.name}-fold{k}.pt" for k in range(1, 6)]:
        lm, k = fold_model(path)
        yield (lm, k, *held_out(lm, k), held_out_modulation(lm, k))


def print_accuracies(accs: dict) -> None:
    """One line per set of copies: its accuracy on each fold model, and their mean."""
    import numpy as np

    width = max(len(name) for name in accs)
    for name, a in accs.items():
        print(f"{name:{width}s} " + "  ".join(f"{v:.2%}" for v in a) + f"   mean {np.mean(a):.2%}")


def memory_option(ap) -> None:
    """--give-back-memory: leave malloc as it is, rather than keep freed memory as `esc train` does."""
    ap.add_argument("--give-back-memory", action="store_true",
                    help="leave malloc as it is (freed blocks go back to the kernel) rather than as esc train sets it")


def set_memory(args) -> str:
    """Keep freed memory as `esc train` does (esccli/memory.py) unless --give-back-memory; says which it is."""
    from esccli.memory import keep_freed_memory

    kept = not args.give_back_memory and keep_freed_memory()
    return "malloc keeping freed memory (as esc train)" if kept else "malloc as it is"
