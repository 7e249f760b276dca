"""The `esc` command line: parses options, calls one core function per command, renders the result.

Only typer and rich are imported at start-up; each command imports the heavy modules (torch, librosa) it
needs inside its function, so `esc --help` and shell completion stay fast.
"""

from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from esccli import __version__
from esccli.cli import common
from esccli.errors import EscError


class EscGroup(TyperGroup):
    """Turns our own errors, and the machine's refusals (OSError, MemoryError), into one red line and an exit code;
    keeps commands in definition order."""

    def list_commands(self, ctx):
        return list(self.commands)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EscError as e:
            common.error_line(str(e))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            common.error_line("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:  # `esc predict ... | head`: click ends quietly (exit 1), as a pipe's writer should
            raise
        except MemoryError:
            common.error_line("not enough memory for this; try a smaller --batch-size or picture size")
            raise typer.Exit(1) from None
        except OSError as e:  # the machine's refusal (permissions, a full disk, a vanished path), not a bug of ours
            what = f"{e.strerror or e}: {e.filename}" if e.filename else str(e.strerror or e)
            common.error_line(f"{what}; check that the path exists, is writable and the disk has room")
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=EscGroup,
    name="esc",
    help="Recognise environmental sounds: learn from ESC-50, then label anyone's recordings.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"esc {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", envvar="ESC_HOME", show_envvar=True,
        help="Where the dataset, feature caches and models live [default: the user data dir].",
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    common.state.data_dir = data_dir


from esccli.cli import commands  # noqa: E402  (registers the subcommands on `app`)


def main() -> None:
    app(prog_name="esc")
