import io
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_recipe
from synthetic import assert_one_line_error
from esccli import checkpoint, store
from esccli.cli import app
from esccli.ensemble import combine, member_files, member_path, saved_progress
from esccli.errors import EscError, ModelError
from esccli.evaluate import evaluate
from esccli.models import Ensemble
from esccli.paths import layout
from esccli.train import TrainingInterrupted, train

runner = CliRunner()


def states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, synth_features):
    """An ensemble of two tiny networks trained one at a time (the default recipe's two variants), and the same two
    networks trained alone."""
    d = tmp_path_factory.mktemp("ensemble")
    recipe = tiny_recipe(epochs=3, members=2, crop_frames=40)  # crops: the second variant stretches them
    ens = train(synth_features, recipe, d / "ens.pt", fold=5, seed=7)
    alone = [train(synth_features, recipe.member(k), d / f"alone{k}.pt", fold=5, seed=recipe.member_seed(7, k))
             for k in range(2)]
    return recipe, ens, alone


def test_an_ensemble_is_its_members_trained_alone_and_predicts_their_mean_probability(pair, synth_features):
    recipe, ens, alone = pair
    state = checkpoint.read(ens.path)["state_dict"]
    for k, a in enumerate(alone):
        member = {key[len(f"members.{k}."):]: v for key, v in state.items() if key.startswith(f"members.{k}.")}
        assert states_equal(member, checkpoint.read(a.path)["state_dict"])
    lm = checkpoint.load(ens.path)
    singles = [checkpoint.load(a.path).model for a in alone]
    x = torch.from_numpy(synth_features.features[:20]).float().unsqueeze(1)
    with torch.no_grad():
        mean = torch.stack([m(x).softmax(-1) for m in singles]).mean(0)
        assert torch.allclose(lm.model(x).softmax(-1), mean, atol=1e-5)
    # scored like any model: the recorded accuracy is what eval measures on the held-out fold
    assert ens.meta["train"]["metrics"]["val_acc"] == pytest.approx(evaluate(lm, synth_features, fold=5).accuracy)
    assert [m["seed"] for m in ens.meta["train"]["members"]] == [7, 7]  # two variants: the same seed
    assert ens.meta["model"]["arch"] == "ensemble" and ens.meta["model"]["args"]["members"] == 2
    assert "member_args" in ens.meta["model"]["args"] and "member_list" not in ens.meta["model"]["args"]  # as before
    assert recipe.made(ens.meta["train"], 5, 7, ens.meta["train"]["precision"])
    # whether the members trained side by side is not compared (it changes their thread counts, which are
    # recorded, as --jobs and --threads change them, but not compared)
    assert replace(recipe, members_side_by_side=False).made(ens.meta["train"], 5, 7, ens.meta["train"]["precision"])
    assert len(ens.meta["train"]["history"]) == 6 and {h["member"] for h in ens.meta["train"]["history"]} == {1, 2}
    assert not any(member_path(ens.path, k).exists() for k in range(2))  # member files are removed


def test_an_ensemble_with_test_shifts_is_the_same_networks_scored_on_shifted_copies(pair, synth_features, tmp_path):
    from esccli.models import ShiftAverage

    recipe, ens, _ = pair
    shifted = train(synth_features, recipe.with_overrides(test_shifts=[-1, 0, 1]), tmp_path / "s.pt", fold=5, seed=7)
    assert states_equal(checkpoint.read(ens.path)["state_dict"], checkpoint.read(shifted.path)["state_dict"])
    lm = checkpoint.load(shifted.path)
    assert isinstance(lm.model, ShiftAverage) and isinstance(lm.model.net, Ensemble)
    assert shifted.meta["train"]["metrics"]["val_acc"] == pytest.approx(evaluate(lm, synth_features, fold=5).accuracy)


