"""The fine-rate modulation statistics (esccli/modulation.py), the texture network that hears them, and the
ensemble's member weights and seed offsets that round 26's candidate is made of."""

import math
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import tiny_recipe
from esccli import checkpoint, modulation
from esccli.errors import EscError
from esccli.evaluate import evaluate
from esccli.models import Ensemble, TextureNet, log_geometric_mean_probability, needs_modulation
from esccli.recipes import BANDS_TEXTURE, MODULATION_TEXTURE, PITCH_TEMPO, get_recipe
from esccli.train import predict_logits, train

SR = 16000


def am_noise(freq: float, seconds: float = 5.0, seed: int = 0) -> torch.Tensor:
    """White noise whose amplitude swings fully at `freq` Hz."""
    t = torch.arange(int(seconds * SR)) / SR
    noise = torch.randn(len(t), generator=torch.Generator().manual_seed(seed))
    return 0.1 * noise * (1 + torch.sin(2 * math.pi * freq * t))


def shares(stats: torch.Tensor) -> torch.Tensor:
    """[batch, BANDS, len(MODULATION_BANDS)]: each band's log share of modulation power per modulation band."""
    return stats[:, :modulation.BANDS * len(modulation.MODULATION_BANDS)].reshape(
        -1, modulation.BANDS, len(modulation.MODULATION_BANDS))


def band_of(freq: float) -> int:
    return next(k for k, (lo, hi) in enumerate(modulation.MODULATION_BANDS) if lo <= freq < hi)


