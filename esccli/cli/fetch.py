"""`esc fetch`: download, verify and install ESC-50 (see esccli.fetch for how)."""

from pathlib import Path
from typing import Optional

import typer

from esccli.cli import common


def fetch(
    url: Optional[str] = typer.Option(
        None, "--url", metavar="URL", help="Download from this address instead of the dataset's GitHub archive."),
    source: Optional[Path] = typer.Option(
        None, "--from", metavar="PATH",
        help="Install from an archive (.zip) or an unpacked ESC-50-master folder you already have."),
    force: bool = typer.Option(False, "--force", help="Fetch and replace the dataset even if it is installed."),
    allow_subset: bool = typer.Option(
        False, "--allow-subset",
        help="Accept an archive with fewer clips, as long as every class has as many in every fold."),
    keep_archive: Optional[bool] = typer.Option(
        None, "--keep-archive/--no-keep-archive", show_default=False,
        help="Keep the downloaded zip after installing, or delete it [default: as the last fetch that said; "
             "an archive given with --from is never deleted]."),
    retries: int = typer.Option(3, "--retries", min=0, max=10, metavar="N",
                                help="Network failures to retry, waiting longer each time (up to a minute)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Download and install ESC-50 (or install it from an archive or folder you have).

    The download resumes where it stopped if interrupted. Nothing is installed until every clip has been
    checked; a dataset already installed stays until its replacement is complete.
    """
    from esccli.fetch import fetch_dataset, reinstall_command

    layout = common.layout()
    bars = _Bars()
    try:
        result = fetch_dataset(layout, url=url, source=source, force=force, allow_subset=allow_subset,
                               keep_archive=keep_archive, retries=retries, progress=bars.update, notify=bars.note)
    finally:
        bars.close()

    if as_json:
        common.print_json(result.as_dict())
        return
    what = "ESC-50" if result.full else "an ESC-50 subset"
    if result.already_present:
        common.out.print(f"{what[0].upper() + what[1:]} is already installed in {result.path} ({result.clips} "
                         f"clips, verified when installed, all still there): nothing to do. To install it again: "
                         f"{common.typed_here(f'`{reinstall_command(result.path)}`')}", markup=False)
        return
    common.out.print(f"Installed {what} in {result.path}: {result.clips} clips, all verified.", markup=False)
    if result.archive:
        _note(f"kept the archive at {result.archive}")


def _note(message: str) -> None:
    common.dim_line(message)  # dim_line escapes: paths and URLs may hold [brackets]


class _Bars:
    """Turns the core's progress(stage, done, total) calls into one Rich bar per stage, on stderr."""

    LABELS = {"download": "Downloading", "unpack": "Unpacking", "copy": "Copying", "verify": "Verifying clips"}

    def __init__(self):
        self.enabled = common.err.is_terminal  # bars only animate on a terminal; elsewhere they leave blank lines
        self.stage = None
        self.progress = None
        self.task = None

    def update(self, stage: str, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.progress = self._bar(stage)
            self.progress.start()
            # a resumed download starts part way: begin there, so the speed shown is the real one
            self.task = self.progress.add_task(self.LABELS.get(stage, stage), total=total, completed=done)
        self.progress.update(self.task, completed=done, total=total)

    def note(self, message: str) -> None:
        _note(message)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.progress = self.stage = self.task = None

    @staticmethod
    def _bar(stage: str):
        if stage == "verify":
            return common.progress_bar()
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), DownloadColumn(),
                        TransferSpeedColumn(), TimeRemainingColumn(), console=common.err, transient=True)
