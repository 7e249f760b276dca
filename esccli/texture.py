"""Texture statistics: a clip as summary statistics of its mel band envelopes, in the manner of McDermott &
Simoncelli's sound textures. They are what models.TextureNet hears.

Every statistic leaves out the frames within 1 dB of the floor (the digital silence ESC-50 pads short clips
with), unless fewer than `min_frames` frames are above it: then every frame counts. The basic set (round 17):
- per band: the mean level in dB and its spread, and the compressed envelope's (amplitude ** 0.3) coefficient of
  variation, skewness and (log) kurtosis;
- between `groups` groups of adjacent bands: the correlations of their envelopes;
- per group: the share of its envelope's modulation power in each octave of MODULATION_BANDS.

The extended set (round 18) adds:
- per band: the mean size of the level's change from one frame to the next (flux);
- per group: the 10th, 50th and 90th percentiles of its level;
- the autocorrelation of the whole clip's envelope at ACF_LAGS (rhythm: a clock ticks, a dog barks in bursts);
- between groups: the correlations of their envelopes' changes (onsets that come together);
- the mean and spread of each frame's spectral centroid and flatness.

The per-band set (`bands`, round 20) adds, band by band rather than per group:
- the correlation of each band's envelope with the next band's;
- the 10th, 50th and 90th percentiles of each band's level.
"""

import math

import torch

# the modulation bands, in Hz: octaves from 0.5 Hz up to 25 Hz (the Nyquist rate of 20 ms frames)
MODULATION_BANDS = ((0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 8.0), (8.0, 16.0), (16.0, 25.0))
# the lags of the envelope's autocorrelation, in seconds: 1 to 128 frames of 20 ms, about 1.4x apart
ACF_LAGS = (0.02, 0.04, 0.06, 0.08, 0.12, 0.16, 0.22, 0.32, 0.44, 0.64, 0.9, 1.28, 1.8, 2.56)
PERCENTILES = (0.1, 0.5, 0.9)


def statistics_count(n_mels: int, groups: int = 16, extended: bool = False, bands: bool = False) -> int:
    """How many statistics texture_statistics gives for `n_mels` bands in `groups` groups."""
    count = 5 * n_mels + groups * (groups - 1) // 2 + groups * len(MODULATION_BANDS)
    if extended:
        count += n_mels + groups * len(PERCENTILES) + len(ACF_LAGS) + groups * (groups - 1) // 2 + 4
    if bands:
        count += n_mels - 1 + n_mels * len(PERCENTILES)
    return count


