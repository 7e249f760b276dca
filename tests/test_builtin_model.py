"""The model that ships with esc, and the example clips that ship with it."""

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from esccli import checkpoint
from esccli.classes import CLASS_NAMES
from esccli.cli import app
from esccli.features import PRESETS, FeatureParams
from esccli.recipes import get_recipe
from esccli.store import BUILTIN_PATH, EXAMPLES_DIR

runner = CliRunner()


def test_builtin_model_loads_with_its_metadata():
    assert BUILTIN_PATH.stat().st_size < 8 * 2**20  # a few MB at most
    stored = checkpoint.read(BUILTIN_PATH)["state_dict"]  # its weights are stored as float16 (scripts/ship_model.py)
    assert {str(v.dtype) for v in stored.values() if v.is_floating_point()} == {"torch.float16"}
    lm = checkpoint.load(BUILTIN_PATH)
    assert {p.dtype for p in lm.model.parameters()} == {torch.float32}  # and used in float32
    check = lm.meta["train"]["float16_check"]  # scored both ways by ship_model on every clip: no top class changed
    assert check["clips"] == 2000 and check["top_class_changed"] == 0 and check["max_probability_change"] < 0.01
    meta = lm.meta
    assert meta["classes"] == list(CLASS_NAMES)
    assert FeatureParams.from_dict(meta["features"]) == PRESETS["default"]
    assert meta["train"]["fold"] is None  # trained on all 2000 clips
    assert meta["train"]["clips"] == 2000
    cv = meta["train"]["cross_validation"]
    assert set(cv["folds"]) == {"1", "2", "3", "4", "5"}
    assert 0.5 < cv["mean"] < 1.0 and cv["command"].startswith("python benchmarks/crossval.py")
    assert meta["train"]["created"] and meta["train"]["command"].startswith("python scripts/ship_model.py")
    assert "CC BY-NC" in meta["license"]


def test_builtin_model_is_made_by_todays_default_recipe():
    """A change to the default recipe must ship a model retrained with it (scripts/ship_model.py, seed 0), so that
    what `esc predict` uses is what the README's cross-validation of the default measured."""
    train = checkpoint.read_meta(BUILTIN_PATH)["train"]
    assert train["seed"] == 0 and get_recipe("default").made(train, None, 0, train.get("precision", "fp32"))
    cv = train["cross_validation"]  # and the README quotes the cross-validation this model carries
    assert f"{100 * cv['mean']:.2f} % ± {100 * cv['std']:.2f} %" in (Path(__file__).parents[1] / "README.md").read_text()


def test_examples_are_classified_as_their_true_class():
    clips = sorted(EXAMPLES_DIR.glob("*.flac"))
    assert len(clips) >= 5
    r = runner.invoke(app, ["predict", "--examples", "--json"])  # no trained model: the built-in one is used
    assert r.exit_code == 0, r.output
    assert "using the built-in model" in r.stderr
    records = json.loads(r.stdout)
    got = {rec["file"].rsplit("/", 1)[-1]: rec["top"][0]["class"] for rec in records}
    assert got == {c.name: c.stem for c in clips}


def test_eval_refuses_to_score_the_builtin_model_on_esc50():
    r = runner.invoke(app, ["eval", "--model", "builtin"])
    assert r.exit_code == 1
    assert "trained on every fold" in r.output or "trained on all five folds" in r.output


def test_a_table_piped_to_another_program_is_not_cut_to_80_columns(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {"ESC_HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "esccli", "predict", "--examples"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    longest = max(sorted(EXAMPLES_DIR.glob("*.flac")), key=lambda p: len(str(p)))
    assert any(str(longest) in line for line in r.stdout.splitlines()), r.stdout  # one path, one line
    assert max(map(len, r.stdout.splitlines())) > 80
    narrow = subprocess.run([sys.executable, "-m", "esccli", "predict", "--examples"], capture_output=True,
                            text=True, env=env | {"COLUMNS": "60"}, timeout=120)
    assert max(map(len, narrow.stdout.splitlines())) == 60  # COLUMNS still decides
    # and a narrow table wraps the answer (the class, the third column) rather than cutting it short
    classes = [line.split("│")[3].strip() for line in narrow.stdout.splitlines() if line.startswith("│")]
    assert classes and not [c for c in classes if c.endswith("…")], narrow.stdout


def test_the_builtin_model_is_called_builtin_wherever_it_is_shown(tmp_path):
    from esccli import store
    from esccli.paths import layout

    for name in ("builtin", None, str(BUILTIN_PATH)):  # by name, as the default, by its file
        lm, builtin = store.load(layout(tmp_path), name)
        assert builtin and lm.name == store.BUILTIN_NAME == "builtin"  # not its file's "esc-default"
    assert checkpoint.read_meta(BUILTIN_PATH)["name"] == "esc-default"  # the file itself unchanged
