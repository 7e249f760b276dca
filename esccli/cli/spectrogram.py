"""`esc spectrogram`: draw a file's mel spectrogram, or with --raw the exact image the network sees."""

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from esccli.cli import common
from esccli.errors import EscError

MAX_PIXELS = 20000  # per side: about 1.6 GB of RGBA at 20000 x 20000


class Preset(str, Enum):
    """The names of esccli.features.PRESETS (a test keeps them equal), spelled out so --help needs no numpy."""

    default = "default"
    seed = "seed"


def spectrogram(
    file: Path = typer.Argument(
        ..., metavar="FILE", show_default=False,
        help="The audio file (any format soundfile reads: wav, flac, ogg...).",
    ),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", metavar="PNG", show_default=False,
        help="Where to write the PNG [default: the file's name with .png, in the current folder].",
    ),
    width: float = typer.Option(10.0, "--width", metavar="INCHES", min=1.0, max=100.0,
                                help="Picture width in inches."),
    height: float = typer.Option(4.0, "--height", metavar="INCHES", min=1.0, max=100.0,
                                 help="Picture height in inches."),
    dpi: int = typer.Option(100, "--dpi", metavar="N", min=10, max=1200, help=f"Pixels per inch (--width and --height times --dpi at most {MAX_PIXELS} pixels)."),
    raw: bool = typer.Option(
        False, "--raw",
        help="Write exactly what the network sees instead: the first clip's features as a grey image, "
             "one pixel per (mel band, frame); --width, --height and --dpi are ignored.",
    ),
    preset: Preset = typer.Option(Preset.default, "--preset", metavar="default|seed", help="Feature parameters to use."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output if it exists."),
) -> None:
    """Draw the mel spectrogram of an audio file as a PNG.

    The picture shows the whole file: time in seconds, frequency in Hz on a mel scale, loudness in dB below
    the file's loudest point. Long recordings are squeezed in time, keeping the loudest moments visible.
    """
    if not raw and max(width, height) * dpi > MAX_PIXELS:
        raise EscError(f"a picture of {width * dpi:.0f} x {height * dpi:.0f} pixels is too large to draw",
                       f"keep --width and --height times --dpi at most {MAX_PIXELS} pixels")
    from esccli import plotting
    from esccli.features import PRESETS

    if not file.exists():  # the first mistake to fix, before anything about the output
        raise EscError(f"{file}: no such file")
    out = output if output is not None else Path(file.stem + ".png")
    params = PRESETS[preset.value]
    if raw:
        written = plotting.raw_image(file, params, out, overwrite=force)
    else:
        written = plotting.spectrogram_figure(file, params, out, width, height, dpi, overwrite=force)
    common.out.print(str(written), markup=False)
