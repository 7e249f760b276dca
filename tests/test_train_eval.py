import dataclasses
import json
import os
import pickle
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_recipe
from esccli import checkpoint, store
from esccli.classes import CLASS_NAMES
from esccli.cli import app
from esccli.errors import EscError, ModelError
from esccli.evaluate import OUTPUT_FILES, check_fold, evaluate
from esccli.metrics import category_confusion, confusion, report
from esccli.paths import layout
from esccli import train as train_module
from esccli.train import TrainingInterrupted, cpu_name, cpuinfo_field, lr_at, resolve_precision, train
from synthetic import assert_one_line_error, install

runner = CliRunner()



def states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_learns_the_synthetic_classes(trained_model, synth_features):
    lm = checkpoint.load(trained_model)
    rep = evaluate(lm, synth_features, fold=5)
    assert rep.clips == 50
    assert rep.accuracy > 0.6  # chance is 2 %
    hist = lm.meta["train"]["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert lm.meta["train"]["metrics"]["val_acc"] == pytest.approx(rep.accuracy)


def test_model_file_carries_its_metadata(trained_model):
    meta = checkpoint.read(trained_model)
    assert meta["classes"] == list(CLASS_NAMES)
    assert meta["features"]["n_mels"] == 32 and meta["features"]["clip_seconds"] == 1.0
    assert meta["model"]["arch"] == "escnet"
    assert meta["train"]["fold"] == 5 and meta["train"]["seed"] == 0
    assert meta["train"]["recipe"]["epochs"] == len(meta["train"]["history"])
    assert meta["esc_version"]


def test_a_model_records_where_it_trained(tmp_path, synth_features):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        meta = train(synth_features, tiny_recipe(epochs=1), tmp_path / "one.pt", fold=5).meta["train"]
    finally:
        torch.set_num_threads(threads)
    assert meta["threads"] == 1 and meta["device"] == "cpu" and isinstance(meta["cpu"], str)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2\nmodel name\t: AMD  EPYC 7B13\n\nprocessor\t: 1\n")
    assert cpu_name(str(info)) == "AMD EPYC 7B13" and cpuinfo_field("flags", str(info)) == "fpu avx2"
    info.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\n")  # no model name (some ARM CPUs)
    assert cpu_name(str(info)) == cpu_name(str(tmp_path / "absent")) == (platform.processor() or platform.machine())


def test_same_seed_same_model_and_resume_equals_uninterrupted(tmp_path, synth_features):
    recipe = tiny_recipe(epochs=3, mixup_alpha=0.4, crop_frames=40, stretch=1.2, freq_shift=2, freq_masks=1,
                         time_masks=1)
    a = train(synth_features, recipe, tmp_path / "a.pt", fold=5, seed=3)
    b = train(synth_features, recipe, tmp_path / "b.pt", fold=5, seed=3)
    assert states_equal(checkpoint.read(a.path)["state_dict"], checkpoint.read(b.path)["state_dict"])

    def stop_after_first(stats):
        if stats.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(synth_features, recipe, tmp_path / "c.pt", fold=5, seed=3, on_epoch=stop_after_first)
    assert not (tmp_path / "c.pt").exists() and (tmp_path / "c.resume.pt").exists()
    c = train(synth_features, recipe, tmp_path / "c.pt", fold=5, seed=3, resume=True)
    assert c.resumed_from == 1
    assert states_equal(checkpoint.read(a.path)["state_dict"], checkpoint.read(c.path)["state_dict"])
    assert [h["val_acc"] for h in a.history] == [h["val_acc"] for h in c.history]
    assert not (tmp_path / "c.resume.pt").exists()

    d = train(synth_features, recipe, tmp_path / "d.pt", fold=5, seed=4)
    assert not states_equal(checkpoint.read(a.path)["state_dict"], checkpoint.read(d.path)["state_dict"])


def test_a_moving_average_of_the_weights_is_scored_saved_and_resumed(tmp_path, synth_features):
    plain = train(synth_features, tiny_recipe(epochs=3), tmp_path / "plain.pt", fold=5)
    recipe = tiny_recipe(epochs=3, ema_decay=0.9)
    avg = train(synth_features, recipe, tmp_path / "avg.pt", fold=5)
    # the training itself is the same: the average is a bystander, and the last step's weights are plain's
    assert avg.meta["train"]["metrics"]["last_step_val_acc"] == plain.meta["train"]["metrics"]["val_acc"]
    saved = checkpoint.read(avg.path)["state_dict"]
    plain_state = checkpoint.read(plain.path)["state_dict"]
    assert saved.keys() == plain_state.keys() and not states_equal(saved, plain_state)
    lm = checkpoint.load(avg.path)  # what is saved is what was scored
    assert evaluate(lm, synth_features, fold=5).accuracy == pytest.approx(avg.meta["train"]["metrics"]["val_acc"])
    # an interrupted run keeps its average in the resume file and ends with the same one
    with pytest.raises(TrainingInterrupted):
        train(synth_features, recipe, tmp_path / "r.pt", fold=5,
              on_epoch=lambda s: (_ for _ in ()).throw(KeyboardInterrupt))
    assert "ema" in checkpoint.read(tmp_path / "r.resume.pt")
    resumed = train(synth_features, recipe, tmp_path / "r.pt", fold=5, resume=True)
    assert resumed.resumed_from == 1 and states_equal(saved, checkpoint.read(resumed.path)["state_dict"])
    assert "last_step_val_acc" not in plain.meta["train"]["metrics"]


def test_test_shifts_change_how_a_model_is_scored_and_predicts_not_its_weights(tmp_path, synth_features):
    from esccli.augment import shift_mel
    from esccli.models import ShiftAverage

    plain = train(synth_features, tiny_recipe(epochs=2), tmp_path / "plain.pt", fold=5)
    shifts = [-1, 0, 2]
    shifted = train(synth_features, tiny_recipe(epochs=2, test_shifts=shifts), tmp_path / "shifted.pt", fold=5)
    assert states_equal(checkpoint.read(plain.path)["state_dict"], checkpoint.read(shifted.path)["state_dict"])
    lm = checkpoint.load(shifted.path)
    assert isinstance(lm.model, ShiftAverage) and not isinstance(checkpoint.load(plain.path).model, ShiftAverage)
    x = torch.from_numpy(synth_features.features[:6]).float().unsqueeze(1)
    with torch.no_grad():
        mean = torch.stack([lm.model.net(shift_mel(x, torch.full((6,), b))).softmax(-1) for b in shifts]).mean(0)
        assert torch.allclose(lm.model(x).softmax(-1), mean, atol=1e-6)
    rep = evaluate(lm, synth_features, fold=5)  # evaluation predicts as the training scored
    assert rep.accuracy == pytest.approx(shifted.meta["train"]["metrics"]["val_acc"])
    # the same weights, but scored otherwise: a stored score counts only for a recipe with the same shifts
    precision = shifted.meta["train"]["precision"]
    assert tiny_recipe(epochs=2, test_shifts=shifts).made(shifted.meta["train"], 5, 0, precision)
    assert not tiny_recipe(epochs=2).made(shifted.meta["train"], 5, 0, precision)


def test_validating_every_n_epochs_changes_only_which_epochs_are_scored(tmp_path, synth_features):
    every = train(synth_features, tiny_recipe(epochs=5, val_every=1), tmp_path / "every.pt", fold=5)
    sparse_recipe = tiny_recipe(epochs=5, val_every=2)
    sparse = train(synth_features, sparse_recipe, tmp_path / "sparse.pt", fold=5)
    assert states_equal(checkpoint.read(every.path)["state_dict"], checkpoint.read(sparse.path)["state_dict"])
    scored = {h["epoch"]: h["val_acc"] for h in sparse.history if h["val_acc"] is not None}
    assert sorted(scored) == [2, 4, 5]  # every 2nd epoch, and the last
    assert scored == {h["epoch"]: h["val_acc"] for h in every.history if h["epoch"] in scored}
    assert all(h["val_loss"] is None for h in sparse.history if h["epoch"] not in scored)
    assert sparse.meta["train"]["metrics"] == every.meta["train"]["metrics"]

    # the same training: an interrupted run resumes under another val_every, and ends with the same weights
    with pytest.raises(TrainingInterrupted):
        train(synth_features, sparse_recipe, tmp_path / "r.pt", fold=5,
              on_epoch=lambda s: (_ for _ in ()).throw(KeyboardInterrupt))
    resumed = train(synth_features, tiny_recipe(epochs=5, val_every=3), tmp_path / "r.pt", fold=5, resume=True)
    assert resumed.resumed_from == 1 and [h["epoch"] for h in resumed.history if h["val_acc"] is not None] == [3, 5]
    assert states_equal(checkpoint.read(every.path)["state_dict"], checkpoint.read(resumed.path)["state_dict"])

    best = train(synth_features, sparse_recipe, tmp_path / "b.pt", fold=5, save_best=True)  # picks among all epochs
    assert all(h["val_acc"] is not None for h in best.history)


def test_a_best_epoch_left_by_a_replaced_model_goes_with_it(tmp_path, synth_features):
    recipe = tiny_recipe(epochs=2)
    train(synth_features, recipe, tmp_path / "m.pt", fold=5, save_best=True)
    assert (tmp_path / "m.best.pt").is_file()
    train(synth_features, recipe, tmp_path / "m.pt", fold=5, seed=1)  # --force, without --save-best
    assert not (tmp_path / "m.best.pt").exists() and (tmp_path / "m.pt").is_file()
    # a run's own best epoch stays when it is resumed without --save-best
    with pytest.raises(TrainingInterrupted):
        train(synth_features, recipe, tmp_path / "r.pt", fold=5, save_best=True,
              on_epoch=lambda s: (_ for _ in ()).throw(KeyboardInterrupt))
    best = (tmp_path / "r.best.pt").read_bytes()
    train(synth_features, recipe, tmp_path / "r.pt", fold=5, resume=True)
    assert (tmp_path / "r.best.pt").read_bytes() == best
    # a file esc cannot read is not deleted
    (tmp_path / "m.best.pt").write_bytes(b"not a model")
    train(synth_features, recipe, tmp_path / "m.pt", fold=5)
    assert (tmp_path / "m.best.pt").read_bytes() == b"not a model"


def test_an_interruption_says_how_many_epochs_the_resume_file_holds(tmp_path, synth_features, monkeypatch):
    recipe = tiny_recipe(epochs=3)

    def interrupt_at(step):
        def on_step(done, steps):
            if done == step:
                raise KeyboardInterrupt
        return on_step

    with pytest.raises(TrainingInterrupted, match="before its first epoch ended; nothing was saved") as e:
        train(synth_features, recipe, tmp_path / "m.pt", fold=5, on_step=interrupt_at(1))
    assert "--resume" not in str(e.value) and not (tmp_path / "m.resume.pt").exists()
    with pytest.raises(TrainingInterrupted, match="after 1 of 3 epochs") as e:
        train(synth_features, recipe, tmp_path / "m.pt", fold=5, on_epoch=lambda s: (_ for _ in ()).throw(KeyboardInterrupt))
    assert "--resume" in str(e.value)
    # interrupted while the second epoch's resume file is written: it still holds the first
    saved = checkpoint.save

    def interrupted_save(path, meta, *a, **kw):
        if len(meta["train"]["history"]) == 2:
            raise KeyboardInterrupt
        return saved(path, meta, *a, **kw)

    monkeypatch.setattr(checkpoint, "save", interrupted_save)
    with pytest.raises(TrainingInterrupted, match="after 1 of 3 epochs"):
        train(synth_features, recipe, tmp_path / "m.pt", fold=5, resume=True)
    assert len(checkpoint.read_meta(tmp_path / "m.resume.pt")["train"]["history"]) == 1


def test_resume_refuses_other_settings(tmp_path, synth_features):
    recipe = tiny_recipe(epochs=2)
    with pytest.raises(TrainingInterrupted):
        train(synth_features, recipe, tmp_path / "m.pt", fold=5, on_epoch=lambda s: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(ModelError, match=r"other settings: fold 5 \(now 4\) \(run again without --resume"):
        train(synth_features, recipe, tmp_path / "m.pt", fold=4, resume=True)
    with pytest.raises(ModelError, match=r"other settings: epochs 2 \(now 3\); lr 0\.\d+ \(now 0\.5\)"):
        train(synth_features, recipe.with_overrides(epochs=3, lr=0.5), tmp_path / "m.pt", fold=5, resume=True)
    with pytest.raises(TrainingInterrupted):
        train(synth_features, recipe, tmp_path / "p.pt", fold=5, precision="fp32",
              on_epoch=lambda s: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(ModelError, match="other settings: precision 'fp32' \\(now 'bf16'\\)"):
        train(synth_features, recipe, tmp_path / "p.pt", fold=5, precision="bf16", resume=True)
    # the same settings on other clips (a dataset fetched again between the two runs)
    keep = np.arange(len(synth_features) - 1)
    fewer = dataclasses.replace(synth_features, features=synth_features.features[keep],
                                targets=synth_features.targets[keep], folds=synth_features.folds[keep],
                                filenames=synth_features.filenames[:-1])
    with pytest.raises(ModelError, match="other settings: features or clips"):
        train(fewer, recipe, tmp_path / "m.pt", fold=5, resume=True)
    assert train(synth_features, recipe, tmp_path / "m.pt", fold=5, resume=True).resumed_from == 1


def test_a_feature_set_knows_the_models_trained_on_it(synth_features, trained_model):
    meta = checkpoint.read_meta(trained_model)
    assert meta["train"]["clips_digest"] == synth_features.digest() and synth_features.made(meta)
    older = {**meta, "train": {k: v for k, v in meta["train"].items() if k != "clips_digest"}}
    assert synth_features.made(older)
    moved = dataclasses.replace(synth_features, folds=np.roll(synth_features.folds, 1))  # same clips, other folds
    assert moved.digest() != synth_features.digest() and not moved.made(meta)
    other = dataclasses.replace(synth_features, params=dataclasses.replace(synth_features.params, n_mels=8))
    assert not other.made(meta)


def test_models_made_before_a_later_recipe_field_count_at_its_old_behaviour():
    from esccli.recipes import LATER_FIELDS, get_recipe

    one = dataclasses.replace(get_recipe("default").member(), eq_db=0.0)  # the default's network before round 5
    old = {k: v for k, v in one.to_dict().items() if k not in LATER_FIELDS}  # as recorded before those fields
    meta = {"recipe": old, "fold": 1, "seed": 0, "precision": "bf16"}
    assert one.made(meta, 1, 0, "bf16")
    assert not get_recipe("default").member().made(meta, 1, 0, "bf16")  # today's filters: not the same training
    assert not one.with_overrides(stretch=1.25).made(meta, 1, 0, "bf16")
    assert not get_recipe("default").made(meta, 1, 0, "bf16")  # three members: not what a single network was
    assert not one.made({**meta, "recipe": {**old, "crop_energy": False}}, 1, 0, "bf16")
    assert one.with_overrides(val_every=3).made(meta, 1, 0, "bf16")  # validating more or less trains the same
    # `--members 1` on the default keeps its (unused) variants in the recorded recipe: still the same training
    single = get_recipe("default").with_overrides(members=1, eq_db=0.0)
    assert single.member_variants != [{}] and one.made({**meta, "recipe": single.to_dict()}, 1, 0, "bf16")


def test_learning_rate_schedules():
    r = tiny_recipe(epochs=10, lr=1.0, warmup_epochs=2)
    assert lr_at(r, 0, 0, 10) == pytest.approx(0.05)
    assert lr_at(r, 2, 0, 10) == pytest.approx(1.0)
    assert lr_at(r, 9, 9, 10) < 0.01
    seed = tiny_recipe(schedule="step", lr=2e-5, step_every=20, step_gamma=0.1, epochs=60)
    assert [lr_at(seed, e, 0, 100) for e in (0, 19, 20, 40)] == pytest.approx([2e-5, 2e-5, 2e-6, 2e-7])


def test_metrics():
    y = np.array([0, 0, 1, 1, 12, 12])
    p = np.array([0, 1, 1, 1, 12, 0])
    m = confusion(y, p)
    assert m.sum() == 6 and m[0, 1] == 1 and m[12, 0] == 1
    cm = category_confusion(m)
    assert cm.shape == (5, 5) and cm.sum() == 6 and cm[1, 0] == 1
    rep = report(y, p)
    assert rep.accuracy == pytest.approx(4 / 6)
    worst = rep.per_class[0]
    assert worst.recall == 0.5 and worst.confused_with in ("dog", "rooster")
    assert rep.top_confusions[0][2] == 1


def test_eval_refuses_folds_the_model_was_trained_on(trained_model):
    lm = checkpoint.load(trained_model)
    assert check_fold(lm, None, False, False) == (5, True, None)
    with pytest.raises(EscError, match="not be a held-out result"):
        check_fold(lm, 2, False, False)
    fold, held_out, note = check_fold(lm, 2, False, True)
    assert not held_out and "NOT a held-out" in note


def test_cli_eval_json_and_outputs(trained_model, synth_dataset, esc_home, tmp_path):
    install(synth_dataset, esc_home)
    r = runner.invoke(app, ["eval", "--model", str(trained_model), "--json", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["fold"] == 5 and d["held_out"] is True
    assert np.array(d["confusion_matrix"]).sum() == 50
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(OUTPUT_FILES) == [
        "categories.csv", "confusion.csv", "confusion.png", "per_class.csv"]  # what --force guards is what is written
    rows = (tmp_path / "out" / "confusion.csv").read_text().splitlines()
    assert len(rows) == 51 and sum(int(v) for row in rows[1:] for v in row.split(",")[1:]) == 50

    r = runner.invoke(app, ["eval", "--model", str(trained_model), "--full"])
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.stdout and "most confused" in r.stdout and "rows: true" in r.stdout


def test_a_full_disk_while_writing_reports_names_the_file_and_what_was_written(trained_model, synth_features,
                                                                               tmp_path, monkeypatch):
    import esccli.evaluate as evaluate_module

    rep = evaluate(checkpoint.load(trained_model), synth_features, fold=5)
    real, calls = evaluate_module.atomic_write_text, []

    def full_on_the_second(path, text):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, text)

    monkeypatch.setattr(evaluate_module, "atomic_write_text", full_on_the_second)
    with pytest.raises(EscError) as e:
        evaluate_module.write_outputs(rep, tmp_path / "out")
    assert str(e.value) == (f"cannot write {tmp_path / 'out' / 'categories.csv'}: No space left on device; "
                            "confusion.csv written (use --force to replace them)")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["confusion.csv"]


def test_cli_eval_out_keeps_reports_already_there(trained_model, synth_dataset, esc_home, tmp_path):
    install(synth_dataset, esc_home)
    out = tmp_path / "out"
    out.mkdir()
    (out / "per_class.csv").write_text("mine\n")
    (out / "notes.txt").write_text("mine too\n")
    r = runner.invoke(app, ["eval", "--model", str(trained_model), "--out", str(out)])
    assert r.exit_code == 1 and "already holds per_class.csv" in r.stderr and "--force" in r.stderr
    assert r.stdout == ""  # refused before the evaluation
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "per_class.csv"]
    assert (out / "per_class.csv").read_text() == "mine\n"

    r = runner.invoke(app, ["eval", "--model", str(trained_model), "--out", str(out), "--force"])
    assert r.exit_code == 0, r.output
    assert (out / "per_class.csv").read_text().startswith("class,support,") and (out / "notes.txt").exists()

    r = runner.invoke(app, ["eval", "--model", str(trained_model), "--out", str(out / "notes.txt")])
    assert r.exit_code == 1 and "is not a folder" in r.stderr
    assert (out / "notes.txt").read_text() == "mine too\n"


def test_precision_auto_uses_bf16_only_where_the_cpu_has_it(monkeypatch):
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu", allow_bf16=False) == "fp32"  # the seed recipe stays fp32
    assert resolve_precision("fp32", "cpu") == "fp32"
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"  # asked for explicitly
    with pytest.raises(EscError, match="unknown precision"):
        resolve_precision("fp8", "cpu")
    with pytest.raises(EscError, match="not supported on mps"):
        resolve_precision("bf16", "mps")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(EscError, match="not supported on cuda"):
        resolve_precision("bf16", "cuda")
    assert resolve_precision("auto", "cuda") == "fp32"


def test_fp32_steps_build_no_autocast_context():  # older torch refuses one for mps even when disabled
    import contextlib

    assert isinstance(train_module.autocast("mps", "fp32"), contextlib.nullcontext)
    assert isinstance(train_module.autocast("cpu", "bf16"), torch.autocast)


def test_bf16_training_runs_and_is_recorded(tmp_path, synth_features):
    r = train(synth_features, tiny_recipe(epochs=2), tmp_path / "b.pt", fold=5, precision="bf16")
    assert r.meta["train"]["precision"] == "bf16"
    assert all(np.isfinite(h["train_loss"]) for h in r.history)
    assert checkpoint.read_meta(r.path)["train"]["precision"] == "bf16"


def test_cli_train_then_models_then_eval(synth_dataset, esc_home):
    install(synth_dataset, esc_home)
    r = runner.invoke(app, ["train", "--preset", "fast", "--members", "1", "--epochs", "2", "--val-every", "1",
                            "--name", "quick", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["name"] == "quick" and d["fold"] == 5 and d["epochs"] == 2
    meta = checkpoint.read_meta(esc_home / "models" / "quick.pt")
    assert meta["train"]["recipe"]["val_every"] == 1 and all(h["val_acc"] is not None for h in meta["train"]["history"])
    # the preset's own network: its first stage as narrow as the stem, the stem's BatchNorm after its pooling,
    # recorded so that predict builds the same
    assert meta["model"]["args"] == {"channels": [16, 64, 128], "stem_order": "relu-pool-bn"}
    net = checkpoint.load(esc_home / "models" / "quick.pt").model
    assert [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)] == [16, 16, 16, 64, 64, 128, 128]
    assert [type(m).__name__ for m in list(net.modules()) if not list(m.children())][:4] == \
        ["Conv2d", "ReLU", "AvgPool2d", "BatchNorm2d"]

    r = runner.invoke(app, ["models", "--json"])
    assert [m["name"] for m in json.loads(r.stdout)] == ["quick"]
    assert json.loads(r.stdout)[0]["is_default"]
    acc = json.loads(r.stdout)[0]["val_acc"]  # the stored float32, shown with the 6 decimals it means
    assert acc == round(meta["train"]["metrics"]["val_acc"], 6) and len(repr(acc)) <= 8, acc
    assert d["val_acc"] == acc  # train --json shows the same figure

    r = runner.invoke(app, ["train", "--preset", "fast", "--epochs", "1", "--name", "quick"])
    assert r.exit_code == 1 and "exists already" in r.output

    r = runner.invoke(app, ["eval", "--json"])  # the default model: the one just trained
    assert r.exit_code == 0 and json.loads(r.stdout)["model"] == "quick"


def test_the_fast_preset_trains_its_network_then_a_texture_network_on_all_the_cores(synth_dataset, esc_home):
    install(synth_dataset, esc_home)
    r = runner.invoke(app, ["train", "--preset", "fast", "--epochs", "1", "--name", "pair", "--json"])
    assert r.exit_code == 0, r.output
    # --epochs 1 is quick for both networks: the texture network keeps its share (150 epochs for the CNN's 30)
    assert "member 2: texture, 5 epochs" in r.output and "side by side" not in r.output
    assert json.loads(r.stdout)["member_epochs"] == [1, 5]
    meta = checkpoint.read_meta(esc_home / "models" / "pair.pt")
    assert meta["model"]["args"]["member"] == "escnet+texture" and meta["model"]["args"]["mean"] == "geometric"
    assert [m["epochs"] for m in meta["train"]["members"]] == [1, 5]
    assert [m["threads"] for m in meta["train"]["members"]] == [os.cpu_count()] * 2  # each on all the cores
    # its texture network hears the per-band statistics too (round 20)
    texture = checkpoint.load(esc_home / "models" / "pair.pt").model.members[1]
    assert texture.stats["bands"] and texture.stats["extended"]
    # scored on the clips as they are (round 19 dropped the shifts), its members trained one after the other
    assert meta["train"]["recipe"]["test_shifts"] == [0] and meta["train"]["recipe"]["members_side_by_side"] is False
    # its first network is the one `--members 1` trains, weight for weight (with all the threads, as a single
    # network does; the line above checks that they did not train side by side)
    r = runner.invoke(app, ["train", "--preset", "fast", "--members", "1", "--epochs", "1", "--name", "one"])
    assert r.exit_code == 0, r.output
    pair = checkpoint.read(esc_home / "models" / "pair.pt")["state_dict"]
    first = {key[len("members.0."):]: v for key, v in pair.items() if key.startswith("members.0.")}
    assert states_equal(first, checkpoint.read(esc_home / "models" / "one.pt")["state_dict"])


def test_cli_says_what_to_do_when_things_are_missing(esc_home):
    r = runner.invoke(app, ["train", "--epochs", "1"])
    assert r.exit_code == 1 and "esc fetch" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["eval"])
    assert r.exit_code == 1 and "esc train" in r.output
    r = runner.invoke(app, ["eval", "--model", "nosuch"])
    assert r.exit_code == 1 and "no model named 'nosuch'" in r.output
    r = runner.invoke(app, ["train", "--preset", "nosuch"])
    assert r.exit_code == 1 and "unknown recipe" in r.output
    r = runner.invoke(app, ["train", "--precision", "fp8"])
    assert r.exit_code == 1 and "unknown precision 'fp8'" in r.output and "Traceback" not in r.output


def test_cli_resume_with_nothing_to_resume_says_so_before_anything_else(synth_dataset, esc_home):
    install(synth_dataset, esc_home)
    r = runner.invoke(app, ["train", "--epochs", "1", "--resume"])
    assert_one_line_error(r, "nothing to resume: no training of default-fold5 was interrupted", "without --resume")
    r = runner.invoke(app, ["train", "--epochs", "1", "--cv", "--name", "x", "--resume"])
    assert_one_line_error(r, "nothing to resume: no fold of x was finished or started")
    assert not (esc_home / "features").exists()  # refused before the features were built
    # a finished model: without --resume its name is taken, so the hint must not say "without --resume"
    (esc_home / "models").mkdir(exist_ok=True)
    (esc_home / "models" / "default-fold5.pt").write_bytes(b"a finished model")
    r = runner.invoke(app, ["train", "--epochs", "1", "--resume"])
    assert_one_line_error(r, "nothing to resume: default-fold5 finished its training", "without --resume, with --force")
    r = runner.invoke(app, ["train", "--epochs", "1"])  # and without --resume, nothing points back to it
    assert_one_line_error(r, "a model named 'default-fold5' exists already", "--force")
    assert "--resume" not in r.stderr
    (esc_home / "models" / "default-fold5.resume.pt").write_bytes(b"a retraining's progress")  # --force, interrupted
    r = runner.invoke(app, ["train", "--epochs", "1"])
    assert_one_line_error(r, "a model named 'default-fold5' exists already", "--force to overwrite, or --resume")


def test_damaged_and_foreign_model_files_are_refused(trained_model, tmp_path):
    data = trained_model.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated or damaged"):
        checkpoint.load(cut)

    blob = checkpoint.read(trained_model)
    blob["state_dict"] = {k: v.clone() for k, v in blob["state_dict"].items()}
    first = next(k for k, v in blob["state_dict"].items() if v.is_floating_point())
    blob["state_dict"][first].view(-1)[0] += 1.0
    flipped = tmp_path / "flipped.pt"
    torch.save(blob, flipped)
    with pytest.raises(ModelError, match="checksum"):
        checkpoint.load(flipped)

    blob = checkpoint.read(trained_model)
    blob["format_version"] = 99
    future = tmp_path / "future.pt"
    torch.save(blob, future)
    with pytest.raises(ModelError, match="not supported"):
        checkpoint.load(future)

    for bad in ([], "0", [0.5], [True], (0,), None):  # the shifts it is scored with are checked too
        blob = checkpoint.read(trained_model)
        blob["train"]["recipe"]["test_shifts"] = bad
        odd = tmp_path / "odd-shifts.pt"
        torch.save(blob, odd)
        with pytest.raises(ModelError, match="test_shifts"):
            checkpoint.load(odd)

    not_model = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(2)}, not_model)
    with pytest.raises(ModelError, match="not an esc model"):
        checkpoint.load(not_model)

    for junk in (b"RIFF....WAVEfmt ", bytes(range(256)) * 8, b"just some text\n"):  # not a false alarm about code
        other = tmp_path / "other.pt"
        other.write_bytes(junk)
        with pytest.raises(ModelError, match="not a model file"):
            checkpoint.load(other)


def test_a_model_whose_weights_are_not_finite_is_refused(trained_model, tmp_path):
    blob = checkpoint.read(trained_model)
    state = {k: v.clone() for k, v in blob["state_dict"].items()}
    state[next(k for k, v in state.items() if v.is_floating_point())].view(-1)[0] = float("nan")
    blob["state_dict"], blob["state_sha256"] = state, checkpoint.state_checksum(state, blob.get("mel_basis"))
    broken = tmp_path / "nan.pt"
    torch.save(blob, broken)
    with pytest.raises(ModelError, match="not finite numbers") as e:
        checkpoint.load(broken)
    assert "--lr" in str(e.value)


def test_training_that_diverges_stops_and_saves_no_model(synth_features, tmp_path):
    path = tmp_path / "m.pt"
    with pytest.raises(train_module.TrainingDiverged, match="epoch 1: the loss is no longer a finite number") as e:
        train(synth_features, tiny_recipe(lr=1e30, epochs=2), path, fold=5, seed=0)
    assert "lower --lr" in str(e.value)
    assert not path.exists()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "esc-model", "payload": _Evil(str(marker))}, evil)
    with pytest.raises(ModelError, match="refused"):
        checkpoint.load(evil)
    assert not marker.exists()
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(_Evil(str(marker)), f)
    with pytest.raises(ModelError):
        checkpoint.load(tmp_path / "evil.pkl")
    assert not marker.exists()
    r = runner.invoke(app, ["eval", "--model", str(evil)])
    assert r.exit_code == 1 and "refused" in r.output and "Traceback" not in r.output
    assert not marker.exists()


