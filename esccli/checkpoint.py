"""Model files: weights plus everything needed to use them, saved atomically, loaded without unpickling code.

A model file is a torch.save'd dict of plain types and tensors only, so that torch.load(weights_only=True)
reads it and a crafted pickle cannot run code:

    format, format_version, esc_version
    model:    ModelConfig as a dict (architecture, its arguments, input size, number of classes)
    features: FeatureParams as a dict
    classes:  the class names, in output order
    train:    recipe, held-out fold (None when trained on everything), seed, history, metrics, date, command,
              precision, and where it trained: device, cpu (its name) and threads (an ensemble: each member's,
              in members)
    state_dict, state_sha256 (a checksum of the weights, checked on load)
    optimizer, and ema (the moving average of the weights, when the recipe keeps one): resume files only
"""

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from esccli import __version__
from esccli.errors import ModelError
from esccli.features import FeatureParams, use_mel_basis
from esccli.fsutil import atomic_write

FORMAT = "esc-model"
FORMAT_VERSION = 1
ZIP_MAGIC = b"PK\x03\x04"  # what every file torch.save writes starts with (a zip archive)


@dataclass
class LoadedModel:
    model: object  # torch.nn.Module, in eval mode
    meta: dict  # the file's dict without state_dict/optimizer
    path: Path | None

    @property
    def params(self) -> FeatureParams:
        return FeatureParams.from_dict(self.meta["features"])

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def fold(self) -> int | None:
        return self.meta["train"].get("fold")

    @property
    def name(self) -> str:
        return self.meta.get("name") or (self.path.stem if self.path else "model")


def state_checksum(state_dict, mel_basis=None) -> str:
    """sha256 over the weights (names, shapes, bytes) and, when the file carries one, the mel filterbank."""
    tensors = dict(state_dict)
    if mel_basis is not None:
        tensors["\0mel_basis"] = mel_basis
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k]
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(dtype=_byte_dtype()).numpy().tobytes())
    return h.hexdigest()


def _byte_dtype():
    import torch

    return torch.uint8


def save(path: Path, meta: dict, state_dict, optimizer_state=None, ema_state=None) -> None:
    """Write a model (or resume) file atomically: a crash or a full disk leaves the previous file intact."""
    import torch

    blob = dict(meta)
    blob.update(format=FORMAT, format_version=FORMAT_VERSION, esc_version=__version__,
                state_dict=state_dict, state_sha256=state_checksum(state_dict, meta.get("mel_basis")))
    if optimizer_state is not None:
        blob["optimizer"] = optimizer_state
    if ema_state is not None:
        blob["ema"] = ema_state
    buf = io.BytesIO()
    torch.save(blob, buf)
    with atomic_write(Path(path)) as f:
        f.write(buf.getbuffer())


def read(path: Path) -> dict:
    """The raw dict of a model file, checked: readable, the right format and version, weights intact."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no model file at {path}")
    with open(path, "rb") as f:
        if f.read(len(ZIP_MAGIC)) != ZIP_MAGIC:  # a sound, a text...: not torch's format (a zip) at all
            raise ModelError(f"{path}: not a model file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise ModelError(f"{path}: not a model file") from None
        raise ModelError(f"{path}: refused to load: it contains objects other than weights and plain data "
                         "(loading it could run code)") from None
    except Exception as e:
        raise ModelError(f"{path}: not a readable model file (truncated or damaged: {type(e).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelError(f"{path}: not an esc model file")
    if blob.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path}: model file format {blob.get('format_version')} (from esc {blob.get('esc_version')}) "
                         f"is not supported by esc {__version__} (format {FORMAT_VERSION})",
                         "retrain it with this version, or use the esc version that made it")
    for key in ("model", "features", "classes", "train", "state_dict", "state_sha256"):
        if key not in blob:
            raise ModelError(f"{path}: model file lacks its {key!r} entry")
    if state_checksum(blob["state_dict"], blob.get("mel_basis")) != blob["state_sha256"]:
        raise ModelError(f"{path}: the weights do not match their checksum (the file is damaged)")
    if not all(torch.isfinite(t).all() for t in blob["state_dict"].values() if t.is_floating_point()):
        raise ModelError(f"{path}: some of its weights are not finite numbers (its training diverged), so it "
                         "cannot predict anything", "train it again with a lower --lr")
    return blob


def load(path: Path, device: str = "cpu") -> LoadedModel:
    """A ready-to-use model (eval mode) and its metadata."""
    from esccli.models import ModelConfig, build_model, with_test_shifts

    blob = read(path)
    try:
        config = ModelConfig.from_dict(blob["model"])
        model = build_model(config)
        model.load_state_dict(blob["state_dict"])
        params = FeatureParams.from_dict(blob["features"])
        if "mel_basis" in blob:
            use_mel_basis(params, blob["mel_basis"].numpy())
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        raise ModelError(f"{path}: the model description does not match its weights ({str(e).splitlines()[0][:160]})") from None
    recipe = blob["train"].get("recipe", {}) if isinstance(blob["train"], dict) else None
    shifts = recipe.get("test_shifts", [0]) if isinstance(recipe, dict) else None  # [0]: files from before the field
    if not (isinstance(shifts, list) and shifts and all(type(b) is int for b in shifts)):
        raise ModelError(f"{path}: its test_shifts {shifts!r} are not a list of whole mel-bin moves (the file is damaged)")
    model = with_test_shifts(model, shifts).to(device).eval()  # scored as it was in training
    meta = {k: v for k, v in blob.items() if k not in ("state_dict", "optimizer", "ema", "mel_basis")}
    return LoadedModel(model, meta, Path(path))


def read_meta(path: Path) -> dict:
    """A model file's metadata only (weights memory-mapped, not checked): for listing many models quickly."""
    import torch

    try:
        blob = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise ModelError(f"{path}: not a readable model file ({type(e).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelError(f"{path}: not an esc model file")
    return {k: v for k, v in blob.items() if k not in ("state_dict", "optimizer", "ema", "mel_basis")}
