import math

import pytest
import torch

from esccli.models import TextureNet
from esccli.texture import MODULATION_BANDS, statistics_count, texture_statistics

N_MELS, FRAMES, GROUPS = 32, 250, 16


def as_features(db: torch.Tensor) -> torch.Tensor:
    """dB below the peak [batch, n_mels, frames] -> "db" features [batch, 1, n_mels, frames] in [-1, 1]."""
    return (db / 40.0 + 1.0).unsqueeze(1)


def split(stats: torch.Tensor) -> dict:
    names = [("mean", N_MELS), ("spread", N_MELS), ("cv", N_MELS), ("skew", N_MELS), ("kurt", N_MELS),
             ("corr", GROUPS * (GROUPS - 1) // 2), ("mod", GROUPS * len(MODULATION_BANDS))]
    out, i = {}, 0
    for name, n in names:
        out[name] = stats[:, i:i + n]
        i += n
    assert i == stats.shape[1]
    return out


def noisy(frames: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return -30.0 + 6.0 * torch.randn(1, N_MELS, frames, generator=g)


def test_statistics_leave_out_the_silence_a_short_clip_is_padded_with():
    clip = noisy(150, 0)
    padded = torch.cat([clip, torch.full((1, N_MELS, 100), -80.0)], dim=2)
    a, b = split(texture_statistics(as_features(clip))), split(texture_statistics(as_features(padded)))
    for name in ("mean", "spread", "cv", "skew", "kurt", "corr"):
        assert torch.allclose(a[name], b[name], atol=1e-4), name
    # counted with the silence, the mean level would be 20 dB lower (-50 dB rather than -30)
    assert float(b["mean"].mean()) * 80 == pytest.approx(float(clip.mean()), abs=0.01)


def test_a_clip_that_is_nearly_all_silence_is_taken_whole():
    db = torch.full((1, N_MELS, FRAMES), -80.0)
    db[:, :, :5] = -10.0  # 5 loud frames: too few to describe, so every frame counts
    s = split(texture_statistics(as_features(db)))
    assert float(s["mean"][0, 0]) * 80 == pytest.approx((5 * -10.0 + 245 * -80.0) / 250, abs=1e-3)
    assert torch.isfinite(texture_statistics(as_features(db))).all()


def test_modulation_power_lands_in_the_octave_of_the_envelope_rate():
    t = torch.arange(FRAMES) / 50.0  # 20 ms frames
    for rate, band in ((1.5, 1), (6.0, 3), (12.0, 4)):
        db = -20.0 + 10.0 * torch.sin(2 * math.pi * rate * t).expand(1, N_MELS, FRAMES)
        mod = split(texture_statistics(as_features(db)))["mod"].reshape(GROUPS, len(MODULATION_BANDS))
        assert (mod.argmax(1) == band).all(), (rate, mod[0])


def test_correlations_of_bands_that_move_together_or_apart():
    env = torch.randn(FRAMES, generator=torch.Generator().manual_seed(1))
    db = -30.0 + 5.0 * env.expand(1, N_MELS, FRAMES).clone()
    db[:, N_MELS // 2:] = -30.0 - 5.0 * env  # the upper half moves against the lower half
    corr = split(texture_statistics(as_features(db)))["corr"][0]
    upper = torch.triu_indices(GROUPS, GROUPS, 1)
    same_half = (upper[0] < GROUPS // 2) == (upper[1] < GROUPS // 2)
    assert (corr[same_half] > 0.99).all() and (corr[~same_half] < -0.9).all()


def test_texture_net_scores_clips_of_any_length_and_checks_its_groups():
    net = TextureNet(N_MELS, FRAMES, 50).eval()
    for frames in (40, FRAMES):
        assert net(as_features(noisy(frames, 2).expand(3, -1, -1))).shape == (3, 50)
    with pytest.raises(ValueError, match="divide n_mels"):
        TextureNet(30, FRAMES, 50)


EXTENDED = [("flux", N_MELS), ("levels", GROUPS * 3), ("acf", 14), ("dcorr", GROUPS * (GROUPS - 1) // 2),
            ("shape", 4)]


def split_extended(stats: torch.Tensor) -> dict:
    basic = 5 * N_MELS + GROUPS * (GROUPS - 1) // 2 + GROUPS * len(MODULATION_BANDS)
    out, i = {}, basic
    for name, n in EXTENDED:
        out[name] = stats[:, i:i + n]
        i += n
    assert i == stats.shape[1] == statistics_count(N_MELS, GROUPS, extended=True)
    return out


def test_extended_statistics_add_to_the_basic_ones_and_ignore_padding_too():
    clip = noisy(150, 3)
    padded = torch.cat([clip, torch.full((1, N_MELS, 100), -80.0)], dim=2)
    basic = texture_statistics(as_features(clip))
    a, b = texture_statistics(as_features(clip), extended=True), texture_statistics(as_features(padded), extended=True)
    n = basic.shape[1]
    assert torch.equal(a[:, :n], basic)  # the round-17 statistics are unchanged
    assert torch.allclose(a[:, n:], b[:, n:], atol=1e-4)  # (their modulation shares are not: see above)
    assert torch.isfinite(texture_statistics(as_features(torch.full((2, N_MELS, 30), -80.0)), extended=True)).all()
    short = split_extended(texture_statistics(as_features(noisy(40, 6)), extended=True))  # 0.8 s: lags beyond it
    assert all(torch.isfinite(v).all() for v in short.values()) and torch.equal(short["acf"][0, -3:], torch.zeros(3))


def test_level_percentiles_are_those_of_the_loud_frames():
    db = torch.full((1, N_MELS, FRAMES), -80.0)
    levels = -60.0 + 50.0 * torch.rand(N_MELS // GROUPS, 101, generator=torch.Generator().manual_seed(4))
    db[0, :, :101] = levels.repeat(GROUPS, 1)  # every group has the same 2 bands; the rest is silence
    got = split_extended(texture_statistics(as_features(db), extended=True))["levels"].reshape(GROUPS, 3) * 80
    want = torch.quantile(levels.mean(0), torch.tensor([0.1, 0.5, 0.9]))
    assert torch.allclose(got, want.expand(GROUPS, 3), atol=1e-3)


def split_bands(stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-band set at the end of the statistics: adjacent-band correlations, and each band's percentiles."""
    assert stats.shape[1] == statistics_count(N_MELS, GROUPS, extended=True, bands=True)
    adj, levels = stats[:, -4 * N_MELS + 1:-3 * N_MELS], stats[:, -3 * N_MELS:]
    return adj, levels.reshape(len(stats), N_MELS, 3) * 80


def test_per_band_statistics_follow_the_others_and_describe_each_band():
    clip = noisy(150, 7)
    padded = torch.cat([clip, torch.full((1, N_MELS, 100), -80.0)], dim=2)
    extended = texture_statistics(as_features(clip), extended=True)
    a = texture_statistics(as_features(clip), extended=True, bands=True)
    assert torch.equal(a[:, :extended.shape[1]], extended)  # the extended statistics are unchanged
    b = texture_statistics(as_features(padded), extended=True, bands=True)
    assert torch.allclose(a[:, extended.shape[1]:], b[:, extended.shape[1]:], atol=1e-4)  # padding is left out
    basic = texture_statistics(as_features(clip))
    without = texture_statistics(as_features(clip), bands=True)
    assert without.shape[1] == statistics_count(N_MELS, GROUPS, bands=True)
    assert torch.equal(without[:, :basic.shape[1]], basic) and torch.equal(without[:, basic.shape[1]:],
                                                                         a[:, extended.shape[1]:])
    # the bands' percentiles are those of their loud frames; bands that move alike correlate, against: anti-
    env = torch.randn(FRAMES, generator=torch.Generator().manual_seed(8))
    db = torch.full((1, N_MELS, FRAMES + 50), -80.0)
    db[0, :, :FRAMES] = -30.0 + 5.0 * env * (-1.0) ** (torch.arange(N_MELS)[:, None] // 2)  # pairs alternate
    db[0, :, :FRAMES] += torch.arange(N_MELS)[:, None] * 0.5  # and each band is a little louder than the last
    adj, levels = split_bands(texture_statistics(as_features(db), extended=True, bands=True))
    assert torch.allclose(levels[0], torch.quantile(db[0, :, :FRAMES], torch.tensor([0.1, 0.5, 0.9]), dim=1).T,
                          atol=1e-3)
    together = torch.arange(N_MELS - 1) % 2 == 0  # bands 0-1, 2-3, ... move alike; 1-2, 3-4, ... against
    assert (adj[0, together] > 0.99).all() and (adj[0, ~together] < -0.9).all()  # (envelopes are dB made linear)


def test_envelope_autocorrelation_peaks_at_the_period_and_flux_grows_with_change():
    t = torch.arange(FRAMES, dtype=torch.float32)
    ticks = torch.where(t % 16 < 2, -10.0, -50.0).expand(1, N_MELS, FRAMES)  # a tick every 16 frames (0.32 s)
    s = split_extended(texture_statistics(as_features(ticks), extended=True))
    acf = s["acf"][0]  # lags of 1, 2, 3, 4, 6, 8, 11, 16, ... frames
    assert int(acf[4:9].argmax()) + 4 == 7 and float(acf[7]) > 0.9 and float(acf[5]) < 0  # 16 frames, not 8
    steady = split_extended(texture_statistics(as_features(noisy(FRAMES, 5) * 0.2 - 24.0), extended=True))
    # 40 dB steps: 15 up (the first tick starts the clip) and 16 down, over FRAMES - 1 steps
    assert float(s["flux"].mean()) * 10 == pytest.approx(40.0 * 31 / (FRAMES - 1), rel=1e-4)
    assert float(steady["flux"].mean()) < float(s["flux"].mean())


def test_statistics_computed_once_train_the_same_network_as_computed_in_each_step(synth_features, tmp_path,
                                                                                   monkeypatch):
    from conftest import tiny_recipe

    from esccli import checkpoint
    from esccli.recipes import TEXTURE, Recipe
    from esccli.train import train

    recipe = tiny_recipe(**{**TEXTURE, "epochs": 3, "batch_size": 8})
    assert recipe.members == 1 and recipe.sees_clips_as_they_are()
    calls = []
    front_end = TextureNet.front_end
    monkeypatch.setattr(TextureNet, "front_end", lambda self, x, *m: calls.append(len(x)) or front_end(self, x, *m))
    once = train(synth_features, recipe, tmp_path / "once.pt", fold=5, seed=2)
    cached_calls, calls[:] = list(calls), []
    monkeypatch.setattr(Recipe, "sees_clips_as_they_are", lambda self: False)
    each = train(synth_features, recipe, tmp_path / "each.pt", fold=5, seed=2)
    # once: every clip in chunks of EVAL_BATCH, then only the held-out fold's validations; in each step: 3 epochs
    n, scored = len(synth_features.targets), (synth_features.folds == 5).sum()
    assert sum(cached_calls) == n + scored and calls.count(8) == 3 * ((n - scored) // 8)
    a, b = checkpoint.read(once.path)["state_dict"], checkpoint.read(each.path)["state_dict"]
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    assert once.meta["train"]["metrics"]["val_acc"] == each.meta["train"]["metrics"]["val_acc"]


# the Recipe fields that do not change what a training batch's clips look like (recipes.INPUT_FIELDS lists those
# that do): a field added to Recipe fails the test below until it is put on one side
LEARNING_FIELDS = {"arch", "arch_args", "features", "epochs", "batch_size", "optimizer", "lr", "weight_decay",
                   "schedule", "warmup_epochs", "step_every", "step_gamma", "label_smoothing", "ema_decay",
                   "test_shifts", "channels_last", "allow_bf16", "val_every", "members", "member_variants",
                   "ensemble_mean", "members_side_by_side"}


def test_every_recipe_field_changes_the_clips_or_not_and_each_augmentation_is_seen():
    import dataclasses

    from esccli.recipes import INPUT_FIELDS, Recipe

    fields = {f.name for f in dataclasses.fields(Recipe)}
    assert fields == set(INPUT_FIELDS) | LEARNING_FIELDS and not set(INPUT_FIELDS) & LEARNING_FIELDS
    plain = Recipe(crop_frames=0, freq_masks=0, time_masks=0, mixup_alpha=0.0)
    assert plain.sees_clips_as_they_are()
    for change in ({"crop_frames": 50}, {"stretch": 1.2}, {"freq_shift": 1}, {"eq_db": 3.0}, {"noise_db": 3.0},
                   {"reverb_s": 0.3}, {"time_roll": True}, {"freq_masks": 1}, {"time_masks": 1},
                   {"mixup_alpha": 0.2}):
        assert not dataclasses.replace(plain, **change).sees_clips_as_they_are(), change
    # the others act only with one of those on (Recipe.problems says so for each)
    for change in ({"stretch": 1.2}, {"early_crop_frames": 20, "early_crop_share": 0.5}, {"mixup_power": True}):
        assert dataclasses.replace(plain, **change).problems(), change