def test_a_geometric_ensemble_is_the_same_networks_scored_by_their_mean_log_probability(pair, synth_features,
                                                                                     tmp_path):
    recipe, ens, _ = pair
    geo = recipe.with_overrides(ensemble_mean="geometric")
    assert geo.member(0).to_dict() == recipe.member(0).to_dict() | {"ensemble_mean": "geometric"}
    trained = train(synth_features, geo, tmp_path / "g.pt", fold=5, seed=7)
    assert states_equal(checkpoint.read(ens.path)["state_dict"], checkpoint.read(trained.path)["state_dict"])
    assert trained.meta["model"]["args"]["mean"] == "geometric" and "mean" not in ens.meta["model"]["args"]
    lm = checkpoint.load(trained.path)
    x = torch.from_numpy(synth_features.features[:20]).float().unsqueeze(1)
    with torch.no_grad():
        logp = torch.stack([m(x).log_softmax(-1) for m in lm.model.members]).mean(0)
        assert torch.allclose(lm.model(x), logp.log_softmax(-1), atol=1e-5)
        assert torch.allclose(lm.model(x).exp().sum(-1), torch.ones(20), atol=1e-5)
    assert trained.meta["train"]["metrics"]["val_acc"] == pytest.approx(evaluate(lm, synth_features, fold=5).accuracy)
    # a stored score is the ensemble's, so the mean is part of what made it; a member does not use it
    precision = trained.meta["train"]["precision"]  # as "auto" chose it on this CPU
    assert geo.made(trained.meta["train"], 5, 7, precision) and not recipe.made(trained.meta["train"], 5, 7, precision)
    assert recipe.member(0).made(checkpoint.read(ens.path)["train"] | {"recipe": geo.member(0).to_dict()}, 5, 7,
                                 precision)
    assert "ensemble_mean must be one of" in " ".join(recipe.with_overrides(ensemble_mean="median").problems())
    from esccli import models, recipes  # recipes.py names the means without importing torch

    assert set(models.ENSEMBLE_MEANS) == set(recipes.ENSEMBLE_MEANS)
    with pytest.raises(ValueError, match="unknown ensemble mean"):
        Ensemble(8, 20, 50, mean="median")


def test_member_variants_train_differently_augmented_members(synth_features, tmp_path):
    recipe = tiny_recipe(epochs=2, members=3, member_variants=[{}, {"freq_shift": 2}])
    assert [(recipe.member(k).freq_shift, recipe.member_seed(5, k)) for k in range(3)] == [(0, 5), (2, 5), (0, 6)]
    ens = train(synth_features, recipe, tmp_path / "v.pt", fold=5, seed=5)
    state = checkpoint.read(ens.path)["state_dict"]
    shifted = train(synth_features, recipe.member(1), tmp_path / "s.pt", fold=5, seed=5)
    member = {key[len("members.1."):]: v for key, v in state.items() if key.startswith("members.1.")}
    assert states_equal(member, checkpoint.read(shifted.path)["state_dict"])
    assert [m["variant"] for m in ens.meta["train"]["members"]] == [{}, {"freq_shift": 2}, {}]
    with pytest.raises(ValueError, match="unknown recipe field"):
        tiny_recipe(members=2, member_variants=[{}, {"no_such_field": 1}]).member(1)
    for field in ("members", "features", "test_shifts", "ensemble_mean", "members_side_by_side"):
        with pytest.raises(ValueError, match=f"cannot set {field}"):
            tiny_recipe(members=2, member_variants=[{}, {field: 3}]).member(1)
    with pytest.raises(ValueError, match="cannot make a member an ensemble"):
        tiny_recipe(members=2, member_variants=[{}, {"arch": "ensemble"}]).member(1)