def texture_statistics(x: torch.Tensor, top_db: float = 80.0, groups: int = 16, frame_rate: float = 50.0,
                       min_frames: int = 25, extended: bool = False, bands: bool = False) -> torch.Tensor:
    """x [batch, 1, n_mels, frames] ("db" features, [-1, 1]) -> [batch, statistics_count(n_mels, groups,
    extended, bands)]: the basic statistics (see the module's docstring), then, if `extended`, the extended
    set, then, if `bands`, the per-band set."""
    db = (x[:, 0].float() - 1.0) * (top_db / 2)  # [-top_db, 0]
    b, n_mels, frames = db.shape
    loud = db.amax(1) > 1.0 - top_db  # [batch, frames]
    w = torch.where(loud.sum(1, keepdim=True) >= max(1, min(min_frames, frames)), loud, torch.ones_like(loud)).float()
    n = w.sum(1)[:, None]  # [batch, 1]
    wm = w[:, None, :]

    def moments(v):  # the weighted mean of v over frames, and v centred on it (zero on the frames left out)
        mean = (v * wm).sum(-1) / n
        return mean, (v - mean[..., None]) * wm

    db_mean, db_c = moments(db)
    env = torch.exp(db * (0.015 * math.log(10.0)))  # amplitude ** 0.3
    env_mean, c = moments(env)
    std = ((c ** 2).sum(-1) / n).sqrt() + 1e-6
    cv = std / (env_mean + 1e-6)
    skew = (c ** 3).sum(-1) / n / std ** 3
    kurt = ((c ** 4).sum(-1) / n / std ** 4 + 1e-6).log()
    spread = ((db_c ** 2).sum(-1) / n).sqrt()
    # groups of adjacent bands: envelope correlations, and modulation spectra
    g = env.reshape(b, groups, n_mels // groups, frames).mean(2)
    _, gc = moments(g)
    gc = gc / (((gc ** 2).sum(-1, keepdim=True) / n[..., None]).sqrt() + 1e-6)
    corr = (gc[:, :, None, :] * gc[:, None, :, :]).sum(-1) / n[..., None]
    upper = torch.triu_indices(groups, groups, 1, device=x.device)
    power = torch.fft.rfft(gc * torch.hann_window(frames, periodic=False, device=x.device), dim=-1).abs() ** 2
    freqs = torch.fft.rfftfreq(frames, 1.0 / frame_rate).to(x.device)
    total = power[..., 1:].sum(-1) + 1e-9
    mod = torch.stack([power[..., (freqs >= lo) & (freqs < hi)].sum(-1) for lo, hi in MODULATION_BANDS], -1)
    mod = (mod / total[..., None] + 1e-4).log() / 5
    basic = [db_mean / top_db, spread / 20, cv, skew, kurt, corr[:, upper[0], upper[1]], mod.flatten(1)]
    per_band = []
    if bands:  # each band's envelope correlated with the next band's, and each band's level percentiles
        unit = c / std[..., None]
        per_band = [(unit[:, 1:] * unit[:, :-1]).sum(-1) / n,
                    weighted_percentiles(db, w, PERCENTILES).flatten(1) / top_db]
    if not extended:
        return torch.cat(basic + per_band, 1)

    pairs = w[:, 1:] * w[:, :-1]  # [batch, frames - 1]: both frames of a step kept
    flux = ((db[..., 1:] - db[..., :-1]).abs() * pairs[:, None, :]).sum(-1) / pairs.sum(1, keepdim=True).clamp_min(1)
    levels = weighted_percentiles(db.reshape(b, groups, n_mels // groups, frames).mean(2), w, PERCENTILES)
    # the autocorrelation of the whole clip's envelope (the mean over bands), at lags in frames
    _, e = moments(env.mean(1, keepdim=True))
    e = e[:, 0]
    lags = [max(1, round(s * frame_rate)) for s in ACF_LAGS]
    acf = torch.stack([(e[:, lag:] * e[:, :-lag]).sum(-1) if lag < frames else e.new_zeros(b) for lag in lags], 1)
    acf = acf / ((e ** 2).sum(-1, keepdim=True) + 1e-9)
    # the correlations of the groups' envelope changes (not centred: a change is already about zero)
    d = (g[..., 1:] - g[..., :-1]) * pairs[:, None, :]
    d = d / ((d ** 2).sum(-1, keepdim=True).sqrt() + 1e-6)
    dcorr = d @ d.transpose(1, 2)
    # each frame's spectral centroid (as a share of the mel axis) and flatness (log geometric / arithmetic mean)
    p = torch.exp(db * (0.1 * math.log(10.0)))  # power, relative to the peak
    centroid = (p * torch.arange(n_mels, device=x.device, dtype=p.dtype)[:, None]).sum(1) / (p.sum(1) + 1e-9) / n_mels
    flatness = ((p + 1e-10).log().mean(1) - (p.mean(1) + 1e-10).log()) / 10
    shape = []
    for v in (centroid, flatness):
        mean, vc = moments(v[:, None, :])
        shape += [mean[:, 0], ((vc[:, 0] ** 2).sum(-1) / n[:, 0]).sqrt()]
    return torch.cat(basic + [flux / 10, levels.flatten(1) / top_db, acf, dcorr[:, upper[0], upper[1]],
                              torch.stack(shape, 1)] + per_band, 1)


def weighted_percentiles(v: torch.Tensor, w: torch.Tensor, qs) -> torch.Tensor:
    """The percentiles `qs` (in [0, 1]) of v [batch, k, frames] over the frames where w [batch, frames] is 1,
    interpolated linearly between ranks as torch.quantile does -> [batch, k, len(qs)]. Sorting rather than
    torch.nanquantile keeps it on devices without the latter."""
    kept = w.sum(1).clamp_min(1)  # [batch]
    ordered = torch.where(w[:, None, :] > 0, v, torch.full_like(v, float("inf"))).sort(-1).values
    out = []
    for q in qs:
        rank = q * (kept - 1)  # [batch]
        lo = rank.floor().long().clamp_min(0)
        hi = (lo + 1).clamp(max=(kept - 1).long())
        frac = (rank - lo.float())[:, None]
        at = lambda i: ordered.gather(-1, i[:, None, None].expand(-1, v.shape[1], 1))[..., 0]  # noqa: E731
        out.append(at(lo) + frac * (at(hi) - at(lo)))
    return torch.stack(out, -1)
