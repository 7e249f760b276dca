"""`esc predict`: label recordings with a trained model (see esccli.predict for how windows are cut)."""

import csv
import sys
from enum import Enum
from typing import List, Optional

import typer

from esccli.cli import common
from esccli.errors import EscError

# esccli.predict.AUDIO_GLOB, spelled out so that --help needs no numpy (a test keeps them equal)
AUDIO_GLOB = "*.{wav,flac,ogg,oga,opus,mp3,aiff,aif,au}"


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def predict(
    files: Optional[List[str]] = typer.Argument(
        None, metavar="FILE", show_default=False,
        help="Audio files (any format soundfile reads), folders (searched recursively with --glob), "
             "or - to read one recording from stdin.",
    ),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", metavar="NAME|PATH", show_default=False,
        help="A model in the store (see `esc models`) or a model file [default: the store's default model, "
             "else the built-in one].",
    ),
    top_k: int = typer.Option(3, "--top-k", "-k", min=1, metavar="K", help="Classes to show per file (and window)."),
    min_confidence: float = typer.Option(
        0.0, "--min-confidence", min=0.0, max=1.0, metavar="P",
        help="Hide classes whose probability is under P (0..1); timeline windows under it show as unsure.",
    ),
    hop: Optional[float] = typer.Option(
        None, "--hop", metavar="SECONDS", min=0.001, show_default=False,
        help="Step between the windows a long recording is cut into, at most one window "
             "[default: half the model's window].",
    ),
    windows: bool = typer.Option(
        False, "--windows", help="Include every window: as records (json, csv), or unmerged in the timeline (table)."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", metavar="table|json|csv", help="table on the terminal, or json / csv on stdout."),
    as_json: bool = typer.Option(False, "--json", help="Shortcut for --format json."),
    glob: str = typer.Option(AUDIO_GLOB, "--glob", metavar="PATTERN",
                             help="Which files a folder search picks up (case ignored; {a,b} alternatives)."),
    device: common.Device = typer.Option(common.Device.auto, "--device", metavar=common.DEVICE_METAVAR, help="Where the network runs."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, max=4096, metavar="N",
                                   help="Windows per forward pass (across files)."),
    examples: bool = typer.Option(False, "--examples", help="Classify the example clips that ship with esc."),
) -> None:
    """Recognise the sounds in audio files: the ESC-50 classes most likely, per file and over time.

    Each recording is cut into windows as long as the model's training clips, `--hop` seconds apart; a file's
    classes are the mean of its windows' probabilities. Files longer than one window also get a timeline.
    Files that cannot be classified are reported, the others still are; the exit code is then 1.
    """
    if as_json:
        if fmt not in (Format.table, Format.json):
            raise EscError(f"--json and --format {fmt.value} exclude each other")
        fmt = Format.json
    files = list(files or [])
    if examples:
        from esccli.store import EXAMPLES_DIR

        files.append(str(EXAMPLES_DIR))
    if not files:
        raise EscError("no audio files given", "name files or folders, - for stdin, or --examples")
    if files.count("-") > 1:
        raise EscError("stdin (-) can be read only once")

    from esccli import predict as core
    from esccli import store
    from esccli.train import pick_device, set_threads

    dev = pick_device(device.value)
    loaded, builtin = store.load(common.layout(), model, dev)
    if not model:
        common.warn_if_default_lost(common.layout(), loaded.name)
    if builtin:
        common.dim_line(f"using the built-in model (`-m {store.BUILTIN_NAME}`; train your own with `esc train`)")
    elif not model:
        common.dim_line(f"using the default model {loaded.name} (`esc models` lists them; "
                        f"`-m {store.BUILTIN_NAME}` for the built-in one)")
    set_threads(1)  # every core for the forward passes

    sources = []
    for item in files:
        if item == "-":
            sources.append(core.AudioBytes(core.STDIN_NAME, _read_stdin()))
        else:
            sources.extend(core.gather([item], glob))

    keep_windows = windows or fmt == Format.table
    results = []
    with _Progress(len(sources)) as bar:
        for r in core.predict_files(sources, loaded, top_k=top_k, hop_seconds=hop, batch_size=batch_size,
                                    device=dev, with_windows=keep_windows, progress=bar.update,
                                    min_probability=min_confidence):
            if r.error is not None and fmt == Format.table:
                common.error_line(f"{r.file}: {r.error}")
            elif r.error is None and r.note:
                common.note_line(f"{r.file}: {r.note}")
            results.append(r)

    failed = sum(r.error is not None for r in results)
    if fmt == Format.json:
        common.print_json([_record(r, windows) for r in results])
    elif fmt == Format.csv:
        _write_csv(results, windows)
    else:
        _render_tables(results, loaded.params.clip_seconds, min_confidence, windows)
    if failed and fmt != Format.table:
        common.dim_line(f"{failed} of {len(results)} files could not be classified (see their error field)")
    if failed:
        raise typer.Exit(1)


def _read_stdin() -> bytes:
    stream = sys.stdin.buffer
    if stream.isatty():
        raise EscError("- reads a recording from stdin, but stdin is a terminal", "pipe a file in: `esc predict - < clip.wav`")
    return stream.read()


