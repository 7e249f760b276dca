import math

import pytest
import torch

from esccli.models import MODULATION_BANDS, TextureNet, texture_statistics

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