def test_members_of_different_architectures(synth_features, tmp_path, esc_home, monkeypatch):
    from esccli.features import FeatureParams
    from esccli.models import TextureNet
    from esccli.recipes import TEXTURE, get_recipe
    from esccli.train import check_recipe

    recipe = tiny_recipe(epochs=2, members=2, member_variants=[{}, {**TEXTURE, "epochs": 3}])
    texture = recipe.member(1)
    assert (texture.arch, texture.arch_args, texture.epochs, recipe.member_archs()) == (
        "texture", {"extended": True}, 3, "escnet+texture")
    # a variant that names another network, without arguments of its own, does not take the recipe's arch_args
    assert recipe.with_overrides(member_variants=[{}, {"arch": "texture"}]).member(1).arch_args == {}
    # the default's texture member keeps its own learning rate when the recipe's is overridden (esc train --lr),
    # and its share of fewer epochs under --epochs: twice the CNNs' (150 and 300), so a quick run is quick throughout
    default = get_recipe("default")
    assert [default.member(k).epochs for k in range(3)] == [150, 150, TEXTURE["epochs"]] == [150, 150, 300]
    shorter = default.with_epochs(5).with_overrides(lr=0.1)
    assert [(shorter.member(k).epochs, shorter.member(k).lr) for k in range(3)] == [(5, 0.1), (5, 0.1),
                                                                                     (10, TEXTURE["lr"])]
    assert [default.with_epochs(1).member(k).epochs for k in range(3)] == [1, 1, 2]
    assert default.with_epochs(None) is default and default.with_epochs(150) is default  # stored models still match
    fast = get_recipe("fast")
    assert fast.with_epochs(1).member(1).epochs == 5  # 150 for the CNN's 30
    # more epochs lengthen the CNNs only: `fast --epochs 96` is round 19's CNN beside the same texture network
    assert [fast.with_epochs(96).member(k).epochs for k in range(2)] == [96, 150]
    assert [default.with_epochs(300).member(k).epochs for k in range(3)] == [300, 300, 300]
    ens = train(synth_features, recipe, tmp_path / "mixed.pt", fold=5, seed=3)
    alone = train(synth_features, texture, tmp_path / "texture.pt", fold=5, seed=3)
    state = checkpoint.read(ens.path)["state_dict"]
    member = {key[len("members.1."):]: v for key, v in state.items() if key.startswith("members.1.")}
    assert states_equal(member, checkpoint.read(alone.path)["state_dict"])
    p = synth_features.params  # the texture network is told the features' frame rate and dB range
    assert ens.meta["model"]["args"]["member_list"] == [
        {"arch": "escnet", "args": recipe.arch_args},
        {"arch": "texture", "args": {"frame_rate": p.sample_rate / p.hop_length, "top_db": p.top_db,
                                     "extended": True}}]
    lm = checkpoint.load(ens.path)
    assert isinstance(lm.model.members[1], TextureNet)
    assert ens.meta["train"]["metrics"]["val_acc"] == pytest.approx(evaluate(lm, synth_features, fold=5).accuracy)
    assert [len([h for h in ens.meta["train"]["history"] if h["member"] == k]) for k in (1, 2)] == [2, 3]
    assert [m["epochs"] for m in ens.meta["train"]["members"]] == [2, 3]  # each member's own
    from rich.console import Console

    from esccli.cli import common
    from esccli.cli.train import render_run

    err = io.StringIO()
    monkeypatch.setattr(common, "err", Console(file=err, width=200))
    render_run(ens, as_json=False)  # what esc train shows: each member's epochs
    assert re.search(r"epochs\W+2 \+ 3\s", err.getvalue()), err.getvalue()
    lay = layout(esc_home)
    lay.models.mkdir(parents=True)
    shutil.copy(ens.path, lay.models / "mixed.pt")
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0 and "1 x escnet" not in r.output and "escnet + texture" in r.output
    from esccli.cli.common import arch_label

    assert arch_label("escnet+escnet+texture", 3) == "2 x escnet + texture"
    assert arch_label("escnet", 2) == "2 x escnet" and arch_label("escnet") == "escnet"
    # --arch makes the networks another architecture and leaves out the members of an architecture of their own
    seeds = get_recipe("default").with_arch("seed")
    assert (seeds.members, seeds.member_archs(), seeds.member(0).arch_args) == (2, "seed", {})
    assert recipe.with_overrides(member_variants=[{}, {"arch": "escnet"}]).member(1).arch_args == recipe.arch_args
    with pytest.raises(EscError, match="texture network reads features scaled in dB"):
        check_recipe(get_recipe("default").with_overrides(eq_db=0.0), FeatureParams(scale="image"))


def test_esc_models_shows_an_ensemble_as_its_networks(pair, esc_home):
    lay = layout(esc_home)
    lay.models.mkdir(parents=True)
    shutil.copy(pair[1].path, lay.models / "ens.pt")
    info = store.list_models(lay)[0]
    assert (info.arch, info.members, info.member_arch) == ("ensemble", 2, "escnet")  # --json keeps the data
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0 and "2 x escnet" in r.output


