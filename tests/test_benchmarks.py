"""The benchmark scripts that produce the README's figures run end to end (on the synthetic data, for a few
epochs: their figures here mean nothing, but what they print, store and reuse is checked)."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from esccli import checkpoint

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(tmp_path, synth_dataset):
    """Runs a benchmark script on the synthetic dataset (or `data`), in a bench home of its own; returns its
    stdout, or with `fails` its result, which must be a failure."""
    home = tmp_path / "bench-home"

    def run(script: str, *args: str, data: Path = synth_dataset, fails: bool = False):
        env = {**os.environ, "ESC_BENCH_HOME": str(home), "ESC_BENCH_DATA": str(data)}
        r = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], env=env, capture_output=True,
                           text=True, timeout=600)
        assert (r.returncode != 0) == fails, r.stderr[-3000:]
        return r if fails else r.stdout

    run.home = home
    return run


def test_crossval_trains_a_fold_prints_its_score_and_reuses_it_on_a_second_run(bench):
    out = bench("crossval.py", "--preset", "fast", "--folds", "1", "--epochs", "1")
    model = bench.home / "models" / "bench-fast-e1-fold1.pt"
    train = checkpoint.read_meta(model)["train"]
    assert train["fold"] == 1 and train["recipe"]["epochs"] == 1
    score = f"{train['metrics']['val_acc']:.2%}"
    assert re.search(rf"^fold 1: {re.escape(score)} in [\d.]+ min wall", out, re.M), out
    assert f"bench-fast-e1: folds [1]: mean {score} ± " in out
    # the fast preset's two networks: one line per architecture
    assert re.search(r"^escnet epoch: median [\d.]+ s, of which data", out, re.M), out
    assert re.search(r"^texture epoch: median [\d.]+ s, of which data", out, re.M), out
    stamp = model.stat().st_mtime_ns

    again = bench("crossval.py", "--preset", "fast", "--folds", "1", "--epochs", "1")
    assert f"fold 1: {score} (stored model bench-fast-e1-fold1)" in again
    assert "min wall" not in again
    assert model.stat().st_mtime_ns == stamp  # not trained again


def test_ablation_trains_one_fold_with_its_overrides_and_shift_eval_scores_the_model(bench, tmp_path,
                                                                                      synth_dataset):
    # the fast preset's network alone, predicting as the mean over its input moved by -2..2 mel bins (as the
    # fast preset did until round 19)
    out = bench("ablation.py", "--preset", "fast", "--fold", "2", "--set", "epochs=12", "--set", "members=1",
                "--set", "test_shifts=[-2, -1, 0, 1, 2]", "--name", "smoke")
    result = json.loads(out.strip().splitlines()[-1])
    model = bench.home / "ablation" / "smoke.pt"
    train = checkpoint.read_meta(model)["train"]
    assert result["name"] == "smoke" and result["fold"] == 2
    assert result["overrides"] == {"epochs": 12, "members": 1, "test_shifts": [-2, -1, 0, 1, 2]}
    assert result["val_acc"] == train["metrics"]["val_acc"] and train["fold"] == 2
    assert train["recipe"]["epochs"] == 12 and train["recipe"]["test_shifts"] == [-2, -1, 0, 1, 2]
    # the synthetic classes are easy (56 % here): far above chance (2 %), so that below, scores that agree are the
    # same predictions, not two guesses
    assert result["val_acc"] >= 0.3

    lines = dict(line.split(maxsplit=1) for line in bench("shift_eval.py", str(model), "--threads", "1").splitlines())
    assert set(lines) == {"none", "±1", "±2", "±3", "-2,"}
    accuracy = {name: [float(v) for v in re.findall(r"([\d.]+)%", line)] for name, line in lines.items()}
    assert all(len(v) == 2 for v in accuracy.values())  # one fold, and the mean
    # the model predicts as the mean over shifts of -2..2: the benchmark's ±2 is the model's own score (to a
    # clip of the 50: the two sum in another order)
    assert abs(accuracy["±2"][0] - 100 * result["val_acc"]) <= 100 / 50 + 1e-6

    # pair_eval.py: a model averaged with itself is itself; the clips it misses, counted by class, are all its misses
    pair = bench("pair_eval.py", str(model), str(model), "--classes").splitlines()
    alone = float(re.search(r": ([\d.]+)%$", pair[0]).group(1))
    assert abs(alone - 100 * result["val_acc"]) <= 100 / 50 + 1e-6
    assert pair[2] == f"models 1 and 2: agree on 100.00% of the clips; averaged {alone:.2f}%"
    missed = re.search(r"^missed by every model: ([\d.]+)% of the clips; right by at least one: ([\d.]+)%$", pair[3])
    assert missed and float(missed.group(1)) == pytest.approx(100 - alone) and float(missed.group(2)) == alone
    assert 0 < alone < 100  # some clips missed, some not: the lines below have something to count
    line_re = r"^  (\w+): (\d+) of (\d+) missed by every model; answered (\w+) (\d+) \(of (\d+) answers\)$"
    by_class = [re.match(line_re, line) for line in pair[4:]]
    assert all(by_class), pair[4:]
    assert sum(int(m.group(2)) for m in by_class) == round(float(missed.group(1)) / 100 * 50)
    # one clip per class and fold here: each line is one clip, answered by both models (the same one) alike, wrongly
    assert all((m.group(2), m.group(3), m.group(5), m.group(6)) == ("1", "1", "2", "2") and m.group(1) != m.group(4)
               for m in by_class)

    # summary.py reads the same figures back from the model's metadata
    summary = bench("summary.py", str(model))
    assert f"{model}: fold 2: {result['val_acc']:.2%}" in summary
    assert f"1 models: mean {result['val_acc']:.2%} ± 0.00%" in summary
    assert re.search(r"^epoch: median [\d.]+ s, of which data", summary, re.M), summary

    # a bench home that holds another copy of the data is refused, not mixed with it
    other = tmp_path / "another-copy"
    other.mkdir()
    r = bench("shift_eval.py", str(model), data=other, fails=True)
    assert f"installed from {synth_dataset}, not from {other}" in r.stderr and "ESC_BENCH_HOME" in r.stderr
    assert "Traceback" not in r.stderr


def test_pair_eval_counts_the_clips_every_model_misses_by_class_with_their_answers(capsys):
    import torch

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from pair_eval import print_missed_by_class
    finally:
        sys.path.remove(str(BENCHMARKS))
    from esccli.classes import CLASS_NAMES as C

    # clips of classes 0, 0, 0, 1, 2, 2; three models; clips 2 and 4 are missed by none of them (one model is right)
    targets = torch.tensor([0, 0, 0, 1, 2, 2])
    answers = torch.tensor([[5, 6, 0, 7, 2, 9],
                            [5, 5, 9, 7, 1, 8],
                            [6, 7, 9, 7, 1, 3]])
    missed = torch.stack([a != targets for a in answers]).all(0)
    print_missed_by_class(targets, answers, missed, top=2)
    assert capsys.readouterr().out.splitlines() == [
        # class 0: 2 of its 3 clips; answers 5, 5, 6 and 6, 5, 7: 5 three times, 6 twice, 7 once (cut at two)
        f"  {C[0]}: 2 of 3 missed by every model; answered {C[5]} 3, {C[6]} 2, … (of 6 answers)",
        # classes 1 and 2 tie at one missed clip each: in class order; so do class 2's answers 9, 8 and 3
        f"  {C[1]}: 1 of 1 missed by every model; answered {C[7]} 3 (of 3 answers)",
        f"  {C[2]}: 1 of 2 missed by every model; answered {C[3]} 1, {C[8]} 1, … (of 3 answers)",
    ]


def test_epoch_lines_keep_the_epochs_of_each_architecture_apart():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from common import epoch_lines, epochs_by_arch
    finally:
        sys.path.remove(str(BENCHMARKS))

    def epoch(member, seconds):
        return {"member": member, "seconds": seconds, "data_seconds": seconds / 10, "val_acc": None}

    mixed = {"model": {"arch": "ensemble", "args": {"member": "escnet+escnet+texture", "members": 3, "member_list": [
        {"arch": "escnet", "args": {}}, {"arch": "escnet", "args": {}}, {"arch": "texture", "args": {}}]}},
        "train": {"history": [epoch(1, 6.0), epoch(2, 7.0), epoch(3, 1.0), epoch(3, 1.0), epoch(3, 1.0)]}}
    assert {a: [e["seconds"] for e in es] for a, es in epochs_by_arch(mixed).items()} == {
        "escnet": [6.0, 7.0], "texture": [1.0, 1.0, 1.0]}
    assert epoch_lines([mixed]) == ["escnet epoch: median 6.50 s, of which data 0.65 s (10.0%)",
                                    "texture epoch: median 1.00 s, of which data 0.10 s (10.0%)"]
    pair = {"model": {"arch": "ensemble", "args": {"member": "escnet", "members": 2, "member_args": {}}},
            "train": {"history": [epoch(1, 6.0), epoch(2, 8.0)]}}
    single = {"model": {"arch": "escnet", "args": {}}, "train": {"history": [epoch(None, 4.0)]}}
    assert epoch_lines([pair, single]) == ["epoch: median 6.00 s, of which data 0.60 s (10.0%)"]


def test_member_eval_scores_members_alone_some_averaged_and_all():
    import torch
    from torch import nn

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from member_eval import member_accuracies
    finally:
        sys.path.remove(str(BENCHMARKS))

    class Fixed(nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = torch.tensor(logits)

        def forward(self, x):
            return self.logits

    # three clips of classes 0, 1, 1; member 1 is right on clip 0 only, member 2 on clips 1 and 2 (unsure of clip
    # 2), member 3 sure and right on all three
    ens = nn.Module()
    ens.members = nn.ModuleList([Fixed([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0]]),
                                 Fixed([[0.0, 1.0], [0.0, 3.0], [0.0, 0.5]]),
                                 Fixed([[3.0, 0.0], [0.0, 3.0], [0.0, 4.0]])])
    alone, some, whole = member_accuracies(ens, None, torch.tensor([0, 1, 1]), [1, 2])
    assert alone == pytest.approx([1 / 3, 2 / 3, 1.0])
    # members 1 and 2 as mean probabilities: clip 0 (0.88 + 0.27) / 2 for class 0, right; clip 1 (0.12 + 0.95) / 2
    # for class 1, right; clip 2 (0.12 + 0.62) / 2 for class 1, wrong. With member 3, all right.
    assert some == pytest.approx(2 / 3)
    assert whole == pytest.approx(1.0)
    # one clip of class 1 that member 1 finds likely of class 0 and member 2 of class 2, each ruling out the
    # other's: their mean probability picks class 0 (0.45), their geometric mean class 1
    from esccli.models import log_geometric_mean_probability

    torn = nn.Module()
    torn.members = nn.ModuleList([Fixed([[0.9, 0.1, 1e-4]]),
                                  Fixed([[1e-4, 0.4, 0.6]])])
    for m in torn.members:
        m.logits = m.logits.log()
    y = torch.tensor([1])
    assert member_accuracies(torn, None, y, [1, 2])[1:] == (0.0, 0.0)
    assert member_accuracies(torn, None, y, [1, 2], log_geometric_mean_probability)[1:] == (1.0, 1.0)


def test_member_eval_scores_each_member_over_the_test_shifts():
    import torch
    from torch import nn

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from member_eval import member_accuracies
    finally:
        sys.path.remove(str(BENCHMARKS))

    class Bins(nn.Module):  # class 0 for energy in mel bin 0, class 1 for energy in bin 1; blind to the others
        def forward(self, x):
            return x[:, 0, :2, :].mean(-1) * 10

    # one clip of class 1 whose energy is in bin 2: as is, the member sees nothing (a tie, class 0, wrong); moved
    # down by one bin, it lands in bin 1, so the mean over the copies moved by -1, 0 and 1 picks class 1
    x = torch.zeros(1, 1, 4, 3)
    x[0, 0, 2] = 1.0
    ens = nn.Module()
    ens.members = nn.ModuleList([Bins()])
    y = torch.tensor([1])
    assert member_accuracies(ens, x, y, [1])[0] == [0.0]
    assert member_accuracies(ens, x, y, [1], shifts=[-1, 0, 1])[0] == [1.0]


def _common():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import common
    finally:
        sys.path.remove(str(BENCHMARKS))
    return common


SLEEPER = """import pathlib, sys, time
pathlib.Path(sys.argv[1]).touch()
try:
    time.sleep(60)
    pathlib.Path(sys.argv[2] + "-ran-to-the-end").touch()
