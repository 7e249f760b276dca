"""The benchmark scripts that produce the README's figures run end to end (on the synthetic data, for a few
epochs: their figures here mean nothing, but what they print, store and reuse is checked)."""

import json
import os
import re
import subprocess
import sys
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
    assert re.search(r"^epoch: median [\d.]+ s, of which data", out, re.M), out
    stamp = model.stat().st_mtime_ns

    again = bench("crossval.py", "--preset", "fast", "--folds", "1", "--epochs", "1")
    assert f"fold 1: {score} (stored model bench-fast-e1-fold1)" in again
    assert "min wall" not in again
    assert model.stat().st_mtime_ns == stamp  # not trained again


def test_ablation_trains_one_fold_with_its_overrides_and_shift_eval_scores_the_model(bench, tmp_path,
                                                                                      synth_dataset):
    out = bench("ablation.py", "--preset", "fast", "--fold", "2", "--set", "epochs=12", "--name", "smoke")
    result = json.loads(out.strip().splitlines()[-1])
    model = bench.home / "ablation" / "smoke.pt"
    train = checkpoint.read_meta(model)["train"]
    assert result["name"] == "smoke" and result["fold"] == 2 and result["overrides"] == {"epochs": 12}
    assert result["val_acc"] == train["metrics"]["val_acc"] and train["fold"] == 2
    assert train["recipe"]["epochs"] == 12 and train["recipe"]["test_shifts"] == [-2, -1, 0, 1, 2]
    # the synthetic classes are easy (56 % here): far above chance (2 %), so that below, scores that agree are the
    # same predictions, not two guesses
    assert result["val_acc"] >= 0.3

    lines = dict(line.split(maxsplit=1) for line in bench("shift_eval.py", str(model), "--threads", "1").splitlines())
    assert set(lines) == {"none", "±1", "±2", "±3", "-2,"}
    accuracy = {name: [float(v) for v in re.findall(r"([\d.]+)%", line)] for name, line in lines.items()}
    assert all(len(v) == 2 for v in accuracy.values())  # one fold, and the mean
    # the fast preset predicts as the mean over shifts of -2..2: the benchmark's ±2 is the model's own score (to a
    # clip of the 50: the two sum in another order)
    assert abs(accuracy["±2"][0] - 100 * result["val_acc"]) <= 100 / 50 + 1e-6

    # pair_eval.py: a model averaged with itself is itself; the clips it misses, counted by class, are all its misses
    pair = bench("pair_eval.py", str(model), str(model), "--classes").splitlines()
    alone = float(re.search(r": ([\d.]+)%$", pair[0]).group(1))
    assert abs(alone - 100 * result["val_acc"]) <= 100 / 50 + 1e-6
    assert pair[2] == f"models 1 and 2: agree on 100.00% of the clips; averaged {alone:.2f}%"
    missed = re.search(r"^missed by every model: ([\d.]+)% of the clips; right by at least one: ([\d.]+)%$", pair[3])
    assert missed and float(missed.group(1)) == pytest.approx(100 - alone) and float(missed.group(2)) == alone
    line_re = r"^  (\w+): (\d+) of (\d+) missed by every model; most often taken for (\w+) \((\d+) of (\d+) answers\)$"
    by_class = [re.match(line_re, line) for line in pair[4:]]
    assert by_class and all(by_class), pair[4:]
    assert sum(int(m.group(2)) for m in by_class) == round(float(missed.group(1)) / 100 * 50)
    # a miss is taken for another class; both models (the same one) give the same answer for each clip
    assert all(m.group(1) != m.group(4) and int(m.group(6)) == 2 * int(m.group(2)) for m in by_class)

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