def test_interrupted_save_keeps_the_previous_checkpoint(trained_model, tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    shutil.copy(trained_model, path)
    before = path.read_bytes()
    blob = checkpoint.read(path)

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        checkpoint.save(path, {k: v for k, v in blob.items() if k != "state_dict"}, blob["state_dict"])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary left behind


def test_a_training_removes_what_a_killed_save_of_its_model_left_and_nothing_else(tmp_path, synth_features):
    two_hours_ago = time.time() - 2 * 3600

    def left(name: str, old: bool = True) -> Path:
        p = tmp_path / name
        p.write_bytes(b"half a file")
        if old:
            os.utime(p, (two_hours_ago, two_hours_ago))
        return p

    left(".m.pt.k1ll3d_1.tmp")  # a save of m.pt killed two hours ago (atomic_write's name for its temporary)
    left(".m.resume.pt.k1ll3d_2.tmp")  # and of its progress
    keep = [left(".m.best.pt.wr1t1ng_.tmp", old=False),  # being written now, by another process
            left(".n.pt.k1ll3d_3.tmp"), left(".m.pt.pt.k1ll3d_4.tmp"),  # other models': their trainings clear them
            left(".m.pt.backup.tmp"),  # not atomic_write's
            left(".notes.txt.k1ll3d_5.tmp"), left(".notes.txt")]  # not esc's
    train(synth_features, tiny_recipe(epochs=1), tmp_path / "m.pt", fold=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in keep] + ["m.pt"])


