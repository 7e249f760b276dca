"""The model store's listing: what it reads, and the index that spares it reading unchanged files."""

import dataclasses
import json
import shutil
import subprocess
import sys

import pytest

from esccli import checkpoint, store
from esccli.paths import layout


@pytest.fixture
def two_models(trained_model, esc_home):
    lay = layout(esc_home)
    lay.models.mkdir(parents=True)
    for name in ("a", "b"):
        shutil.copy(trained_model, lay.models / f"{name}.pt")
    return lay


@pytest.fixture
def reads(monkeypatch):
    """The model files whose metadata a listing read."""
    seen = []
    real = checkpoint.read_meta

    def counting(path):
        seen.append(path.name)
        return real(path)

    monkeypatch.setattr(checkpoint, "read_meta", counting)
    return seen


def listing(lay):
    return [dataclasses.asdict(i) for i in store.list_models(lay)]


def test_a_listing_reads_only_the_files_changed_since_the_last(two_models, reads):
    lay = two_models
    first = listing(lay)
    assert sorted(reads) == ["a.pt", "b.pt"] and first[0]["fold"] == 5 and first[0]["val_acc"] is not None
    assert listing(lay) == first and sorted(reads) == ["a.pt", "b.pt"]  # nothing read again
    # a model replaced (esc renames a new file over it) is read again; a deleted one leaves the index
    shutil.copy(lay.models / "a.pt", lay.models / "b.tmp")
    (lay.models / "b.tmp").replace(lay.models / "b.pt")
    (lay.models / "a.pt").unlink()
    reads.clear()
    assert [i["name"] for i in listing(lay)] == ["b"] and reads == ["b.pt"]
    index = json.loads((lay.models / store.INDEX_FILE).read_text())
    assert list(index["models"]) == ["b.pt"]


def test_a_broken_model_file_is_listed_with_its_error_and_read_again(two_models, reads, trained_model):
    lay = two_models
    (lay.models / "b.pt").write_bytes(b"not a model")
    assert "not a readable model file" in {i.name: i for i in store.list_models(lay)}["b"].error
    reads.clear()
    assert store.list_models(lay) and reads == ["b.pt"]  # a file esc cannot use is read each time, a is not
    reads.clear()
    shutil.copy(trained_model, lay.models / "b.pt")
    assert {i.name: i for i in store.list_models(lay)}["b"].error is None and reads == ["b.pt"]


@pytest.mark.parametrize("index", [
    "{not json",
    json.dumps({"version": store.INDEX_VERSION + 1, "models": {}}),
    json.dumps([1, 2]),
])
def test_an_index_esc_cannot_read_is_rebuilt(two_models, reads, index):
    lay = two_models
    first = listing(lay)
    (lay.models / store.INDEX_FILE).write_text(index)
    reads.clear()
    assert listing(lay) == first and sorted(reads) == ["a.pt", "b.pt"]
    assert json.loads((lay.models / store.INDEX_FILE).read_text())["version"] == store.INDEX_VERSION


def test_an_index_another_esc_wrote_is_not_believed(two_models, reads):
    # its rules may differ: an esc before the model-name rule indexed "my model.pt" as a usable model
    lay = two_models
    first = listing(lay)
    path = lay.models / store.INDEX_FILE
    index = json.loads(path.read_text())
    assert index["esc"] == store.__version__
    path.write_text(json.dumps({**index, "esc": "0.0.1"}))
    reads.clear()
    assert listing(lay) == first and sorted(reads) == ["a.pt", "b.pt"]


def test_an_index_entry_for_another_file_or_of_another_shape_is_not_believed(two_models, reads):
    lay = two_models
    first = listing(lay)
    path = lay.models / store.INDEX_FILE
    index = json.loads(path.read_text())
    index["models"]["a.pt"]["stamp"][0] += 1  # another size: another file
    index["models"]["b.pt"]["info"]["surprise"] = 1
    path.write_text(json.dumps(index))
    reads.clear()
    assert listing(lay) == first and sorted(reads) == ["a.pt", "b.pt"]


def test_a_store_esc_cannot_write_to_is_listed_all_the_same(two_models, reads, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "atomic_write_text", full)
    assert sorted(i.name for i in store.list_models(two_models)) == ["a", "b"] and sorted(reads) == ["a.pt", "b.pt"]
    assert not (two_models.models / store.INDEX_FILE).exists()
    reads.clear()
    store.list_models(two_models)
    assert sorted(reads) == ["a.pt", "b.pt"]  # read again each time, as before the index


def test_listing_unchanged_models_does_not_import_torch(two_models):
    store.list_models(two_models)  # the first listing reads the files
    code = (
        "import sys\n"
        "from esccli.cli import app\n"
        "try:\n    app(['models', '--json'], prog_name='esc')\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write('TORCH=' + str('torch' in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stderr.endswith("TORCH=False"), r.stderr
    assert sorted(m["name"] for m in json.loads(r.stdout)) == ["a", "b"]


def test_a_model_is_named_as_the_user_chose_it_not_as_it_was_trained(trained_model, esc_home, tmp_path):
    lay = layout(esc_home)
    lay.models.mkdir(parents=True)
    assert checkpoint.read_meta(trained_model)["name"] == "tiny"
    shutil.copy(trained_model, lay.models / "renamed.pt")  # renamed by hand, or a --save-best epoch
    shutil.copy(trained_model, lay.models / "sb.best.pt")
    shutil.copy(trained_model, tmp_path / "elsewhere.pt")
    assert [store.load(lay, n)[0].name for n in ("renamed", "sb.best", str(tmp_path / "elsewhere.pt"))] == \
        ["renamed", "sb.best", "elsewhere"]
    store.set_default(lay, "sb.best")
    assert store.load(lay, None)[0].name == "sb.best"
    if store.BUILTIN_PATH.is_file():
        assert store.load(lay, store.BUILTIN_NAME)[0].name == store.BUILTIN_NAME


def test_a_default_that_is_gone_is_said_once_where_it_is_used(two_models, synth_dataset, tmp_path):
    from typer.testing import CliRunner

    from esccli.cli import app

    runner = CliRunner()
    store.set_default(two_models, "a")
    assert store.lost_default(two_models) is None
    (two_models.models / "a.pt").rename(two_models.models / "renamed.pt")  # by hand
    assert store.lost_default(two_models) == "a" and store.default_name(two_models) in ("b", "renamed")
    says = "warning: the default model 'a' is gone; "
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0 and r.stderr.count(says) == 1 and "esc models --default NAME" in r.stderr
    wav = tmp_path / "x.wav"
    shutil.copy(next((synth_dataset / "audio").iterdir()), wav)
    r = runner.invoke(app, ["predict", str(wav)])
    assert r.exit_code == 0 and r.stderr.count(says) == 1, r.stderr
    r = runner.invoke(app, ["predict", "-m", "b", str(wav)])  # a model named: no default involved
    assert r.exit_code == 0 and says not in r.stderr
    store.set_default(two_models, "b")
    assert store.lost_default(two_models) is None and says not in runner.invoke(app, ["models"]).stderr


def test_a_file_whose_name_is_no_model_name_is_listed_as_such_and_never_the_default(two_models):
    shutil.copy(two_models.models / "a.pt", two_models.models / "my model.pt")  # copied in by hand; first of the
    # three when sorted (the same date; names break the tie)
    infos = {i.name: i for i in store.list_models(two_models)}
    assert "rename the file" in infos["my model"].error and store.default_name(two_models) in ("a", "b")
