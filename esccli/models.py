"""The networks, and the small dataclass that says which one a checkpoint holds.

- `seed`: the student notebook's CNN, kept faithful as the baseline: four blocks of conv3x3 + BN + ReLU +
  maxpool 2x2 (64, 128, 256, 512 channels), flatten, FC 1024 + ReLU, dropout 0.5, FC 50. Its flattened layer
  makes it ~110 M parameters on 128 x 431 inputs, which is what makes it slow on a CPU.
- `escnet`: the default. A VGG-style CNN sized for a CPU (0.3 M parameters): few channels at full resolution,
  two convs per stage after that, average pooling, then a head that keeps where in frequency a pattern is
  (channels x remaining mel bins; `head="mean"` averages frequency away instead) and pools over time (max +
  mean), so it accepts any number of frames (short crops in training, whole clips at test time). The other
  arguments (`pool="max"`, a coarser `stem_pool`, more or wider `channels`) are the variants docs/ablation.md
  measured; none beat the defaults. The fast preset narrows the first stage (`channels`, recipes.FAST_CHANNELS)
  to save time, at a small cost in accuracy; both presets normalise the stem after its pooling (`stem_order`,
  STEM_ORDERS).
- `texture`: no convolutions: a clip as the summary statistics of its mel band envelopes (their levels, spread,
  skew, how bands move together, how fast they fluctuate; `texture_statistics`) through a small MLP. Alone it is
  far weaker than escnet, but it errs on other clips, which is what a member of an ensemble is for.
- `ensemble`: several networks, of one architecture or of several (`member_list`), trained apart (on differently
  augmented data or with other seeds: esccli/ensemble.py); its output is the log of their mean probability, so
  softmax gives their average (arithmetic, or geometric and renormalised: a recipe's `ensemble_mean`).
- `ShiftAverage`: any of them scored on copies of the input moved up and down the mel axis, averaged the same
  way (a recipe's `test_shifts`; not an architecture: it holds no weights).
"""

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from esccli import modulation as fine
from esccli.augment import shift_mel
from esccli.texture import statistics_count, texture_statistics


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_classes: int
    n_mels: int
    frames: int
    args: dict = field(default_factory=dict)  # architecture-specific keyword arguments

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(**d)


# What follows the stem's convolution, in order. Everything after the stem is at a quarter of its positions or
# fewer, but the stem's BatchNorm and ReLU, at full resolution, take a large share of a training step on a CPU
# (memory-bound). "bn-relu-pool" (escnet's own) pays it; "pool-bn-relu" pools the convolution first (with average
# pooling the two are one linear 4x4 filter at stride 2), "relu-pool-bn" keeps the ReLU at full resolution on the
# convolution and its bias, and normalises after pooling. docs/ablation.md (round 11) has their costs and scores.
STEM_ORDERS = ("bn-relu-pool", "pool-bn-relu", "relu-pool-bn")


