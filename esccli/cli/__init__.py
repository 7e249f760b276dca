"""The `esc` command line: parses options, calls one core function per command, renders the result.

Only typer and rich are imported at start-up; each command imports the heavy modules (torch, librosa) it
needs inside its function, so `esc --help` and shell completion stay fast.
"""

import atexit
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

try:  # typer 0.2x carries its own copy of click; older typers use the click package
    from typer._click.exceptions import UsageError
except ImportError:
    from click.exceptions import UsageError
try:  # `esc` alone (click 8.2 on); older clicks show the help without raising
    from typer._click.exceptions import NoArgsIsHelpError
except ImportError:
    try:
        from click.exceptions import NoArgsIsHelpError
    except ImportError:
        NoArgsIsHelpError = ()

from esccli import __version__
from esccli.cli import common
from esccli.errors import EscError, Interrupted
from esccli.interrupts import StopOnSignals, end_by


class OneLineUsageError(UsageError):
    """A mistake on the command line (an unknown option or command, a value out of range), shown as one red line
    that says where to look, instead of click's usage block; exit code 2 as click's."""

    def show(self, file=None) -> None:
        where = f" (see `{self.ctx.command_path} -h`)" if self.ctx else ""
        common.error_line(self.format_message() + where)


def _one_line(e: UsageError) -> UsageError:
    if isinstance(e, NoArgsIsHelpError):  # `esc` alone: the help, as click shows it, is not an error
        return e
    # typer 0.2x validates choices through pydantic, whose messages start "Value error, " (a Python word)
    message = e.format_message().replace(": Value error, ", ": ")
    if message.startswith("No such option: --data-dir") and e.ctx is not None and e.ctx.parent is not None:
        message = (f"--data-dir goes before the command: esc --data-dir DIR {e.ctx.info_name} ... "
                   "(or set ESC_HOME)")
    return OneLineUsageError(message, e.ctx)


class EscGroup(TyperGroup):
    """Turns our own errors, command-line mistakes and the machine's refusals (OSError, MemoryError) into one red
    line and an exit code; keeps commands in definition order."""

    def list_commands(self, ctx):
        return list(self.commands)

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as e:  # the group's own options
            raise _one_line(e) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UsageError as e:  # a subcommand's name, options or arguments
            raise _one_line(e) from None
        except Interrupted as e:  # it says what it kept
            common.error_line(str(e))
            raise _stopped(e.signum) from None
        except EscError as e:
            common.error_line(str(e))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            raise _stopped(None, say=True) from None
        except BrokenPipeError:  # `esc predict ... | head`: click ends quietly (exit 1), as a pipe's writer should
            raise
        except MemoryError:
            common.error_line("not enough memory for this; try a smaller --batch-size or picture size")
            raise typer.Exit(1) from None
        except RuntimeError as e:
            if not _worker_died(e):
                raise
            if common.state.stop is not None and common.state.stop.signum is not None:  # killed by the same signal
                raise _stopped(None, say=True) from None
            common.error_line("a worker process died (the machine may have run out of memory); "
                              "try fewer --jobs, or close other programs")
            raise typer.Exit(1) from None
        except OSError as e:  # the machine's refusal (permissions, a full disk, a vanished path), not a bug of ours
            what = f"{e.strerror or e}: {e.filename}" if e.filename else str(e.strerror or e)
            common.error_line(f"{what}; check that the path exists, is writable and the disk has room")
            raise typer.Exit(1) from None


def _stopped(signum: int | None, say: bool = False) -> typer.Exit:
    """A command stopped by a signal: `signum` if known, else the one esc got (Ctrl-C if none). It exits with the
    shell's code for it (130, 143), and `main` then ends esc by the signal itself; `say`: print which."""
    if signum is None:
        signum = common.state.stop.signum if common.state.stop is not None else None
    signum = signum or signal.SIGINT
    if say:
        common.error_line("terminated" if signum == signal.SIGTERM else "interrupted")
    common.state.stopped_by = signum
    return typer.Exit(128 + signum)


def _worker_died(e: BaseException) -> bool:
    """Whether `e` says a pool's worker process was killed under us (most often by the kernel, for memory).
    concurrent.futures is looked up rather than imported: it is loaded whenever one of its pools raised."""
    futures = sys.modules.get("concurrent.futures")
    return futures is not None and isinstance(e, futures.BrokenExecutor)


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
    ctx: typer.Context,
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", metavar="DIR", envvar="ESC_HOME", show_envvar=True,
        help="Where the dataset, feature caches and models live [default: the user data dir].",
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    common.state.data_dir = data_dir
    common.state.data_dir_given = getattr(ctx.get_parameter_source("data_dir"), "name", None) == "COMMANDLINE"


from esccli.cli import commands  # noqa: E402  (registers the subcommands on `app`)


def main() -> None:
    atexit.register(_end_by_the_signal)  # registered first, so it runs after every other exit handler
    with StopOnSignals() as stop:  # SIGTERM stops a command as Ctrl-C does (esccli/interrupts.py)
        common.state.stop = stop
        app(prog_name="esc")


def _end_by_the_signal() -> None:
    """A command stopped by a signal, once it has said what it kept, ends by that signal (the shell sees 130 or 143,
    and a shell loop stops on Ctrl-C), as Python does for an uncaught KeyboardInterrupt."""
    if common.state.stopped_by is not None:
        end_by(common.state.stopped_by)
