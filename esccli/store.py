"""The model store: trained models in `<data>/models/<name>.pt`, the user's default, and the built-in model.

Which model `predict` and `eval` use when none is named: the one marked with `esc models --default NAME`
(kept in `<data>/models/DEFAULT`), else the most recently trained one, else the model shipped with esc.

Listing the models reads each file's metadata, which needs torch (seconds to import). What a listing found is kept
in `<data>/models/.index.json`, by each file's size, times and inode, so that a listing of files unchanged since
reads no model file and imports no torch. The index is only ever a cache: a file it does not describe as it is now
is read again, so is a file esc could not use, and an index that cannot be read or written, or that another
version of esc wrote, is ignored.
"""

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from esccli import __version__, checkpoint
from esccli.errors import ModelError
from esccli.fsutil import atomic_write_text, remove_stale_temporaries
from esccli.paths import Layout

SUFFIX = ".pt"
DEFAULT_FILE = "DEFAULT"
INDEX_FILE = ".index.json"  # what the last listing found in each model file (list_models)
# an index written by another esc, or under other rules (bumped when ModelInfo's fields or how a file is judged
# change), is rebuilt
INDEX_VERSION = 2
BUILTIN_NAME = "builtin"
BUILTIN_PATH = Path(__file__).parent / "assets" / "esc-default.pt"
EXAMPLES_DIR = Path(__file__).parent / "assets" / "examples"  # a few ESC-50 clips (CC BY-NC 3.0)


@dataclass
class ModelInfo:
    name: str
    path: Path
    arch: str
    fold: int | None
    val_acc: float | None
    created: str | None
    epochs: int | None
    is_default: bool = False
    selected_on_fold: bool = False
    members: int = 1  # networks averaged (an ensemble: arch "ensemble", each a `member_arch`, or, for members of
    # several architectures, their archs joined by "+": "escnet+escnet+texture")
    member_arch: str | None = None
    error: str | None = None


def model_path(layout: Layout, name: str) -> Path:
    return layout.models / f"{name}{SUFFIX}"


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
BEST, RESUME = ".best", ".resume"  # <name>.best.pt (--save-best) and <name>.resume.pt belong to model <name>
SIDE_FILES = (BEST, RESUME)


def valid_name(name: str) -> str:
    if name == BUILTIN_NAME:
        raise ModelError(f"{BUILTIN_NAME!r} is the name of the built-in model", "choose another name")
    if not NAME.fullmatch(name or "") or name.endswith(SIDE_FILES):
        raise ModelError(f"bad model name {name!r}", "use letters, digits, '-', '_' and '.', starting with a letter "
                         f"or digit, not ending in {' or '.join(SIDE_FILES)}")
    return name


def _is_model_file(p: Path) -> bool:
    return p.suffix == SUFFIX and not p.name.endswith(RESUME + SUFFIX) and not p.name.startswith(".")


def list_models(layout: Layout) -> list[ModelInfo]:
    """Every model in the store, newest first, with the default marked. A file unchanged since the last listing is
    not read again (INDEX_FILE)."""
    infos, index, seen = [], _read_index(layout), {}
    if layout.models.is_dir():
        for p in layout.models.iterdir():
            if not _is_model_file(p):
                continue
            try:
                stamp = _stamp(p)
            except OSError:  # gone since iterdir, or unreadable: read_meta says which
                stamp = None
            info = _indexed(index.get(p.name), stamp, p)
            if info is None:
                info = _read_info(p)
            infos.append(info)
            if stamp is not None and info.error is None:  # a file esc cannot use is read again each time
                seen[p.name] = {"stamp": stamp, "info": _indexable(info)}
        if seen != index:
            _write_index(layout, seen)
    infos.sort(key=lambda i: (i.created or "", i.name), reverse=True)
    default = default_name(layout, infos)
    for i in infos:
        i.is_default = i.name == default
    return infos


def _read_info(p: Path) -> ModelInfo:
    """A model file's listing, from its metadata (a file whose name is not a model name, copied in by hand, is
    listed with that error, and so never becomes the default)."""
    name = p.name[: -len(SUFFIX)]
    if not NAME.fullmatch(name):
        return ModelInfo(name, p, "?", None, None, None, None,
                         error="not a model name: rename the file (letters, digits, '-', '_' and '.')")
    try:
        meta = checkpoint.read_meta(p)
        t = meta["train"]
        return ModelInfo(name, p, meta["model"]["arch"], t.get("fold"), t.get("metrics", {}).get("val_acc"),
                         t.get("created"), t.get("epochs_done"), selected_on_fold=bool(t.get("selected_on_fold")),
                         **_members(meta["model"]))
    except (ModelError, KeyError, TypeError) as e:
        return ModelInfo(name, p, "?", None, None, None, None, error=str(e))


def _stamp(p: Path) -> list[int]:
    """What changes when a file is written or replaced: its size, modification and status-change times (ns), and
    inode number (esc replaces a model by renaming a new file over it)."""
    st = p.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


_NOT_INDEXED = ("name", "path", "is_default")  # known without reading the file, or decided by the whole listing


def _indexable(info: ModelInfo) -> dict:
    return {k: v for k, v in asdict(info).items() if k not in _NOT_INDEXED}


