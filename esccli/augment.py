"""On-the-fly augmentation of batches of spectrograms, each a small function of (batch, generator).

x is float [batch, 1, n_mels, frames]. All randomness comes from the torch.Generator passed in, so that a
seeded run is repeatable and a resumed run replays exactly what an uninterrupted one would have done.
"""

import torch


def random_crop(x: torch.Tensor, frames: int, g: torch.Generator) -> torch.Tensor:
    """A random window of `frames` frames from each clip (a random time shift that also shortens training)."""
    total = x.shape[-1]
    if frames >= total:
        return x
    starts = torch.randint(0, total - frames + 1, (x.shape[0],), generator=g)
    idx = starts[:, None] + torch.arange(frames)[None, :]  # [batch, frames]
    return torch.gather(x, 3, idx[:, None, None, :].expand(-1, x.shape[1], x.shape[2], -1))


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


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, g: torch.Generator):
    """Mix each clip with another of the batch: returns (mixed x, y, y of the partner, weight of y)."""
    if alpha <= 0:
        return x, y, y, 1.0
    lam = beta_sample(alpha, g)
    lam = max(lam, 1.0 - lam)  # the first label stays the dominant one
    perm = torch.randperm(x.shape[0], generator=g)
    return lam * x + (1.0 - lam) * x[perm], y, y[perm], lam


def beta_sample(alpha: float, g: torch.Generator) -> float:
    """One Beta(alpha, alpha) draw from `g` by Johnk's method (exact; torch's Beta takes no generator)."""
    while True:
        u = torch.rand(2, generator=g, dtype=torch.float64).clamp_min(1e-12)
        a, b = float(u[0]) ** (1.0 / alpha), float(u[1]) ** (1.0 / alpha)
        if 0.0 < a + b <= 1.0:
            return a / (a + b)
