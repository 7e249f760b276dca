import os
import subprocess
import sys

from typer.testing import CliRunner

from esccli import __version__
from esccli.cli import app, common

runner = CliRunner()

COMMANDS = ["fetch", "featurize", "train", "eval", "predict", "spectrogram"]


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0
    assert r.output.strip() == f"esc {__version__}"


def test_esc_alone_shows_the_help_not_an_error():
    r = runner.invoke(app, [])
    assert r.output.startswith("Usage: esc") and "error" not in r.output and "Commands:" in r.output
    assert r.exit_code == 2  # as click does: a command was expected


def test_help_lists_the_six_commands_with_descriptions():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    lines = r.output.splitlines()
    for cmd in COMMANDS:
        line = next((l for l in lines if l.strip().startswith(cmd + " ")), None)
        assert line is not None, cmd
        assert len(line.split()) > 2, f"{cmd} has no description"


def test_every_option_shows_its_value_in_one_style():
    """A value is an upper-case word (N, NAME|PATH) or its choices (auto|cpu|cuda|mps), never typer's own
    "<int range>" or "<str>"."""
    import re

    option = re.compile(r"^  (?:-\w, )?--[\w-]+(?:, --[\w-]+)* (\S+)")
    shown = []
    for command in [[], *[[c] for c in COMMANDS + ["models"]]]:
        r = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
        shown += [(command, m.group(1)) for m in map(option.match, r.output.splitlines()) if m]
    assert len(shown) > 30
    words = re.compile(r"[A-Z][A-Z0-9_]*(\|[A-Z][A-Z0-9_]*)*|[a-z0-9]+(\|[a-z0-9]+)+|/")  # "/": --x / --no-x
    assert [s for s in shown if not words.fullmatch(s[1])] == []


def complete(words: str, home) -> list[str]:
    """What the shell completion offers for the last (empty) word of `words`, as bash asks for it."""
    r = runner.invoke(app, [], prog_name="esc", env={"_ESC_COMPLETE": "complete_bash", "COMP_WORDS": words + " ",
                                                      "COMP_CWORD": str(len(words.split())), "ESC_HOME": str(home)})
    assert r.exit_code == 0, r.output
    return sorted(r.output.split())


def test_completion_offers_presets_and_model_names(tmp_path):
    from esccli.features import PRESETS
    from esccli.recipes import RECIPES

    assert complete("esc train --preset", tmp_path) == sorted(RECIPES) == ["default", "fast", "seed"]
    assert complete("esc featurize --preset", tmp_path) == sorted(PRESETS) == ["default", "seed"]
    assert complete("esc models --default", tmp_path) == ["builtin"]  # no models yet
    models = tmp_path / "models"
    models.mkdir()
    for f in ("a.pt", "a.best.pt", "a.resume.pt", ".a.member0.pt", "notes.txt"):
        (models / f).write_bytes(b"")
    assert complete("esc models --default", tmp_path) == ["a", "a.best", "builtin"]
    (tmp_path / "other" / "models").mkdir(parents=True)
    (tmp_path / "other" / "models" / "b.pt").write_bytes(b"")
    assert complete(f"esc --data-dir {tmp_path / 'other'} models --default", tmp_path) == ["b", "builtin"]


def test_help_does_not_import_torch_or_librosa():
    code = (
        "import sys\n"
        "from esccli.cli import app\n"
        "try:\n    app(['--help'], prog_name='esc')\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'librosa', 'matplotlib', 'scipy') if m in sys.modules]\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY=" in r.stderr
    assert r.stderr.split("HEAVY=")[1].strip() == ""


def test_python_dash_m_works():
    r = subprocess.run([sys.executable, "-m", "esccli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"esc {__version__}"


def test_progress_lines_written_to_a_file_are_not_wrapped_at_80_columns():
    # a training log (`esc train ... 2> log`) keeps one line per epoch, for grep and awk
    code = "from esccli.cli import common\ncommon.err.print('epoch 1/2 ' + 'x' * 140, highlight=False)\n"  # as train
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.stderr.splitlines() == ["epoch 1/2 " + "x" * 140]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env | {"COLUMNS": "60"})
    assert max(map(len, r.stderr.splitlines())) == 60  # COLUMNS still decides


def test_esc_runs_with_stderr_closed():
    r = subprocess.run(f"{sys.executable} -m esccli --version 2>&-", shell=True, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"esc {__version__}"


def test_durations_under_a_minute_are_in_seconds():
    assert [common.duration(s) for s in (7.2, 59.4, 59.6, 522)] == ["7 s", "59 s", "1.0 min", "8.7 min"]