def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class SeedCNN(nn.Module):
    """The student notebook's network (see module docstring)."""

    def __init__(self, n_mels: int, frames: int, n_classes: int, channels=(64, 128, 256, 512), hidden: int = 1024,
                 dropout: float = 0.5):
        super().__init__()
        layers, c_in = [], 1
        for c in channels:
            layers += conv_bn_relu(c_in, c) + [nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        h, w = n_mels, frames
        for _ in channels:
            h, w = h // 2, w // 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in * h * w, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class EscNet(nn.Module):
    """The efficient default (see module docstring). x: [batch, 1, n_mels, frames] -> logits [batch, n_classes]."""

    def __init__(self, n_mels: int, frames: int, n_classes: int, stem: int = 16, channels=(32, 64, 128),
                 dropout: float = 0.3, head: str = "flatten", pool: str = "avg",
                 stem_pool=(2, 2), stem_order: str = "bn-relu-pool"):
        super().__init__()
        if head not in ("mean", "flatten"):
            raise ValueError(f"head must be 'mean' or 'flatten', not {head!r}")
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', not {pool!r}")
        if stem_order not in STEM_ORDERS:
            raise ValueError(f"stem_order must be one of {', '.join(STEM_ORDERS)}, not {stem_order!r}")
        self.head = head
        Pool = nn.AvgPool2d if pool == "avg" else nn.MaxPool2d
        # the stem: a convolution at full resolution, then BatchNorm, ReLU and the (mel, time) reduction in
        # stem_order (STEM_ORDERS); a ReLU straight after the convolution needs its bias
        conv = nn.Conv2d(1, stem, 3, padding=1, bias=stem_order.startswith("relu"))
        after = {"bn": nn.BatchNorm2d(stem), "relu": nn.ReLU(inplace=True), "pool": Pool(tuple(stem_pool))}
        layers = [conv] + [after[name] for name in stem_order.split("-")]
        c_in = stem
        for i, c in enumerate(channels):
            layers += conv_bn_relu(c_in, c) + conv_bn_relu(c, c)
            if i < len(channels) - 1:
                layers.append(Pool(2))
            c_in = c
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        bins = n_mels // stem_pool[0] // 2 ** (len(channels) - 1)  # frequency bins left after the poolings
        self.fc = nn.Linear(c_in * (bins if head == "flatten" else 1), n_classes)

    def forward(self, x):
        x = self.features(x)
        if self.head == "mean":
            x = x.mean(dim=2)  # mean over frequency -> [batch, channels, time]
        else:
            x = x.flatten(1, 2)  # keep where in frequency: [batch, channels * bins, time]
        x = x.amax(dim=2) + x.mean(dim=2)  # max + mean over time
        return self.fc(self.dropout(x))


class TextureNet(nn.Module):
    """A clip as its texture statistics (esccli/texture.py), through a small MLP: x [batch, 1, n_mels, frames]
    -> logits. It sees no time-frequency pattern, only how each band's level is distributed, how bands move
    together and how fast they fluctuate: a view that differs from a CNN's, meant for steady sounds (wind, engines,
    rain) that the CNNs confuse. `frame_rate` (frames per second) and `top_db` must be those of the features;
    `extended` adds the statistics of round 18 to those of round 17 (the default's member has them), and `bands`
    those of round 20, per band (the fast preset's member has both). `modulation`, when not 0, is the version of
    the clips' fine-rate modulation statistics (esccli/modulation.py) that it also hears: they come from the
    waveform, not from x, and are passed beside it (forward's `modulation`)."""

    def __init__(self, n_mels: int, frames: int, n_classes: int, hidden: int = 512, groups: int = 16,
                 frame_rate: float = 50.0, top_db: float = 80.0, dropout=(0.2, 0.5), extended: bool = False,
                 bands: bool = False, modulation: int = 0):
        super().__init__()
        if groups < 2 or n_mels % groups:
            raise ValueError(f"groups must be at least 2 and divide n_mels ({n_mels}), not {groups}")
        if modulation not in (0, fine.VERSION):
            raise ValueError(f"modulation statistics of version {modulation} are not those of this esc "
                             f"({fine.VERSION})")
        self.stats = dict(top_db=top_db, groups=groups, frame_rate=frame_rate, extended=extended, bands=bands)
        self.modulation = modulation
        dim = statistics_count(n_mels, groups, extended, bands) + (fine.COUNT if modulation else 0)
        self.net = nn.Sequential(nn.BatchNorm1d(dim), nn.Dropout(dropout[0]), nn.Linear(dim, hidden),
                                 nn.ReLU(inplace=True), nn.Dropout(dropout[1]), nn.Linear(hidden, n_classes))

    def front_end(self, x, modulation=None):
        """What the MLP hears: the clips' statistics (and their modulation statistics [batch, modulation.COUNT],
        given when it hears them), in float32 whatever the autocast around it. It has no weights, so training on
        clips as they are (no augmentation) can compute it once per clip (train.train)."""
        with torch.autocast(x.device.type, enabled=False):
            stats = texture_statistics(x, **self.stats)
        if not self.modulation:
            return stats
        if modulation is None:
            raise ValueError("this network hears the clips' modulation statistics: pass them beside the features")
        return torch.cat([stats, modulation.to(stats.device, torch.float32)], 1)

    @property
    def head(self) -> nn.Module:
        return self.net

    def forward(self, x, modulation=None):
        return self.net(self.front_end(x, modulation))


def needs_modulation(model: nn.Module) -> bool:
    """Whether `model` (or one of its members) hears the clips' modulation statistics, so that they must be passed
    to it beside the features: model(x, modulation)."""
    return any(isinstance(m, TextureNet) and m.modulation for m in model.modules())


def apply_net(net: nn.Module, x, modulation=None):
    """net(x), with the modulation statistics if it hears them."""
    return net(x, modulation) if needs_modulation(net) else net(x)


def _weighted_mean(values: torch.Tensor, weights) -> torch.Tensor:
    """The mean over the first axis, weighted (None: equally)."""
    if weights is None:
        return values.mean(0)
    w = torch.as_tensor(weights, dtype=values.dtype, device=values.device)
    return (values * w.view(-1, *[1] * (values.ndim - 1))).sum(0) / w.sum()


def log_mean_probability(outputs: list[torch.Tensor], weights=None) -> torch.Tensor:
    """The log of the mean of the outputs' softmax probabilities (logits or log-probabilities alike), each output
    counted with its weight (None: all alike)."""
    probs = _weighted_mean(torch.stack([o.float().softmax(-1) for o in outputs]), weights)
    return probs.clamp_min(1e-12).log()


def log_geometric_mean_probability(outputs: list[torch.Tensor], weights=None) -> torch.Tensor:
    """The log of the geometric mean of the outputs' softmax probabilities (each counted with its weight), renormalised
    to sum to 1: the log-softmax of their (weighted) mean log-probability."""
    return _weighted_mean(torch.stack([o.float().log_softmax(-1) for o in outputs]), weights).log_softmax(-1)


ENSEMBLE_MEANS = {"arithmetic": log_mean_probability, "geometric": log_geometric_mean_probability}


class Ensemble(nn.Module):
    """`members` networks of the architecture `member` (with `member_args`), or, given `member_list`, one network
    per entry ({"arch": ..., "args": {...}}: members of different architectures); x -> log of the members' mean
    probability [batch, n_classes], arithmetic or (`mean="geometric"`) geometric (ENSEMBLE_MEANS), each member
    counted with its weight in `weights` (None: all alike)."""

    def __init__(self, n_mels: int, frames: int, n_classes: int, member: str = "escnet", members: int = 2,
                 member_args: dict | None = None, member_list: list | None = None, mean: str = "arithmetic",
                 weights: list | None = None):
        super().__init__()
        if mean not in ENSEMBLE_MEANS:
            raise ValueError(f"unknown ensemble mean {mean!r}; known: {', '.join(ENSEMBLE_MEANS)}")
        if weights is not None and (len(weights) != members or not all(
                type(w) in (int, float) and 1e-3 <= w <= 1e3 for w in weights)):
            raise ValueError(f"an ensemble of {members} members needs as many weights from 0.001 to 1000, "
                             f"not {weights!r}")
        self.mean = ENSEMBLE_MEANS[mean]
        self.weights = None if weights is None else [float(w) for w in weights]
        member_list = member_list or [{"arch": member, "args": member_args or {}}] * members
        if len(member_list) != members:
            raise ValueError(f"an ensemble of {members} members cannot have {len(member_list)} listed")
        for m in member_list:
            if m["arch"] not in ARCHITECTURES or m["arch"] == "ensemble":
                raise ValueError(f"unknown member architecture {m['arch']!r}")
        if members < 1:
            raise ValueError(f"an ensemble needs at least one member, not {members}")
        self.members = nn.ModuleList(ARCHITECTURES[m["arch"]](n_mels=n_mels, frames=frames, n_classes=n_classes,
                                                              **m["args"]) for m in member_list)

    def forward(self, x, modulation=None):
        return self.mean([apply_net(m, x, modulation) for m in self.members], self.weights)


class ShiftAverage(nn.Module):
    """A network scored on copies of its input moved up and down the mel axis by `shifts` bins (0: as is), averaged:
    x -> log of the mean probability over the copies. It has no weights of its own."""

    def __init__(self, net: nn.Module, shifts):
        super().__init__()
        self.net = net
        self.shifts = [int(b) for b in shifts]

    def forward(self, x, modulation=None):
        return log_mean_probability([apply_net(self.net, shift_mel(x, torch.full((x.shape[0],), b)), modulation)
                                     for b in self.shifts])


def with_test_shifts(net: nn.Module, shifts) -> nn.Module:
    """`net` scored as a recipe's `test_shifts` say: itself for [0], else its ShiftAverage."""
    return net if list(shifts) == [0] else ShiftAverage(net, shifts)


def without_test_shifts(model: nn.Module) -> nn.Module:
    """The network a model scores with, without the averaging over shifted copies its recipe may put around it."""
    return model.net if isinstance(model, ShiftAverage) else model


ARCHITECTURES = {"seed": SeedCNN, "escnet": EscNet, "texture": TextureNet, "ensemble": Ensemble}


def ensemble_config(members: list[ModelConfig], mean: str = "arithmetic", weights: list | None = None) -> ModelConfig:
    """The config of an ensemble of these member networks: `member` and `member_args` when they share one
    architecture and its arguments, else each one's in `member_list` (and `member` names them all, joined by "+");
    `mean` only when it is not the arithmetic mean that ensembles made before it existed use, and `weights` only
    when they are not all alike."""
    first = members[0]
    if all((m.arch, m.args) == (first.arch, first.args) for m in members):
        args = {"member": first.arch, "members": len(members), "member_args": dict(first.args)}
    else:
        args = {"member": "+".join(m.arch for m in members), "members": len(members),
                "member_list": [{"arch": m.arch, "args": dict(m.args)} for m in members]}
    if mean != "arithmetic":
        args["mean"] = mean
    if weights is not None and len(set(weights)) > 1:
        args["weights"] = list(weights)
    return ModelConfig("ensemble", first.n_classes, first.n_mels, first.frames, args)


def build_model(config: ModelConfig) -> nn.Module:
    try:
        cls = ARCHITECTURES[config.arch]
    except KeyError:
        raise ValueError(f"unknown architecture {config.arch!r}; known: {', '.join(ARCHITECTURES)}") from None
    return cls(n_mels=config.n_mels, frames=config.frames, n_classes=config.n_classes, **config.args)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