def test_store_default_and_names(trained_model, esc_home):
    L = layout(esc_home)
    L.models.mkdir(parents=True)
    shutil.copy(trained_model, L.models / "a.pt")
    shutil.copy(trained_model, L.models / "b.pt")
    (L.models / "junk.pt").write_bytes(b"not a model")
    infos = {i.name: i for i in store.list_models(L)}
    assert infos["junk"].error and infos["a"].fold == 5
    store.set_default(L, "b")
    assert store.resolve(L, None) == (L.models / "b.pt", False)
    assert store.resolve(L, "a") == (L.models / "a.pt", False)
    with pytest.raises(ModelError):
        store.set_default(L, "zzz")
    with pytest.raises(ModelError, match="junk.pt: not a model file; the default model stays"):
        store.set_default(L, "junk")
    assert store.resolve(L, None) == (L.models / "b.pt", False)
    with pytest.raises(ModelError):
        store.valid_name("../x")
    for bad in ("a b", "x:y", ".x", "-x", "x.best", "x.resume", ""):  # x.best: model x's --save-best file
        with pytest.raises(ModelError, match="bad model name"):
            store.valid_name(bad)
    with pytest.raises(ModelError, match="'builtin' is the name of the built-in model"):
        store.valid_name("builtin")
    assert [store.valid_name(n) for n in ("fast-fold1", "m_2.v3")] == ["fast-fold1", "m_2.v3"]
    with pytest.raises(ModelError, match="bad model name"):
        store.set_default(L, "../a")
    shutil.copy(trained_model, L.models / "a.best.pt")
    store.set_default(L, "a.best")  # a --save-best epoch may be the default
    assert store.resolve(L, None) == (L.models / "a.best.pt", False)
    r = runner.invoke(app, ["models", "--default", ""])  # an empty name is a mistake, not "list the models"
    assert_one_line_error(r, "bad model name ''")
    assert store.resolve(L, None) == (L.models / "a.best.pt", False)


