"""The shell completions and the man page in the repository are what scripts/generate_docs.py makes of the app."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "generate_docs.py"
COMMANDS = ["fetch", "featurize", "train", "eval", "predict", "spectrogram"]
FIX = "run: python scripts/generate_docs.py"


def load_generator():
    spec = importlib.util.spec_from_file_location("generate_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_docs_are_up_to_date(tmp_path):
    # a different machine: another data dir, terminal width, locale; the output must not depend on them
    env = {**os.environ, "ESC_HOME": str(tmp_path / "elsewhere"), "XDG_DATA_HOME": str(tmp_path), "COLUMNS": "37",
           "LC_ALL": "C"}
    r = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, f"completions or man page out of date ({FIX}):\n{r.stderr}"


def test_man_page_documents_every_command_and_the_data_dir():
    page = (ROOT / "man" / "esc.1").read_text(encoding="utf-8")
    for cmd in COMMANDS:
        assert f'.SS "esc {cmd}"' in page, cmd
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "ENVIRONMENT", "FILES"):
        assert f".SH {section}\n" in page, section
    assert "ESC_HOME" in page


def test_completions_call_back_the_installed_esc():
    for shell in ("bash", "zsh", "fish"):
        script = (ROOT / "completions" / f"esc.{shell}").read_text(encoding="utf-8")
        assert "_ESC_COMPLETE=complete_" + shell in script, shell
    assert (ROOT / "completions" / "esc.zsh").read_text().startswith("#compdef esc\n")


def test_check_names_missing_and_stale_files(tmp_path, monkeypatch, capsys):
    gen = load_generator()
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    assert gen.main(["--check"]) == 1
    assert "completions/esc.bash" in capsys.readouterr().err
    assert not (tmp_path / "man").exists()  # --check writes nothing

    assert gen.main([]) == 0
    assert gen.main(["--check"]) == 0
    page = tmp_path / "man" / "esc.1"
    first = page.read_text()
    assert gen.main([]) == 0 and page.read_text() == first  # deterministic

    page.write_text(page.read_text().replace("spectrogram", "spectrograph"))
    capsys.readouterr()
    assert gen.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "man/esc.1" in err and "completions" not in err