def test_members_trained_side_by_side_are_the_same_networks(pair, synth_features, tmp_path, monkeypatch):
    recipe = pair[0]
    par = train(synth_features, recipe, tmp_path / "par.pt", fold=5, seed=7, member_jobs=2, member_threads=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same thread count as each side-by-side process: the same sums, the same weights
    # as if each member, and the join, ran on a machine of its own (a resumed ensemble's may have)
    machines = iter(["CPU of member 1", "CPU of member 2", "CPU that joined them"])
    monkeypatch.setattr("esccli.train.cpu_name", lambda: next(machines))
    try:
        seq = train(synth_features, recipe, tmp_path / "seq.pt", fold=5, seed=7)
    finally:
        torch.set_num_threads(threads)
    assert states_equal(checkpoint.read(par.path)["state_dict"], checkpoint.read(seq.path)["state_dict"])
    assert par.meta["train"]["metrics"] == seq.meta["train"]["metrics"]
    # each side-by-side process records the one thread it was given
    assert [m["threads"] for m in par.meta["train"]["members"]] == [1, 1]
    assert [m["threads"] for m in seq.meta["train"]["members"]] == [1, 1]
    assert [m["cpu"] for m in seq.meta["train"]["members"]] == ["CPU of member 1", "CPU of member 2"]
    assert seq.meta["train"]["cpu"] == "CPU that joined them"


def test_an_interrupted_ensemble_resumes_where_it_stopped(pair, synth_features, tmp_path):
    recipe, ens, _ = pair
    path = tmp_path / "r.pt"
    stop_in_member_2(synth_features, recipe, path)
    assert member_path(path, 0).is_file() and member_path(path, 1).with_suffix(".resume.pt").is_file()
    assert not path.exists()
    shutil.copy(pair[2][0].path, tmp_path / "r.best.pt")  # a --save-best epoch of another model named r
    seen = []
    r = train(synth_features, recipe, path, fold=5, seed=7, resume=True, on_epoch=lambda s: seen.append((s.member, s.epoch)))
    assert seen == [(2, 2), (2, 3)]  # member 1 kept, member 2 continued after its first epoch
    assert states_equal(checkpoint.read(r.path)["state_dict"], checkpoint.read(ens.path)["state_dict"])
    assert not (tmp_path / "r.best.pt").exists()  # an ensemble has no best epoch: that one was another model's


def test_an_ensemble_interrupted_between_members_says_which_are_kept(pair, synth_features, tmp_path, monkeypatch):
    import esccli.train as train_module

    recipe, real = pair[0], train_module.train

    def stop_before_member_2(fs, recipe, path, **kw):  # Ctrl-C once member 1 is finished, before member 2 starts
        if kw["name"].endswith("member 2"):
            raise KeyboardInterrupt
        return real(fs, recipe, path, **kw)

    monkeypatch.setattr(train_module, "train", stop_before_member_2)
    with pytest.raises(TrainingInterrupted) as e:
        train(synth_features, recipe, tmp_path / "r.pt", fold=5, seed=7)  # (the name imported before the patch)
    assert e.value.message == f"training interrupted; the work of member 1 of 2 is saved in {tmp_path}, as hidden files .r.member*.pt"
    assert "--resume" in e.value.hint and member_path(tmp_path / "r.pt", 0).is_file()
    monkeypatch.setattr(train_module, "train", real)  # and while the finished members are joined
    monkeypatch.setattr("esccli.ensemble.combine", lambda *a, **kw: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(TrainingInterrupted) as e:
        train(synth_features, recipe, tmp_path / "r.pt", fold=5, seed=7, resume=True)
    assert e.value.message == f"training interrupted; the work of members 1, 2 of 2 is saved in {tmp_path}, as hidden files .r.member*.pt"


def stop_in_member_2(synth_features, recipe, path):
    """Train the ensemble until member 2 has finished its first epoch, then interrupt it (Ctrl-C)."""
    def stop(stats):
        if stats.member == 2:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="the work of members 1, 2 of 2 is saved in") as e:
        train(synth_features, recipe, path, fold=5, seed=7, on_epoch=stop)
    assert "--resume" in e.value.hint


def test_resume_checks_every_member_before_training_and_keeps_the_good_ones(pair, synth_features, tmp_path):
    recipe = pair[0]
    path = tmp_path / "r.pt"
    stop_in_member_2(synth_features, recipe, path)
    done = member_path(path, 0).read_bytes()
    seen = []
    with pytest.raises(ModelError, match=r"\.r\.member1\.pt was made with other settings: epochs 3 \(now 4\)"):
        train(synth_features, recipe.with_overrides(epochs=4), path, fold=5, seed=7, resume=True,
              on_epoch=seen.append)
    assert seen == [] and member_path(path, 0).read_bytes() == done  # nothing trained, nothing overwritten
    assert saved_progress(path) and not saved_progress(tmp_path / "other.pt")
    r = train(synth_features, recipe, path, fold=5, seed=7, resume=True)
    assert states_equal(checkpoint.read(r.path)["state_dict"], checkpoint.read(pair[1].path)["state_dict"])
    assert not saved_progress(path) and member_files(path) == []


def test_a_resume_with_fewer_members_is_refused_rather_than_dropping_their_work(pair, synth_features, tmp_path):
    three = pair[0].with_overrides(members=3, member_variants=[{}, {"freq_shift": 2}])  # member 3: variant 1, seed + 1
    path = tmp_path / "f.pt"

    def stop(stats):
        if stats.member == 3:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="the work of members 1, 2, 3 of 3 is saved in"):
        train(synth_features, three, path, fold=5, seed=7, on_epoch=stop)
    kept = {f.name: f.read_bytes() for f in member_files(path)}
    with pytest.raises(ModelError, match=r"f\.pt was started with more members: member 3 has work saved in .* "
                                         r"\(now 2 members\)"):
        train(synth_features, three.with_overrides(members=2), path, fold=5, seed=7, resume=True)
    assert {f.name: f.read_bytes() for f in member_files(path)} == kept and not path.exists()
    # more members than were started is how a larger recipe resumes a smaller one's networks (round 26)
    r = train(synth_features, three.with_overrides(members=4), path, fold=5, seed=7, resume=True)
    assert len(r.meta["train"]["members"]) == 4 and member_files(path) == []