def test_a_stored_models_name_wins_over_a_file_of_that_name_here(trained_model, esc_home, tmp_path, monkeypatch):
    L = layout(esc_home)
    L.models.mkdir(parents=True)
    shutil.copy(trained_model, L.models / "a.pt")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").write_bytes(b"a file that happens to share the name")
    (tmp_path / "b").write_bytes(trained_model.read_bytes())
    assert store.resolve(L, "a") == (L.models / "a.pt", False)
    assert store.resolve(L, "b") == (Path("b"), False)  # no stored model b: the file
    assert store.resolve(L, "./a") == (Path("./a"), False)  # a path says it is one


def test_cross_validation_trains_each_fold_and_resumes(tmp_path, synth_features):
    from esccli.crossval import run_cv, summary_path

    recipe = tiny_recipe(epochs=2)
    seen = []
    r = run_cv(synth_features, recipe, tmp_path, "cv", folds=[4, 5], on_fold=lambda k, acc, s: seen.append(k))
    assert sorted(r.folds) == [4, 5] and seen == [4, 5]
    assert all(0.0 <= a <= 1.0 for a in r.folds.values())
    for k in (4, 5):
        assert checkpoint.read_meta(tmp_path / f"cv-fold{k}.pt")["train"]["fold"] == k
    summary = json.loads(summary_path(tmp_path, "cv").read_text())
    assert summary["mean"] == pytest.approx(np.mean(list(r.folds.values())))

    # resumed: finished folds are not retrained; folds 2 and 3 are new and train side by side in worker processes
    before = (tmp_path / "cv-fold4.pt").stat().st_mtime_ns
    r2 = run_cv(synth_features, recipe, tmp_path, "cv", folds=[2, 3, 4, 5], resume=True, jobs=2)
    assert (tmp_path / "cv-fold4.pt").stat().st_mtime_ns == before
    assert r2.folds[4] == r.folds[4]
    for k in (2, 3):  # each worker's result is recorded under its own fold
        t = checkpoint.read_meta(tmp_path / f"cv-fold{k}.pt")["train"]
        assert (r2.folds[k], r2.seconds[k]) == (t["metrics"]["val_acc"], t["seconds"])

    # a finished fold made in another precision is not counted: it is refused, and trained again only if allowed
    other = "bf16" if checkpoint.read_meta(tmp_path / "cv-fold4.pt")["train"]["precision"] == "fp32" else "fp32"
    with pytest.raises(ModelError, match="cv-fold4.pt in .* was made with other settings: precision") as e:
        run_cv(synth_features, recipe, tmp_path, "cv", folds=[4], resume=True, precision=other)
    assert "--force" in e.value.hint and (tmp_path / "cv-fold4.pt").stat().st_mtime_ns == before
    run_cv(synth_features, recipe, tmp_path, "cv", folds=[4], resume=True, precision=other, overwrite=True)
    assert (tmp_path / "cv-fold4.pt").stat().st_mtime_ns != before
    assert checkpoint.read_meta(tmp_path / "cv-fold4.pt")["train"]["precision"] == other


