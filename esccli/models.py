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
- `ensemble`: several networks of one architecture, trained apart (on differently augmented data or with other
  seeds: esccli/ensemble.py); its output is the log of their mean probability, so softmax gives their average.
- `ShiftAverage`: any of them scored on copies of the input moved up and down the mel axis, averaged the same
  way (a recipe's `test_shifts`; not an architecture: it holds no weights).
"""

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from esccli.augment import shift_mel


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


def log_mean_probability(outputs: list[torch.Tensor]) -> torch.Tensor:
    """The log of the mean of the outputs' softmax probabilities (logits or log-probabilities alike)."""
    probs = torch.stack([o.float().softmax(-1) for o in outputs]).mean(0)
    return probs.clamp_min(1e-12).log()


class Ensemble(nn.Module):
    """`members` networks of the architecture `member`; x -> log of the members' mean probability [batch, n_classes]."""

    def __init__(self, n_mels: int, frames: int, n_classes: int, member: str = "escnet", members: int = 2,
                 member_args: dict | None = None):
        super().__init__()
        if member not in ARCHITECTURES or member == "ensemble":
            raise ValueError(f"unknown member architecture {member!r}")
        if members < 1:
            raise ValueError(f"an ensemble needs at least one member, not {members}")
        self.members = nn.ModuleList(ARCHITECTURES[member](n_mels=n_mels, frames=frames, n_classes=n_classes,
                                                           **(member_args or {})) for _ in range(members))

    def forward(self, x):
        return log_mean_probability([m(x) for m in self.members])


class ShiftAverage(nn.Module):
    """A network scored on copies of its input moved up and down the mel axis by `shifts` bins (0: as is), averaged:
    x -> log of the mean probability over the copies. It has no weights of its own."""

    def __init__(self, net: nn.Module, shifts):
        super().__init__()
        self.net = net
        self.shifts = [int(b) for b in shifts]

    def forward(self, x):
        return log_mean_probability([self.net(shift_mel(x, torch.full((x.shape[0],), b))) for b in self.shifts])


def with_test_shifts(net: nn.Module, shifts) -> nn.Module:
    """`net` scored as a recipe's `test_shifts` say: itself for [0], else its ShiftAverage."""
    return net if list(shifts) == [0] else ShiftAverage(net, shifts)


def without_test_shifts(model: nn.Module) -> nn.Module:
    """The network a model scores with, without the averaging over shifted copies its recipe may put around it."""
    return model.net if isinstance(model, ShiftAverage) else model


ARCHITECTURES = {"seed": SeedCNN, "escnet": EscNet, "ensemble": Ensemble}


def ensemble_config(member: ModelConfig, members: int) -> ModelConfig:
    """The config of an ensemble of `members` networks configured as `member`."""
    return ModelConfig("ensemble", member.n_classes, member.n_mels, member.frames,
                       {"member": member.arch, "members": members, "member_args": dict(member.args)})


def build_model(config: ModelConfig) -> nn.Module:
    try:
        cls = ARCHITECTURES[config.arch]
    except KeyError:
        raise ValueError(f"unknown architecture {config.arch!r}; known: {', '.join(ARCHITECTURES)}") from None
    return cls(n_mels=config.n_mels, frames=config.frames, n_classes=config.n_classes, **config.args)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