def test_nothing_to_resume_and_save_best_are_one_line_errors(synth_features, tmp_path):
    with pytest.raises(EscError, match="nothing to resume"):
        train(synth_features, tiny_recipe(members=2, crop_frames=40), tmp_path / "x.pt", fold=5, resume=True)
    with pytest.raises(EscError, match="--save-best"):
        train(synth_features, tiny_recipe(members=2, crop_frames=40), tmp_path / "x.pt", fold=5, save_best=True)


def test_combine_refuses_a_member_made_otherwise(pair, synth_features, tmp_path):
    recipe, _, alone = pair
    with pytest.raises(ModelError, match="not member 2"):
        combine(synth_features, recipe, [alone[0].path, alone[0].path], tmp_path / "c.pt", fold=5, seed=7, name="c",
                command="", precision=alone[0].meta["train"]["precision"])
    assert not (tmp_path / "c.pt").exists()


def test_ensemble_network_checks_its_arguments():
    with pytest.raises(ValueError, match="member"):
        Ensemble(32, 51, 50, member="ensemble")
    with pytest.raises(ValueError, match="at least one"):
        Ensemble(32, 51, 50, members=0)


def test_cli_save_best_with_an_ensemble_is_one_line_before_any_work(esc_home):
    r = runner.invoke(app, ["train", "--members", "2", "--save-best", "--epochs", "1"])
    assert_one_line_error(r, "--save-best picks one epoch of one network", "--members 1")
    assert not (esc_home / "features").exists()  # refused before featurizing


def test_a_worker_process_exits_when_its_parent_is_killed(tmp_path):
    # a killed `esc train` must not leave its side-by-side members or folds training on as orphans
    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing, os, sys, time\n"
        "from esccli.workers import exit_with_parent\n"
        "def child():\n"
        "    exit_with_parent()\n"
        "    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    p = multiprocessing.get_context('spawn').Process(target=child)\n"
        "    p.start()\n"
        "    print(p.pid, flush=True)\n"
        "    time.sleep(3)\n"
        "    os._exit(0)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    pid = int(out.stdout.split()[0])
    deadline = time.time() + 15
    while time.time() < deadline and _alive(pid):
        time.sleep(0.2)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").is_file() or Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_cross_validation_resumes_an_ensemble_fold_member_by_member(pair, synth_features, tmp_path):
    from esccli.crossval import run_cv

    recipe = pair[0]
    path = tmp_path / "cv-fold5.pt"
    stop_in_member_2(synth_features, recipe, path)
    assert member_path(path, 0).is_file()
    seen = []
    r = run_cv(synth_features, recipe, tmp_path, "cv", seed=7, folds=[5], resume=True,
               on_epoch=lambda k, s: seen.append((s.member, s.epoch)))
    assert seen == [(2, 2), (2, 3)]  # member 1 kept (not retrained), member 2 continued
    assert r.folds[5] == pytest.approx(pair[1].meta["train"]["metrics"]["val_acc"])
    assert states_equal(checkpoint.read(path)["state_dict"], checkpoint.read(pair[1].path)["state_dict"])
    assert member_files(path) == []


def test_members_train_all_at_once_by_default_up_to_twice_the_cores():
    from esccli.ensemble import default_jobs

    assert [default_jobs(m, 2) for m in (1, 2, 3, 4, 5, 16)] == [1, 2, 3, 4, 4, 4]
    assert default_jobs(2, 8) == 2 and default_jobs(3, 0) == 2  # an unknown core count counts as one
    assert default_jobs(2, 2, side_by_side=False) == 1  # a recipe whose members train one after the other