class _Progress:
    """A file-count bar on stderr, when there is more than one file and stderr is a terminal."""

    def __init__(self, total: int):
        self.bar = common.progress_bar(transient=True) if total > 1 and common.err.is_terminal else None
        self.task = None
        self.total = total

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task("Classifying", total=self.total)
        return self

    def update(self, done: int, total: int | None) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()


# --- json and csv ---------------------------------------------------------------------------------------------

def _guesses(top) -> list[dict]:
    return [{"class": g.name, "category": g.category, "probability": round(g.probability, 6)} for g in top]


def _record(r, with_windows: bool) -> dict:
    rec = {"file": r.file, "duration": None if r.duration is None else round(r.duration, 6),
           "sample_rate": r.sample_rate, "channels": r.channels, "top": _guesses(r.top)}
    if with_windows:
        rec["windows"] = [{"start": round(w.start, 3), "end": round(w.end, 3), "class": w.name,
                           "category": _category(w.name),
                           "probability": None if w.probability is None else round(w.probability, 6),
                           "top": _guesses(w.top), "silent": w.silent} for w in r.windows]
    rec["note"] = r.note
    rec["silent"] = r.silent
    rec["error"] = r.error
    return rec


def _category(name):
    if name is None:
        return None
    from esccli.predict import category_for

    return category_for(name)


def _write_csv(results, with_windows: bool) -> None:
    w = csv.writer(sys.stdout, lineterminator="\n")
    span = ["start", "end"] if with_windows else []
    w.writerow(["file", *span, "rank", "class", "category", "probability", "error"])
    blank = [""] * len(span)
    for r in results:
        if r.error is not None:
            w.writerow([r.file, *blank, "", "", "", "", r.error])
            continue
        for row in _rank_rows(r.top) or [["", "", "", ""]]:
            w.writerow([r.file, *blank, *row, ""])
        if with_windows:
            for win in r.windows:
                times = [f"{win.start:.3f}", f"{win.end:.3f}"]
                if win.silent:  # not classified: one row that says so
                    w.writerow([r.file, *times, "", "", "", "", "silent"])
                    continue
                for row in _rank_rows(win.top) or [["", "", "", ""]]:
                    w.writerow([r.file, *times, *row, ""])
    sys.stdout.flush()


def _rank_rows(top) -> list[list]:
    return [[i, g.name, g.category or "", f"{g.probability:.6f}"] for i, g in enumerate(top, 1)]


# --- tables ---------------------------------------------------------------------------------------------------

def _clock(seconds: float) -> str:
    """0:07.5, 12:03.0, 1:02:03.0"""
    m, s = divmod(round(max(0.0, seconds), 1), 60)  # rounded first: 59.97 s is 1:00.0, not 0:60.0
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:04.1f}" if h else f"{m}:{s:04.1f}"


def _render_tables(results, window_seconds: float, min_confidence: float, every_window: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    from esccli.predict import timeline

    good = [r for r in results if r.error is None]
    if not good:
        return
    t = Table(title=None, show_lines=False)
    t.add_column("file", overflow="fold")
    t.add_column("duration", justify="right")
    t.add_column("class", overflow="fold")  # in a narrow terminal the answer wraps rather than being cut short
    t.add_column("category", style="dim")
    t.add_column("probability", justify="right")
    for r in good:
        rows = r.top or [None]
        for i, g in enumerate(rows):
            file_cell = Text(r.file) if i == 0 else Text("")
            dur = _clock(r.duration) if i == 0 and r.duration is not None else ""
            if g is None:
                t.add_row(file_cell, dur, Text(f"(none at {min_confidence:.0%} or more)", style="dim"), "", "",
                          end_section=True)
            else:
                t.add_row(file_cell, dur, Text(g.name, style="bold" if i == 0 else ""), Text(g.category or ""),
                          f"{g.probability:.1%}", end_section=i == len(rows) - 1)
    common.out.print(t)

    for r in good:
        if r.n_windows <= 1 or not r.windows:
            continue
        tl = Table(title=Text(f"{r.file}: {'every window' if every_window else 'timeline'}"), title_justify="left")
        tl.add_column("from", justify="right")
        tl.add_column("to", justify="right")
        if every_window:
            tl.add_column("classes")
            for w in r.windows:
                label = ", ".join(f"{g.name} {g.probability:.0%}" for g in w.top) if w.top else \
                    ("(silence)" if w.silent else "(unsure)")
                tl.add_row(_clock(w.start), _clock(w.end), Text(label))
        else:
            tl.add_column("class")
            tl.add_column("category", style="dim")
            tl.add_column("confidence", justify="right")
            for s in timeline(r.windows, r.duration or r.windows[-1].end, min_confidence):
                name = s.name or ("(silence)" if s.silent else f"(unsure: under {min_confidence:.0%})")
                tl.add_row(_clock(s.start), _clock(s.end), Text(name, style="" if s.name else "dim"),
                           Text(_category(s.name) or ""), "" if s.probability is None else f"{s.probability:.0%}")
        common.out.print(tl)
    if len(results) > 1:
        common.dim_line(f"classified {len(good)} of {len(results)} files with {window_seconds:g} s windows")
