"""On-the-fly augmentation of batches of spectrograms, each a small function of (batch, generator).

x is float [batch, 1, n_mels, frames]. All randomness comes from the torch.Generator passed in, so that a
seeded run is repeatable and a resumed run replays exactly what an uninterrupted one would have done.
"""

import math

import torch


def random_crop(x: torch.Tensor, frames: int, g: torch.Generator, energy: bool = False,
                stretch: float = 1.0) -> torch.Tensor:
    """A random window of `frames` frames from each clip (a random time shift that also shortens training).

    energy=True draws the window with a probability proportional to how loud it is (the mean of the features,
    which are 0 dB..floor scaled to 1..-1), so that a crop seldom lands on the silence a short clip is padded with.
    stretch > 1 also changes each clip's tempo by a random factor between 1/stretch and stretch (log-uniform):
    the window read is `frames * factor` long, around the same centre, and resampled to `frames` frames by linear
    interpolation (a time stretch on the spectrogram; frames past either end repeat the edge frame).
    """
    total = x.shape[-1]
    if frames >= total:
        return x
    if energy:
        loud = (x.mean(dim=(1, 2)) + 1.0).clamp_min(0.0)  # [batch, total] >= 0
        c = torch.nn.functional.pad(loud.cumsum(1), (1, 0))
        windows = c[:, frames:] - c[:, :-frames]  # [batch, total - frames + 1]: loudness of each window
        starts = torch.multinomial(windows + 1e-3 * windows.mean(1, keepdim=True) + 1e-12, 1, generator=g)[:, 0]
    else:
        starts = torch.randint(0, total - frames + 1, (x.shape[0],), generator=g)
    if stretch <= 1.0:
        return _frames(x, starts[:, None] + torch.arange(frames)[None, :])
    factor = torch.exp((2 * torch.rand(x.shape[0], 1, generator=g) - 1) * math.log(stretch))  # [batch, 1]
    offsets = torch.arange(frames, dtype=torch.float32)[None, :] + 0.5 - frames / 2
    pos = (starts[:, None] + frames / 2 + offsets * factor - 0.5).clamp(0, total - 1)  # [batch, frames]
    lo = pos.floor().long()
    w = (pos - lo)[:, None, None, :]
    return _frames(x, lo) * (1 - w) + _frames(x, (lo + 1).clamp_max(total - 1)) * w