except KeyboardInterrupt:
    pathlib.Path(sys.argv[2]).touch()
"""


def test_run_each_starts_nothing_after_a_failure_and_raises_it(tmp_path):
    common = _common()

    def fold(i):
        if i == 0:
            raise subprocess.CalledProcessError(3, ["esc", "train"])
        (tmp_path / str(i)).touch()

    with pytest.raises(subprocess.CalledProcessError):
        common.run_each(fold, [(i,) for i in range(4)], jobs=1)
    assert not any(tmp_path.iterdir())  # folds 1-3 never started


def _wait_for(path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def _interrupt_me_once(running: Path) -> None:
    """`kill -INT` of this process alone (not its process group, as Ctrl-C is), 0.2 s after `running` exists."""
    def go():
        _wait_for(running)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=go, daemon=True).start()


def _sleeper(common, folder: Path) -> None:
    """Runs SLEEPER through run_command: it makes folder/running, then folder/stopped if interrupted (or
    folder/stopped-ran-to-the-end after a minute)."""
    common.run_command([sys.executable, "-c", SLEEPER, str(folder / "running"), str(folder / "stopped")], check=False)


def test_run_each_on_an_interrupt_interrupts_the_running_commands_and_starts_no_more(tmp_path):
    """What `kill -INT` of crossval.py alone does: fold 0's command is interrupted rather than run to its end (the
    signal reaches this process only); fold 1, queued, never starts, and no command starts after it."""
    common = _common()

    def fold(i):
        if i == 0:
            _sleeper(common, tmp_path)
        else:
            (tmp_path / "1-started").touch()

    t = time.monotonic()
    _interrupt_me_once(tmp_path / "running")
    with pytest.raises(KeyboardInterrupt):
        common.run_each(fold, [(0,), (1,)], jobs=1)
    assert (tmp_path / "stopped").exists() and not (tmp_path / "stopped-ran-to-the-end").exists()
    assert not (tmp_path / "1-started").exists()
    with pytest.raises(KeyboardInterrupt):  # what a thread still running an item would try next
        common.run_command([sys.executable, "-c", "pass"])
    assert time.monotonic() - t < 50


def test_run_each_interrupted_while_it_waits_after_a_failure_interrupts_and_raises_the_failure(tmp_path):
    common = _common()

    def fold(i):
        if i == 0:
            _sleeper(common, tmp_path)
        else:
            _wait_for(tmp_path / "running")
            _interrupt_me_once(tmp_path / "running")  # comes 0.2 s later, while run_each waits for fold 0
            raise subprocess.CalledProcessError(3, ["esc", "train"])

    t = time.monotonic()
    with pytest.raises(subprocess.CalledProcessError):
        common.run_each(fold, [(0,), (1,)], jobs=2)
    assert (tmp_path / "stopped").exists() and not (tmp_path / "stopped-ran-to-the-end").exists()
    assert time.monotonic() - t < 50