def test_an_interrupted_cross_validation_says_which_folds_are_kept(tmp_path, synth_features, monkeypatch):
    from esccli.crossval import run_cv

    recipe = tiny_recipe(epochs=1)
    real = train_module.train

    def stopped_in(fold):
        def train(fs, recipe, path, **kw):  # Ctrl-C in the fold's first epoch: train says nothing of it is saved
            if kw["fold"] == fold:
                raise TrainingInterrupted("training interrupted before its first epoch ended; nothing was saved",
                                          "run the same command to start again")
            return real(fs, recipe, path, **kw)
        return train

    monkeypatch.setattr(train_module, "train", stopped_in(4))
    with pytest.raises(TrainingInterrupted) as e:
        run_cv(synth_features, recipe, tmp_path, "cv", folds=[4, 5])
    assert e.value.message == "cross-validation interrupted before any fold finished an epoch; nothing was saved"
    assert "--resume" not in e.value.hint
    monkeypatch.setattr(train_module, "train", stopped_in(5))
    with pytest.raises(TrainingInterrupted) as e:
        run_cv(synth_features, recipe, tmp_path, "cv", folds=[4, 5])
    assert e.value.message == f"cross-validation interrupted; the work of fold 4 is saved in {tmp_path}"
    assert "--resume" in e.value.hint  # the same command without it would refuse: cv-fold4 exists
    # a run that starts over (--force) and is stopped at once kept nothing: fold 4 is an earlier run's
    earlier = time.time() - 60
    os.utime(tmp_path / "cv-fold4.pt", (earlier, earlier))
    monkeypatch.setattr(train_module, "train", stopped_in(4))
    with pytest.raises(TrainingInterrupted) as e:
        run_cv(synth_features, recipe, tmp_path, "cv", folds=[4, 5])
    assert e.value.message.startswith("cross-validation interrupted before any fold finished an epoch")
    monkeypatch.setattr(train_module, "train", real)
    assert sorted(run_cv(synth_features, recipe, tmp_path, "cv", folds=[4, 5], resume=True).folds) == [4, 5]