def _frames(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[b, :, :, idx[b]] for each clip b: idx is [batch, frames]."""
    return torch.gather(x, 3, idx[:, None, None, :].expand(-1, x.shape[1], x.shape[2], -1))


def shift_mel(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Move clip i up (shifts[i] > 0) or down the mel axis by shifts[i] whole bins; the bins left empty are set to
    the clip's floor. x: [batch, channels, n_mels, frames]; shifts: [batch] integers."""
    n_mels = x.shape[2]
    src = torch.arange(n_mels, device=x.device)[None, :] - shifts.to(x.device).view(-1, 1)  # output bin i <- i - shift
    moved = torch.gather(x, 2, src.clamp(0, n_mels - 1)[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[3]))
    inside = ((src >= 0) & (src < n_mels))[:, None, :, None]
    return torch.where(inside, moved, x.amin(dim=(1, 2, 3), keepdim=True))


def freq_shift(x: torch.Tensor, max_bins: int, g: torch.Generator) -> torch.Tensor:
    """Move each clip up or down the mel axis by a random whole number of bins in [-max_bins, max_bins] (a pitch
    shift, roughly: mel bins are nearly logarithmic above 1 kHz); the bins left empty are set to the clip's floor."""
    if max_bins <= 0:
        return x
    return shift_mel(x, torch.randint(-max_bins, max_bins + 1, (x.shape[0],), generator=g))


def random_eq(x: torch.Tensor, max_db: float, db_range: float, g: torch.Generator, points: int = 4) -> torch.Tensor:
    """Pass each clip through a random filter: a gain curve across the mel axis, linear between `points` evenly
    spaced gains drawn uniformly in [-max_db, max_db] dB (in the spirit of FilterAugment, Nam et al. 2022, which
    draws bands with random edges instead). The features are dB scaled to [-1, 1] over `db_range` dB
    (FeatureParams.top_db). Unlike FilterAugment, the clip is then rescaled to peak at 0 dB, as every whole clip
    does: a crop that missed its clip's loudest moment is brought up to that level too. Bins at the floor
    (silence) stay there. Both carry part of the measured gain (docs/ablation.md, round 5)."""
    if max_db <= 0:
        return x
    return apply_curve(x, random_curve(x.shape[0], x.shape[2], max_db, points, g), db_range)


def apply_curve(x: torch.Tensor, curve: torch.Tensor, db_range: float) -> torch.Tensor:
    """random_eq's filter with a given gain curve in dB ([batch or 1, 1, n_mels, 1]): added to the features (dB
    scaled to [-1, 1] over `db_range` dB), the clip rescaled to peak at 0 dB, bins at the floor left there."""
    y = x + curve / (db_range / 2)  # in feature units
    y = y - (y.amax(dim=(1, 2, 3), keepdim=True) - 1.0)
    return torch.where(x <= -1.0, x, y.clamp_min(-1.0))


def noise_floor(x: torch.Tensor, max_db: float, db_range: float, g: torch.Generator, tilt_db: float = 6.0,
                points: int = 4, jitter_db: float = 3.0) -> torch.Tensor:
    """Add a background to each clip, as a noisier recording would have: noise at a level drawn uniformly between
    the features' floor and `max_db` above it, coloured by a random gain curve across the mel axis (as in random_eq,
    +-tilt_db at `points` points) and varying by `jitter_db` dB (standard deviation) from bin to bin and frame to
    frame, added to the clip as power (each bin keeps the louder of the two, roughly), so digital silence
    becomes a quiet background and the clip's quietest parts are partly covered. The features are dB scaled to
    [-1, 1] over `db_range` dB (FeatureParams.top_db)."""
    if max_db <= 0:
        return x
    level = -db_range + torch.rand(x.shape[0], 1, 1, 1, generator=g) * max_db  # dB below the clip's 0 dB peak
    colour = random_curve(x.shape[0], x.shape[2], tilt_db, points, g)
    noise_db = level + colour + jitter_db * torch.randn(x.shape, generator=g)
    return from_power(to_power(x, db_range) + torch.pow(10.0, noise_db / 10.0), db_range).clamp(-1.0, 1.0)


def reverb(x: torch.Tensor, max_s: float, db_range: float, frame_s: float, g: torch.Generator,
           wet_db: tuple = (-12.0, 0.0), tilt: float = 0.5) -> torch.Tensor:
    """Play each clip in a random room, roughly: every frame's mel power leaves an exponentially decaying tail
    behind it (in power, y[t] = x[t] + tail[t], tail[t] = a * tail[t - 1] + wet * (1 - a) * x[t]), with a
    reverberation time (60 dB of decay) drawn uniformly up to `max_s` seconds, and (1 - tilt) times as long at the
    top of the mel axis, linearly in between, as rooms damp high frequencies faster, and a tail carrying wet_db dB
    (uniform) of the direct sound's energy. Only what is above the features' floor echoes (silence stays silent),
    and a clip that the tails made louder than 0 dB is brought back to peak there, as every whole clip does.
    frame_s: the seconds between frames (hop / sample rate); the features are dB scaled to [-1, 1] over `db_range`
    dB (FeatureParams.top_db)."""
    if max_s <= 0:
        return x
    b, _, n_mels, frames = x.shape
    rt60 = torch.rand(b, 1, 1, generator=g) * max_s  # [batch, 1, 1] s
    rt60 = rt60 * (1.0 - tilt * torch.linspace(0.0, 1.0, n_mels)[None, :, None])  # [batch, n_mels, 1]
    a = torch.pow(10.0, -6.0 * frame_s / rt60.clamp_min(1e-6))  # power kept per frame (60 dB = 10^-6 in rt60 s)
    lo, hi = wet_db
    wet = torch.pow(10.0, (lo + torch.rand(b, 1, 1, generator=g) * (hi - lo)) / 10.0)
    power = to_power(x[:, 0], db_range)  # [batch, n_mels, frames]
    sound = (power - 10.0 ** (-db_range / 10.0)).clamp_min(0.0)  # the power above the floor (-db_range dB)
    feed = wet * (1.0 - a) * sound
    tails, tail = [], torch.zeros_like(power[..., 0:1])
    for t in range(frames):
        tail = a * tail + feed[..., t:t + 1]
        tails.append(tail)
    y = from_power(power + torch.cat(tails, dim=-1), db_range)[:, None]
    return (y - (y.amax(dim=(1, 2, 3), keepdim=True) - 1.0).clamp_min(0.0)).clamp_min(-1.0)


def random_curve(batch: int, n_mels: int, max_db: float, points: int, g: torch.Generator) -> torch.Tensor:
    """A random gain curve in dB per clip, [batch, 1, n_mels, 1]: linear between `points` evenly spaced gains
    drawn uniformly in [-max_db, max_db]."""
    gains = (2 * torch.rand(batch, 1, points, generator=g) - 1) * max_db  # [batch, 1, points] dB
    return torch.nn.functional.interpolate(gains, size=n_mels, mode="linear", align_corners=True)[:, :, :, None]


def to_power(x: torch.Tensor, db_range: float) -> torch.Tensor:
    """Features that are dB scaled to [-1, 1] over `db_range` dB (x = 1 + dB / (db_range / 2)) as power, 1 at 0 dB."""
    return torch.pow(10.0, db_range / 20.0 * (x - 1.0))


def from_power(power: torch.Tensor, db_range: float) -> torch.Tensor:
    """to_power's inverse (unclamped: powers below the floor give features below -1)."""
    return 1.0 + torch.log10(power) / (db_range / 20.0)


def random_roll(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Rotate each clip in time by a random number of frames (a time shift that keeps every frame)."""
    total = x.shape[-1]
    shifts = torch.randint(0, total, (x.shape[0],), generator=g)
    return _frames(x, (torch.arange(total)[None, :] + shifts[:, None]) % total)


def mask_bands(x: torch.Tensor, count: int, width: int, axis: int, g: torch.Generator) -> torch.Tensor:
    """SpecAugment: `count` bands of up to `width` bins along `axis` (2 = mel, 3 = time) set to the clip's floor."""
    if count <= 0 or width <= 0:
        return x
    size = x.shape[axis]
    b = x.shape[0]
    keep = torch.ones(b, size, dtype=torch.bool)
    pos = torch.arange(size)[None, :]
    for _ in range(count):
        w = torch.randint(0, width + 1, (b, 1), generator=g)
        start = (torch.rand(b, 1, generator=g) * (size - w + 1)).long()
        keep &= ~((pos >= start) & (pos < start + w))
    shape = [b, 1, 1, 1]
    shape[axis] = size
    floor = x.amin(dim=(1, 2, 3), keepdim=True)
    return torch.where(keep.view(shape), x, floor)


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, g: torch.Generator, db_range: float = 0.0):
    """Mix each clip with another of the batch: returns (mixed x, y, y of the partner, weight of y).

    db_range = 0 mixes the features themselves (a weighted mean of dB values). db_range > 0 says that the features
    are dB scaled linearly to [-1, 1] over that many dB (FeatureParams.top_db) and mixes the sounds instead: the
    weighted sum of the two clips' mel powers, back in dB (as if the waveforms had been added, each at its own
    peak level scaled by its weight: the louder clip wins each bin, as in real mixtures).
    """
    if alpha <= 0:
        return x, y, y, 1.0
    lam = beta_sample(alpha, g)
    lam = max(lam, 1.0 - lam)  # the first label stays the dominant one
    perm = torch.randperm(x.shape[0], generator=g)
    if db_range <= 0:
        return lam * x + (1.0 - lam) * x[perm], y, y[perm], lam
    power = lam * to_power(x, db_range) + (1.0 - lam) * to_power(x[perm], db_range)
    return from_power(power, db_range).clamp_min(-1.0), y, y[perm], lam


def beta_sample(alpha: float, g: torch.Generator) -> float:
    """One Beta(alpha, alpha) draw from `g` by Johnk's method (exact; torch's Beta takes no generator)."""
    while True:
        u = torch.rand(2, generator=g, dtype=torch.float64).clamp_min(1e-12)
        a, b = float(u[0]) ** (1.0 / alpha), float(u[1]) ** (1.0 / alpha)
        if 0.0 < a + b <= 1.0:
            return a / (a + b)
