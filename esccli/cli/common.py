"""What every command shares: the two consoles, the data directory option, and error rendering.

Progress and messages go to stderr (`err`); results, result tables included, go to stdout (`out`), plain or as
JSON, so that `esc predict x.wav --json | jq` works.
"""

import json
import os
import re
import shlex
import sys
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

# what goes to a file or another program is not cut to 80 columns (Rich's width without a terminal): tables and
# progress lines are as wide as they need, up to PIPED_WIDTH (a training log stays one line per epoch); COLUMNS,
# when set, still decides
PIPED_WIDTH = 200


def _width(stream) -> int | None:
    """None (Rich's own: the terminal's, or COLUMNS) on a terminal, else PIPED_WIDTH; `stream` is None when the
    shell closed it (2>&-)."""
    return None if (stream is not None and stream.isatty()) or os.environ.get("COLUMNS") else PIPED_WIDTH


err = Console(stderr=True, highlight=False, width=_width(sys.stderr))
out = Console(highlight=False, soft_wrap=True, width=_width(sys.stdout))


class Device(str, Enum):
    """--device's choices (esccli.train.DEVICES, which the core checks; a test keeps the two equal)."""
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


DEVICE_METAVAR = "|".join(d.value for d in Device)  # shown in --help as the other choices are: auto|cpu|cuda|mps


@dataclass
class State:
    data_dir: Path | None = None
    data_dir_given: bool = False  # by --data-dir on the command line (not ESC_HOME): commands we suggest repeat it
    stop: object | None = None  # the StopOnSignals of `esc` (esccli/interrupts.py); None when called in-process
    stopped_by: int | None = None  # the signal that stopped the command, once it has said so


state = State()


def arch_label(arch: str, members: int = 1) -> str:
    """How an architecture is shown: "escnet", "2 x escnet" for an ensemble of two, and "2 x escnet + texture" for
    one of networks of different architectures (`arch` names them all, joined by "+")."""
    if "+" not in arch:
        return f"{members} x {arch}" if members > 1 else arch
    counts = Counter(arch.split("+"))
    return " + ".join(f"{n} x {a}" if n > 1 else a for a, n in counts.items())


def layout():
    from esccli.paths import layout as _layout

    return _layout(state.data_dir)


# --- shell completion of values (each reads only names: no model file is opened, torch is not imported) --------

def complete_models(ctx: typer.Context, incomplete: str) -> list[str]:
    """Names for models --default: the stored models (a --save-best epoch too) and the built-in one. (Not for -m,
    which takes files too: a completion of names would hide the shell's own completion of paths.) The data dir is
    the one on the command line being completed (or ESC_HOME), as no callback has run."""
    from esccli.paths import layout as _layout
    from esccli.store import BUILTIN_NAME, RESUME, SUFFIX

    try:
        names = sorted(p.stem for p in _layout(ctx.find_root().params.get("data_dir")).models.glob(f"*{SUFFIX}")
                       if not p.name.startswith(".") and not p.stem.endswith(RESUME))
    except OSError:
        names = []
    return [*names, BUILTIN_NAME]  # typer keeps those that start with `incomplete`


def complete_recipes(incomplete: str) -> list[str]:
    from esccli.recipes import RECIPES

    return list(RECIPES)


def complete_feature_presets(incomplete: str) -> list[str]:
    from esccli.features import PRESETS

    return list(PRESETS)


def print_json(obj) -> None:
    """A result as JSON on stdout (plain print: no Rich markup or wrapping)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def counted(n: int, noun: str) -> str:
    """'1 epoch', '2 epochs'."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def duration(seconds: float) -> str:
    """'42 s' under a minute (a tenth of a minute is too coarse there), else '8.7 min'."""
    return f"{seconds:.0f} s" if seconds < 59.5 else f"{seconds / 60:.1f} min"


def stored_float(x: float | None) -> float | None:
    """A score stored as float32 (0.862500011920929) as JSON shows it: 6 decimals hold any share of ESC-50's clips
    exactly (0.8625)."""
    return None if x is None else round(x, 6)


_ESC_COMMAND = re.compile(r"`esc (?=[a-z])")  # a command esc suggests, in backticks: "run `esc fetch` first"


def typed_here(message: str) -> str:
    """A message whose suggested commands (in backticks) act on this data directory when pasted: with --data-dir
    when it was given on the command line (an exported ESC_HOME needs nothing)."""
    if not state.data_dir_given or state.data_dir is None:
        return message
    return _ESC_COMMAND.sub(lambda m: f"`esc --data-dir {shlex.quote(str(state.data_dir))} ", message)


def error_line(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(typed_here(message))}", highlight=False, soft_wrap=True)


def warn_line(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(typed_here(message))}", highlight=False, soft_wrap=True)


def note_line(message: str) -> None:
    err.print(f"[bold yellow]note:[/] {escape(typed_here(message))}", highlight=False, soft_wrap=True)


def warn_if_default_lost(layout, used: str | None) -> None:
    """Say so when the model `esc models --default` chose is gone, and `used` is the default in its place."""
    from esccli import store

    lost = store.lost_default(layout)
    if lost:
        instead = f"; {used} is used instead" if used else ""
        warn_line(f"the default model {lost!r} is gone{instead} (`esc models --default NAME` chooses another)")


def dim_line(message: str) -> None:
    err.print(f"[dim]{escape(typed_here(message))}[/]", highlight=False, soft_wrap=True)


def progress_bar(transient: bool = True):
    """A Rich progress bar on stderr with count, rate and time left; off when stderr is not a terminal (a bar that
    cannot animate would only leave a blank line)."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=transient,
                    disable=not err.is_terminal)