def test_resuming_a_cross_validation_that_never_started_is_refused(tmp_path, synth_features):
    from esccli.crossval import run_cv

    with pytest.raises(EscError, match="nothing to resume: no fold of cv was finished or started"):
        run_cv(synth_features, tiny_recipe(epochs=1), tmp_path, "cv", folds=[4, 5], resume=True)
    assert list(tmp_path.iterdir()) == []


def test_a_recipe_with_a_setting_that_would_do_nothing_is_refused_before_training(tmp_path, synth_features):
    from esccli.crossval import run_cv
    from esccli.recipes import RECIPES

    assert all(not r.problems() for r in RECIPES.values())
    for bad, says in ((dict(stretch=0.8), "stretch must be at least 1.0"),
                      (dict(stretch=1.25, crop_frames=0), "stretch needs crops"),
                      (dict(val_every=0), "val_every must be at least 1"),
                      (dict(member_variants=[]), "member_variants needs at least one entry"),
                      (dict(members=2, member_variants=[{}, {"stretch": 1.25}]), "member 2: stretch needs crops"),
                      (dict(step_every=0), "step_every must be at least 1"),
                      (dict(schedule="cosine"), "schedule must be one of onecycle, step"),
                      (dict(members=2, member_variants=[{}, "pitch"]), "member 2: a variant is a dict"),
                      (dict(eq_db=-3), "eq_db must be at least 0.0"),
                      (dict(noise_db=-1), "noise_db must be at least 0.0"),
                      (dict(reverb_s=-0.5), "reverb_s must be at least 0.0"),
                      (dict(lr=0.0), "lr must be above 0"),
                      (dict(ema_decay=1.0), "ema_decay must be at least 0 and below 1"),
                      (dict(test_shifts=[]), "test_shifts must be a non-empty list"),
                      (dict(test_shifts=[0.5]), "test_shifts must be a non-empty list of whole numbers"),
                      (dict(test_shifts=(0, 1)), "test_shifts must be a non-empty list"),
                      (dict(mixup_power=True, mixup_alpha=0.0), "mixup_power needs mixup"),
                      (dict(crop_frames=20, early_crop_frames=20, early_crop_share=0.5), "early_crop_frames must be between"),
                      (dict(crop_frames=0, early_crop_frames=10, early_crop_share=0.5), "early_crop_frames must be between"),
                      (dict(crop_frames=20, early_crop_frames=10, early_crop_share=1.5), "early_crop_share must be between"),
                      (dict(crop_frames=20, early_crop_frames=10), "set both or neither")):
        with pytest.raises(EscError, match=says):
            train(synth_features, tiny_recipe(**bad), tmp_path / "m.pt", fold=5)
    image = dataclasses.replace(synth_features, params=dataclasses.replace(synth_features.params, scale="image"))
    for needs_db in (dict(eq_db=6.0), dict(eq_db=0.0, noise_db=40.0), dict(eq_db=0.0, reverb_s=1.0),
                     dict(eq_db=0.0, mixup_power=True, mixup_alpha=0.4)):  # all read dB
        with pytest.raises(EscError, match="need features scaled in dB"):
            train(image, tiny_recipe(**needs_db), tmp_path / "m.pt", fold=5)
    assert not any(tmp_path.iterdir())
    with pytest.raises(EscError, match="need features scaled in dB"):  # before any fold starts
        run_cv(image, tiny_recipe(mixup_alpha=0.4, mixup_power=True), tmp_path, "cv", jobs=2)
    assert not any(tmp_path.iterdir())
    with pytest.raises(EscError, match="^recipe: epochs must be at least 1, not 0$"):  # said once, not per member
        train(synth_features, tiny_recipe(epochs=0, members=2, crop_frames=40), tmp_path / "m.pt", fold=5)
    with pytest.raises(EscError, match="val_every must be at least 1"):  # before any fold starts
        run_cv(synth_features, tiny_recipe(val_every=0), tmp_path, "cv", jobs=2)
    assert not any(tmp_path.iterdir())


