"""Mistakes and refusals end in one line and an exit code, never a traceback."""

import io
import os
import subprocess
import sys
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from esccli.cli import app, common
from synthetic import assert_one_line_error

runner = CliRunner()


@pytest.mark.parametrize("error, says", [
    (OSError(28, "No space left on device", "/data/models/x.pt"), "No space left on device: /data/models/x.pt"),
    (PermissionError(13, "Permission denied", "/data/models"), "Permission denied: /data/models"),
    (MemoryError(), "not enough memory"),
    (BrokenProcessPool("A process in the process pool was terminated abruptly"), "a worker process died"),
])
def test_the_machines_refusals_are_one_line(monkeypatch, error, says):
    from esccli import store

    def refuse(*a, **k):
        raise error

    monkeypatch.setattr(store, "list_models", refuse)
    r = runner.invoke(app, ["models"])
    assert_one_line_error(r, says)
    assert r.exit_code == 1


def test_a_bug_of_ours_is_not_dressed_as_a_dead_worker(monkeypatch):
    from esccli import store

    def fail(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(store, "list_models", fail)
    r = runner.invoke(app, ["models"])
    assert isinstance(r.exception, RuntimeError) and "worker" not in r.output


def test_a_closed_pipe_ends_quietly(tmp_path):
    # `esc models --json | head -0`: the reader has gone before esc writes; no error line, no traceback
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        p = subprocess.run([sys.executable, "-m", "esccli", "models", "--json"], stdout=write_end,
                           stderr=subprocess.PIPE, text=True, env={**os.environ, "ESC_HOME": str(tmp_path)})
    finally:
        os.close(write_end)
    assert p.returncode == 1 and p.stderr == ""


@pytest.mark.parametrize("command", [["train"], ["eval"], ["predict", "--examples"]])
def test_an_unknown_device_is_a_usage_error(command):
    r = runner.invoke(app, [*command, "--device", "gpu"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "Invalid value for '--device': 'gpu' is not one of 'auto', 'cpu', 'cuda', 'mps'" in r.stderr  # no "Value error, "


def test_the_cli_offers_the_devices_the_core_knows():
    from esccli.errors import EscError
    from esccli.train import DEVICES, pick_device

    assert [d.value for d in common.Device] == list(DEVICES)
    with pytest.raises(EscError, match="unknown device 'gpu'"):
        pick_device("gpu")  # for callers of the core that skip the CLI


@pytest.mark.parametrize("extra, says", [("--cv", "--cv has five"), ("--all", "training on all folds has none")])
def test_save_best_needs_one_held_out_fold(extra, says):
    assert_one_line_error(runner.invoke(app, ["train", "--save-best", extra]), "--save-best", says)


def test_the_core_refuses_save_best_without_a_held_out_fold(synth_features, tmp_path):
    from conftest import tiny_recipe
    from esccli.errors import EscError
    from esccli.train import train

    with pytest.raises(EscError, match="training on all folds has none"):
        train(synth_features, tiny_recipe(), tmp_path / "m.pt", fold=None, save_best=True)
    assert not any(tmp_path.iterdir())


def test_a_picture_too_large_to_draw_is_refused_before_reading(tmp_path):
    r = runner.invoke(app, ["spectrogram", str(tmp_path / "missing.wav"), "--width", "100", "--dpi", "1000"])
    assert_one_line_error(r, "100000 x 4000 pixels is too large")
    assert not any(tmp_path.iterdir())


def test_predict_batch_size_is_bounded():
    assert runner.invoke(app, ["predict", "--examples", "--batch-size", "100000"]).exit_code == 2


def test_fetch_notes_show_brackets_once(monkeypatch):
    from esccli.cli import fetch

    buf = io.StringIO()
    monkeypatch.setattr(common, "err", Console(file=buf, width=200))
    fetch._note("kept the archive at /tmp/[old]/ESC-50.zip")
    assert buf.getvalue().strip() == "kept the archive at /tmp/[old]/ESC-50.zip"


def test_train_finds_an_unusable_data_dir_before_training(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ESC_HOME", str(blocker / "esc"))
    assert_one_line_error(runner.invoke(app, ["train", "--epochs", "1"]), "Not a directory", str(blocker))


@pytest.mark.parametrize("extra", [["--cv"], ["--all"]])
def test_fold_is_refused_where_it_would_be_ignored(extra):
    assert_one_line_error(runner.invoke(app, ["train", "--fold", "3", *extra]), "--fold", extra[0])


@pytest.mark.parametrize("args, says", [
    (["predict", "--top-k", "0", "x.wav"], "'--top-k'"),
    (["predict", "--format", "xml", "x.wav"], "'xml'"),
    (["trian"], "No such command 'trian'"),
    (["--bogus"], "No such option: --bogus"),
    (["fetch", "--data-dir", "x"], "--data-dir goes before the command: esc --data-dir DIR fetch"),
])
def test_command_line_mistakes_are_one_line_saying_where_to_look(args, says):
    r = runner.invoke(app, args)
    assert_one_line_error(r, says, "-h`")
    assert r.exit_code == 2 and "Usage:" not in r.output


def test_a_zero_learning_rate_is_refused_before_the_features_are_built(esc_home):
    assert_one_line_error(runner.invoke(app, ["train", "--lr", "0"]), "lr must be above 0")
    assert not (esc_home / "features").exists() and not (esc_home / "ESC-50").exists()


@pytest.mark.parametrize("preset", ["fast", "default"])
def test_the_seed_network_on_a_recipe_of_crops_is_refused_before_the_features_are_built(esc_home, preset):
    # it flattens the clip: trained on crops, it could not score whole clips (it used to end in a traceback)
    r = runner.invoke(app, ["train", "--preset", preset, "--arch", "seed", "--epochs", "1"])
    assert_one_line_error(r, "seed network", "crop_frames must be 0", "--preset seed")
    assert not (esc_home / "features").exists()


@pytest.mark.parametrize("terminal", [False, True])
def test_no_blank_line_on_stderr_when_it_is_not_a_terminal(monkeypatch, terminal):
    # off a terminal a bar cannot animate and used to leave only a blank line behind; on one it still draws
    stderr = io.StringIO()
    monkeypatch.setattr(common, "err", Console(file=stderr, force_terminal=terminal, width=80))
    with common.progress_bar(transient=False) as bar:
        task = bar.add_task("epoch", total=3)
        bar.update(task, completed=3)
    assert (stderr.getvalue() != "") == terminal, repr(stderr.getvalue())


@pytest.mark.parametrize("native", [False, True])
def test_bf16_asked_for_on_a_cpu_that_emulates_it_is_warned_of(esc_home, monkeypatch, native):
    monkeypatch.setattr("esccli.train.cpu_has_bf16", lambda: native)
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    r = runner.invoke(app, ["train", "--precision", "bf16", "--device", "cpu"])  # then: no dataset installed
    assert r.exit_code == 1 and "ESC-50 is not installed" in r.stderr
    assert ("does not compute bf16 natively" in r.stderr) is not native, r.stderr


def test_a_run_that_would_start_over_an_interrupted_one_says_so(esc_home):
    (esc_home / "models").mkdir(parents=True)
    (esc_home / "models" / "x.resume.pt").write_bytes(b"an interrupted run's progress")
    r = runner.invoke(app, ["train", "--name", "x"])  # then: no dataset installed
    assert r.exit_code == 1 and "ESC-50 is not installed" in r.stderr
    assert "an interrupted training of x saved its progress; this run starts over" in r.stderr
    assert "--resume" in r.stderr and "interrupted training" not in runner.invoke(app, ["train", "--name", "y"]).stderr


def test_suggested_commands_repeat_a_data_dir_given_on_the_command_line(esc_home, tmp_path, monkeypatch):
    other = tmp_path / "my data"
    r = CliRunner().invoke(app, ["--data-dir", str(other), "train", "--epochs", "1"])
    assert_one_line_error(r, f"run `esc --data-dir '{other}' fetch` first")
    r = CliRunner().invoke(app, ["train", "--epochs", "1"])  # ESC_HOME: a pasted command sees it too
    assert_one_line_error(r, "run `esc fetch` first")

    # only commands in backticks: prose and file names that hold "esc " stay as they are
    monkeypatch.setattr(common, "state", common.State(data_dir=Path("/d/[x] y"), data_dir_given=True))
    message = "not an esc model file: my esc clips/a.wav; `esc models`, (`esc fetch --force`)"
    assert common.typed_here(message) == \
        "not an esc model file: my esc clips/a.wav; `esc --data-dir '/d/[x] y' models`, " \
        "(`esc --data-dir '/d/[x] y' fetch --force`)"
    r = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "[/x]"), "models"])  # a path Rich would take as markup
    assert r.exit_code == 0 and "Traceback" not in r.output and f"`esc --data-dir '{tmp_path}/[/x]' train`" in r.stderr