def test_modulation_power_lands_in_the_half_octave_of_the_envelope_rate():
    rates = (3.0, 12.0, 30.0, 45.0, 60.0)
    stats = modulation.statistics(torch.stack([am_noise(f) for f in rates]), SR)
    assert stats.shape == (5, modulation.COUNT) == (5, 272) and stats.dtype == torch.float32
    best = shares(stats).argmax(-1)  # [rate, band]: white noise is in every band
    for k, f in enumerate(rates[:4]):  # rates the 20 ms features cannot hear (theirs stop at 25 Hz) included
        assert (best[k] == band_of(f)).all(), (f, best[k])
    # 60 Hz is near the first null of the 32 ms window (62.5 Hz): the wide upper bands still hear it, where the
    # narrow lower bands' own random fluctuations are slower
    assert (best[4, modulation.BANDS // 2:] == band_of(60.0)).all(), best[4]
    assert len({band_of(f) for f in rates}) == len(rates)
    # a steady beat stands out of its modulation spectrum; unmodulated noise has no such peak
    peak = stats[:, -modulation.BANDS:]
    flat = modulation.statistics(am_noise(0.0)[None], SR)[:, -modulation.BANDS:]
    assert (peak.mean(1) > flat.mean(1) + 0.2).all()


def test_statistics_leave_out_the_silence_a_short_clip_is_padded_with():
    sound = am_noise(20.0, seconds=2.5, seed=1)
    padded = torch.cat([sound, torch.zeros(int(2.5 * SR))])
    whole = am_noise(20.0, seconds=5.0, seed=1)
    # the same sound followed by a faint noise (-60 dB) rather than digital silence: heard as a burst that stops
    faint = torch.cat([sound, 1e-4 * torch.randn(int(2.5 * SR), generator=torch.Generator().manual_seed(5))])
    a, b, c = shares(modulation.statistics(torch.stack([padded, whole, faint]), SR))
    assert (a.argmax(-1) == band_of(20.0)).all()
    # the slowest modulation bands (0.5-2 Hz), where a step would show, are near those of the 5 s sound
    slow = slice(0, 4)
    assert (a[:, slow] - b[:, slow]).abs().mean() < 0.5 * (c[:, slow] - b[:, slow]).abs().mean()
    silent = modulation.statistics(torch.zeros(2, 5 * SR), SR)
    tiny = modulation.statistics(1e-7 * torch.randn(1, SR, generator=torch.Generator().manual_seed(0)), SR)
    assert torch.isfinite(silent).all() and torch.isfinite(tiny).all()


def test_the_same_analysis_at_any_sample_rate():
    assert modulation.stft_sizes(16000) == (512, 64) and modulation.stft_sizes(44100) == (1412, 176)
    for sr in (8000, 16000, 44100):
        n_fft, _ = modulation.stft_sizes(sr)
        filters = modulation.band_filters(sr, n_fft)
        assert filters.shape == (modulation.BANDS, n_fft // 2 + 1) and (filters.sum(1) > 0).all()
    t = torch.arange(5 * 44100) / 44100
    hi = 0.1 * torch.randn(len(t), generator=torch.Generator().manual_seed(2)) * (1 + torch.sin(2 * math.pi * 40 * t))
    stats = modulation.statistics(hi[None], 44100)
    assert (shares(stats).argmax(-1) == band_of(40.0)).all()


def test_a_texture_network_hears_the_modulation_statistics_beside_the_features():
    x = torch.rand(4, 1, 32, 51) * 2 - 1
    mods = modulation.statistics(torch.stack([am_noise(f, 1.0) for f in (3, 10, 30, 90)]), SR)
    plain, fine = TextureNet(32, 51, 50), TextureNet(32, 51, 50, modulation=modulation.VERSION)
    assert fine.net[0].num_features == plain.net[0].num_features + modulation.COUNT
    assert not needs_modulation(plain) and needs_modulation(fine)
    assert fine.eval()(x, mods).shape == (4, 50)
    with pytest.raises(ValueError, match="pass them beside the features"):
        fine(x)
    with pytest.raises(ValueError, match="not those of this esc"):
        TextureNet(32, 51, 50, modulation=modulation.VERSION + 1)
    # an ensemble passes them to the members that hear them only
    ens = Ensemble(32, 51, 50, members=2, member="texture+texture", mean="geometric",
                   member_list=[{"arch": "texture", "args": {}}, {"arch": "texture", "args": {"modulation": 1}}])
    assert needs_modulation(ens)
    ens.members[1].load_state_dict(fine.state_dict())
    ens.members[0].load_state_dict(plain.state_dict())
    with torch.no_grad():
        expected = torch.stack([plain.eval()(x).log_softmax(-1), fine(x, mods).log_softmax(-1)]).mean(0)
        assert torch.allclose(ens.eval()(x, mods), expected.log_softmax(-1), atol=1e-6)


def test_weighted_members_count_for_their_weight_in_the_mean():
    g = torch.Generator().manual_seed(0)
    outs = [torch.randn(5, 50, generator=g) for _ in range(4)]
    # three copies weighted 1/3 each are one member: their own geometric mean, beside the first at weight 1
    three = log_geometric_mean_probability(outs[1:])
    assert torch.allclose(log_geometric_mean_probability(outs, [1, 1 / 3, 1 / 3, 1 / 3]),
                          log_geometric_mean_probability([outs[0], three]), atol=1e-5)
    assert torch.allclose(log_geometric_mean_probability(outs, [1, 1, 1, 1]), log_geometric_mean_probability(outs))
    ens = Ensemble(8, 20, 50, members=2, weights=[1.0, 3.0], member_args={"stem": 4, "channels": [8]}, mean="geometric")
    x = torch.randn(3, 1, 8, 20)
    with torch.no_grad():
        a, b = (m.eval()(x).log_softmax(-1) for m in ens.members)
        assert torch.allclose(ens.eval()(x), ((a + 3 * b) / 4).log_softmax(-1), atol=1e-5)
    for bad in ([1.0], [1.0, 0.0], [1.0, float("nan")], [1.0, -2.0], [1.0, 1e39], [1.0, True], [1.0, "1"]):
        with pytest.raises(ValueError, match="as many weights from 0.001 to 1000"):
            Ensemble(8, 20, 50, members=2, weights=bad)


def test_variants_set_a_members_weight_and_seed_offset_not_its_recipe():
    default = get_recipe("default")  # round 26's
    assert [default.member_seed(4, k) for k in range(6)] == [4, 4, 4, 4, 5, 6]
    assert default.member_weights() == [1, 1, 1, 1 / 3, 1 / 3, 1 / 3]
    assert default.member(3) == default.member(4) == default.member(5)  # the copies differ by their seed only
    assert default.member(3).arch_args == {"extended": True, "modulation": modulation.VERSION}
    assert default.problems() == [] and default.member_archs() == "escnet+escnet+texture+texture+texture+texture"
    assert default.member(2).arch_args == BANDS_TEXTURE["arch_args"] == {"extended": True, "bands": True}
    assert default.member(1) == replace(default.member(0), **PITCH_TEMPO)
    problems = " ".join(tiny_recipe(members=2, member_variants=[{}, {"weight": 0, "seed_offset": -1}]).problems())
    assert "member 2: weight must be a number from 0.001 to 1000, not 0" in problems
    assert "member 2: seed_offset must be a whole number, at least 0, not -1" in problems
    crops = tiny_recipe(members=2, member_variants=[{}, {**MODULATION_TEXTURE, "crop_frames": 40}]).problems()
    assert any("hears the modulation statistics trains on clips as they are" in p for p in crops), crops
    # more members than variants: the variants repeat with seeds beyond every offset, so no member is another's twin
    twelve = default.with_overrides(members=12)
    assert [twelve.member_seed(0, k) for k in range(12)] == [0, 0, 0, 0, 1, 2, 3, 3, 3, 3, 4, 5]
    assert len({(str(twelve.member(k)), twelve.member_seed(0, k)) for k in range(12)}) == 12
    # and recipes without offsets keep the seeds they always had (their stored models are still theirs)
    plain = tiny_recipe(members=5, member_variants=[{}, PITCH_TEMPO])
    assert [plain.member_seed(7, k) for k in range(5)] == [7, 7, 8, 8, 9]


@pytest.fixture(scope="module")
def fine_ensemble(tmp_path_factory, synth_features):
    """A tiny escnet beside two texture networks that hear the modulation statistics (seeds +0 and +1, weighted
    1/2 each), trained on the synthetic dataset with fold 5 held out."""
    d = tmp_path_factory.mktemp("fine")
    texture = {**MODULATION_TEXTURE, "epochs": 4, "weight": 0.5}
    recipe = tiny_recipe(epochs=2, members=3, member_variants=[{}, texture, {**texture, "seed_offset": 1}])
    return recipe, train(synth_features, recipe, d / "fine.pt", fold=5, seed=3), d


def test_an_ensemble_with_modulation_members_trains_scores_and_predicts(fine_ensemble, synth_features, synth_dataset,
                                                                         tmp_path):
    from esccli.audio import load_audio
    from esccli.dataset import read_metadata
    from esccli.featurize import audio_paths
    from esccli.predict import predict_files

    recipe, ens, d = fine_ensemble
    assert [m["seed"] for m in ens.meta["train"]["members"]] == [3, 3, 4]
    assert ens.meta["model"]["args"]["weights"] == [1.0, 0.5, 0.5]
    alone = train(synth_features, recipe.member(2), d / "alone.pt", fold=5, seed=4)  # member 3: seed 3 + 1
    state = checkpoint.read(ens.path)["state_dict"]
    member = {key[len("members.2."):]: v for key, v in state.items() if key.startswith("members.2.")}
    assert member.keys() == checkpoint.read(alone.path)["state_dict"].keys()
    assert all(torch.equal(member[k], checkpoint.read(alone.path)["state_dict"][k]) for k in member)
    lm = checkpoint.load(ens.path)
    assert needs_modulation(lm.model)
    assert ens.meta["train"]["metrics"]["val_acc"] == pytest.approx(evaluate(lm, synth_features, fold=5).accuracy)
    # predict computes each window's statistics from its samples, as featurize computed each clip's
    clips = [c for c in read_metadata(synth_dataset) if c.fold == 5][:3]
    rows = [synth_features.filenames.index(c.filename) for c in clips]
    params = synth_features.params
    files = []
    for c, p in zip(clips, audio_paths(synth_dataset, clips)):
        wave = load_audio(p, params.sample_rate)[:params.clip_samples]
        files.append(tmp_path / c.filename)
        sf.write(files[-1], wave, params.sample_rate, subtype="FLOAT")
    seen = []
    statistics = modulation.statistics

    def recorded(waves, sample_rate):  # what predict computes for each window
        seen.append(statistics(waves, sample_rate))
        return seen[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(modulation, "statistics", recorded)
        results = list(predict_files(files, lm, top_k=50))
    assert torch.allclose(torch.cat(seen), torch.from_numpy(synth_features.modulation[rows]), atol=1e-5)
    x = torch.from_numpy(synth_features.features[rows]).float().unsqueeze(1)
    probs = predict_logits(lm.model, x, "cpu", modulation=torch.from_numpy(synth_features.modulation[rows])).softmax(-1)
    for r, p in zip(results, probs):
        assert r.n_windows == 1
        got = {g.name: g.probability for g in r.top}
        assert max(abs(got[name] - float(p[i])) for i, name in enumerate(lm.classes)) < 0.02
    # features without the statistics (not from esc's cache) are refused for such a recipe, in one line
    with pytest.raises(EscError, match="come without them"):
        train(replace(synth_features, modulation=None), recipe, tmp_path / "no.pt", fold=5, seed=3)
    with pytest.raises(EscError, match="come without them"):
        evaluate(lm, replace(synth_features, modulation=None), fold=5)


def test_the_feature_cache_holds_each_clips_modulation_statistics(synth_features):
    assert synth_features.modulation.shape == (len(synth_features), modulation.COUNT)
    assert synth_features.modulation.dtype == np.float32 and np.isfinite(synth_features.modulation).all()
    assert np.abs(synth_features.modulation).max() > 0