def test_early_crops_cover_the_first_share_of_the_epochs(synth_features, tmp_path, monkeypatch):
    from esccli import augment

    recipe = tiny_recipe(epochs=4, crop_frames=20, early_crop_frames=10, early_crop_share=0.5, time_masks=1,
                         time_mask_width=8)
    assert [(r.crop_frames, r.time_mask_width) for r in map(lambda e: train_module.recipe_of_epoch(recipe, e),
                                                             range(4))] == [(10, 4), (10, 4), (20, 8), (20, 8)]
    assert train_module.recipe_of_epoch(tiny_recipe(crop_frames=20), 0) == tiny_recipe(crop_frames=20)
    crops = []
    real_crop = augment.random_crop
    monkeypatch.setattr(augment, "random_crop", lambda x, frames, *a: crops.append(frames) or real_crop(x, frames, *a))
    result = train(synth_features, recipe, tmp_path / "m.pt", fold=5, seed=0)
    steps = len(crops) // 4
    assert crops == [10] * (2 * steps) + [20] * (2 * steps) and steps >= 1
    assert result.meta["train"]["recipe"]["early_crop_frames"] == 10  # recorded with the model


def test_cross_validation_json_shows_scores_as_models_json_does(capsys):
    from esccli.cli.train import render_cv
    from esccli.crossval import CVResult

    r = CVResult("cv", folds={1: float(np.float32(0.8625)), 2: float(np.float32(0.8425))}, seconds={1: 60.0, 2: 61.0})
    render_cv(r, as_json=True)
    d = json.loads(capsys.readouterr().out)
    assert d["folds"] == {"1": 0.8625, "2": 0.8425} and d["mean"] == 0.8525 and len(repr(d["std"])) <= 8
