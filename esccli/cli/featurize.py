"""`esc featurize`: compute (or find in the cache) the log-mel features of every ESC-50 clip."""

from typing import Optional

import typer

from esccli.cli import common


def feature_params(preset: str, **overrides):
    """FeatureParams from a preset name and the options the user set (None = keep the preset's value)."""
    from dataclasses import replace

    from esccli.errors import EscError
    from esccli.features import PRESETS
    from esccli.featurize import check_params

    if preset not in PRESETS:
        raise EscError(f"unknown feature preset {preset!r}", f"choose one of: {', '.join(PRESETS)}")
    return check_params(replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}))


def build_features(params, jobs: Optional[int] = None, rebuild: bool = False):
    """Load the features from the cache or compute them, with a progress bar on stderr."""
    from esccli.featurize import load_or_build

    with common.progress_bar() as bar:
        task = bar.add_task("featurizing", total=None)
        fs = load_or_build(common.layout(), params, jobs=jobs, rebuild=rebuild,
                           progress=lambda done, total: bar.update(task, completed=done, total=total),
                           notify=common.note_line)
    return fs


def featurize(
    preset: str = typer.Option("default", "--preset", metavar="NAME", autocompletion=common.complete_feature_presets, help="Feature parameters by name: default (16 kHz, 64 mels) or seed (the notebook's 44.1 kHz, 128-mel image)."),
    sample_rate: Optional[int] = typer.Option(None, "--sample-rate", metavar="HZ", help="Internal sample rate (Hz)."),
    n_fft: Optional[int] = typer.Option(None, "--n-fft", metavar="N", help="STFT window length (samples)."),
    hop_length: Optional[int] = typer.Option(None, "--hop-length", metavar="N", help="STFT hop (samples)."),
    n_mels: Optional[int] = typer.Option(None, "--n-mels", metavar="N", help="Number of mel bands."),
    fmin: Optional[float] = typer.Option(None, "--fmin", metavar="HZ", help="Lowest mel frequency (Hz)."),
    fmax: Optional[float] = typer.Option(None, "--fmax", metavar="HZ", help="Highest mel frequency (Hz)."),
    top_db: Optional[float] = typer.Option(None, "--top-db", metavar="DB", help="dB floor below each clip's maximum."),
    scale: Optional[str] = typer.Option(None, "--scale", metavar="db|image", help="db ([-1, 1]) or image (0..255, the notebook)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, metavar="N",
                                       help="Worker processes [default: the cores, at most 8]."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Recompute even if an intact cache exists."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Compute log-mel features of all ESC-50 clips and cache them."""
    import time

    params = feature_params(preset, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                            fmin=fmin, fmax=fmax, top_db=top_db, scale=scale)
    t0 = time.perf_counter()
    fs = build_features(params, jobs, rebuild)
    seconds = time.perf_counter() - t0
    result = {"cache": str(fs.path), "clips": len(fs), "shape": list(fs.features.shape), "built": fs.built,
              "seconds": round(seconds, 2), "params": params.to_dict()}
    if as_json:
        common.print_json(result)
        return
    what = f"computed in {seconds:.1f} s" if fs.built else "found in the cache"
    common.err.print(f"{len(fs)} clips, features {fs.features.shape[1]}x{fs.features.shape[2]}, {what}")
    common.out.print(str(fs.path))