def _indexed(entry, stamp: list[int] | None, p: Path) -> ModelInfo | None:
    """The index's listing of `p`, if the index has one for the file as it is now."""
    if stamp is None or not isinstance(entry, dict) or entry.get("stamp") != stamp:
        return None
    info = entry.get("info")
    if not isinstance(info, dict) or set(info) != {f.name for f in fields(ModelInfo)} - set(_NOT_INDEXED):
        return None
    return ModelInfo(name=p.name[: -len(SUFFIX)], path=p, **info)


def _read_index(layout: Layout) -> dict:
    try:
        blob = json.loads((layout.models / INDEX_FILE).read_text())
    except (OSError, ValueError):
        return {}
    ok = (isinstance(blob, dict) and blob.get("version") == INDEX_VERSION and blob.get("esc") == __version__
          and isinstance(blob.get("models"), dict))
    return blob["models"] if ok else {}


def _write_index(layout: Layout, models: dict) -> None:
    """Keep the listing for the next one; a store esc cannot write to is listed all the same, only more slowly."""
    try:
        remove_stale_temporaries(layout.models, [INDEX_FILE])
        atomic_write_text(layout.models / INDEX_FILE,
                          json.dumps({"version": INDEX_VERSION, "esc": __version__, "models": models}))
    except OSError:
        pass


def _members(model: dict) -> dict:
    """ModelInfo's members and member_arch from a model file's `model` entry."""
    if model["arch"] != "ensemble":
        return {"members": 1, "member_arch": None}
    return {"members": model["args"]["members"], "member_arch": model["args"]["member"]}


def default_name(layout: Layout, infos: list[ModelInfo] | None = None) -> str | None:
    """The name of the model predict and eval use when none is given: the marked one (BUILTIN_NAME when the
    built-in model is marked), else the newest stored one; None when the store is empty."""
    marked = _marked(layout)
    if marked and _usable_name(layout, marked):
        return marked
    infos = infos if infos is not None else list_models(layout)
    usable = [i for i in infos if i.error is None and not i.name.endswith(BEST)]
    return usable[0].name if usable else None


def lost_default(layout: Layout) -> str | None:
    """The name `esc models --default` chose, if no model goes by it any more (deleted, renamed, or replaced by a
    training with --force that saved no such --save-best epoch): the newest model is used instead."""
    marked = _marked(layout)
    return marked if marked and not _usable_name(layout, marked) else None


def _marked(layout: Layout) -> str | None:
    """The name in DEFAULT_FILE, if there is one."""
    try:
        return (layout.models / DEFAULT_FILE).read_text().strip() or None
    except OSError:
        return None


def _usable_name(layout: Layout, name: str) -> bool:
    return model_path(layout, name).is_file() or (name == BUILTIN_NAME and BUILTIN_PATH.is_file())


def set_default(layout: Layout, name: str) -> None:
    """Mark a stored model, or the built-in one (BUILTIN_NAME), as the one predict and eval use."""
    if name == BUILTIN_NAME:
        if not BUILTIN_PATH.is_file():
            raise ModelError("this installation of esc has no built-in model")
    else:
        valid_name(name.removesuffix(BEST))  # a model's --save-best epoch may be the default too
        if not model_path(layout, name).is_file():
            raise ModelError(f"no model named {name!r} in {layout.models}", "see `esc models` for the names")
        try:
            checkpoint.read(model_path(layout, name))  # checked as predict and eval load it: they could not use it
        except ModelError as e:
            raise ModelError(f"{e}; the default model stays as it was") from None
    atomic_write_text(layout.models / DEFAULT_FILE, name + "\n")


def resolve(layout: Layout, name_or_path: str | None) -> tuple[Path, bool]:
    """(model file, is_builtin) for a name, a path, or None (the default)."""
    if name_or_path in (None, ""):
        name = default_name(layout)
        if name == BUILTIN_NAME:
            return BUILTIN_PATH, True
        if name:
            return model_path(layout, name), False
        if BUILTIN_PATH.is_file():
            return BUILTIN_PATH, True
        raise ModelError("no trained model and no built-in model", "train one with `esc train`")
    if name_or_path == BUILTIN_NAME:
        if not BUILTIN_PATH.is_file():
            raise ModelError("this installation of esc has no built-in model")
        return BUILTIN_PATH, True
    p = Path(name_or_path).expanduser()
    mp = model_path(layout, name_or_path)
    if p.suffix != SUFFIX and "/" not in name_or_path and mp.is_file():  # a stored model's name before a file's
        return mp, False
    if p.suffix == SUFFIX or "/" in name_or_path or p.is_file():
        if not p.is_file():
            raise ModelError(f"no model file at {p}")
        return p, p.resolve() == BUILTIN_PATH.resolve()
    names = [i.name for i in list_models(layout)]
    raise ModelError(f"no model named {name_or_path!r}",
                     f"known: {', '.join(names[:10])}" if names else "train one with `esc train`")


def load(layout: Layout, name_or_path: str | None, device: str = "cpu"):
    """(LoadedModel, is_builtin), named as the user chose it: the built-in model BUILTIN_NAME, as `-m` and `esc
    models` name it (its file says where it came from: esc-default), any other by its file (a --save-best epoch
    `NAME.best`, a file renamed or copied by hand by its new name), not by the name it was trained as."""
    path, builtin = resolve(layout, name_or_path)
    lm = checkpoint.load(path, device)
    lm.meta["name"] = BUILTIN_NAME if builtin else path.name.removesuffix(SUFFIX)
    return lm, builtin
