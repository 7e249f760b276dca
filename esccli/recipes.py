"""Training recipes: everything that decides how a model is trained, by name.

`seed` is the student notebook, exactly. `default` and `fast` are esc's own: the choices were made on fold 1
of ESC-50 and are scored by 5-fold cross-validation (docs/ablation.md has the figures behind each choice).
"""

from dataclasses import asdict, dataclass, field, replace

from esccli import modulation


@dataclass(frozen=True)
class Recipe:
    arch: str = "escnet"
    arch_args: dict = field(default_factory=dict)
    features: str = "default"  # a features.PRESETS name
    epochs: int = 150
    batch_size: int = 32
    optimizer: str = "adamw"  # "adamw" | "adam" | "sgd" (Nesterov momentum 0.9)
    lr: float = 3e-3
    weight_decay: float = 1e-3
    schedule: str = "onecycle"  # "onecycle": linear warm-up then cosine to zero; "step": lr * gamma^(epoch // every)
    warmup_epochs: float = 3.0
    step_every: int = 20
    step_gamma: float = 0.1
    label_smoothing: float = 0.1
    mixup_alpha: float = 0.4
    mixup_power: bool = False  # mix clips as sounds (their mel powers add) rather than as dB images; needs "db" features
    crop_frames: int = 100  # train on random windows of this many frames (0: the whole clip); 100 = 2 s
    crop_energy: bool = True  # draw crops where the clip is loud rather than uniformly
    # with crops: the first early_crop_share of the epochs train on crops of early_crop_frames, time masks narrowed
    # alike (0: every epoch on crop_frames); a step on 50 of 100 frames costs 0.49x (round 9: -2.00 points, off)
    early_crop_frames: int = 0
    early_crop_share: float = 0.0
    stretch: float = 1.0  # with crops: change the tempo by a random factor in [1/stretch, stretch] (1: off)
    freq_shift: int = 0  # move each clip up/down the mel axis by up to this many bins (0: off)
    eq_db: float = 0.0  # a random filter on each crop (gains up to +-eq_db dB across the mel axis), then the crop
    # rescaled to peak at 0 dB like a whole clip (0: neither)
    noise_db: float = 0.0  # a noise floor added to each crop, its level up to this many dB above the floor (0: off)
    reverb_s: float = 0.0  # each crop played in a random room, its reverberation time up to this many seconds (0: off)
    # score and save an exponential moving average of the weights, updated after every step with this decay
    # (0: off; the weights of the last step)
    ema_decay: float = 0.0
    # score (and predict) as the mean probability over copies of each clip moved by these many mel bins ([0]: the
    # clip as is); changes no weights, only how the trained network is used (models.ShiftAverage)
    test_shifts: list = field(default_factory=lambda: [0])
    time_roll: bool = False  # rotate each clip in time by a random amount (after the crop)
    freq_masks: int = 2
    freq_mask_width: int = 8
    time_masks: int = 2
    time_mask_width: int = 20
    channels_last: bool = True  # NHWC memory layout: 0.86x the time of NCHW on a CPU (benchmarks/step_cost.py)
    allow_bf16: bool = True  # whether --precision auto may pick bf16 autocast
    # score the held-out fold after every this many epochs, and after the last. Validation changes nothing in
    # training (the weights are the same for any value); a validation costs ~0.44 of a training epoch on a CPU
    # (whole clips, fp32), so validating every epoch took 30 % of the time (benchmarks/epoch_cost.py).
    val_every: int = 10
    # An ensemble: `members` networks trained apart, whose mean probability (ensemble_mean) is the prediction.
    # Member k (0-based) is this recipe with member_variants[k % len(member_variants)] applied, seeded
    # seed + k // len(member_variants) (member_seed): members that see differently augmented data disagree more,
    # which is what the average gains from. A variant may also say how the ensemble uses its member (ENSEMBLE_KEYS): "weight",
    # what it counts for in the mean (default 1), and "seed_offset", added to its seed (default 0), so that
    # copies of one variant differ by their seed.
    members: int = 1
    member_variants: list = field(default_factory=lambda: [{}])
    # how the members' outputs are averaged: "arithmetic", their mean probability; "geometric", their mean
    # log-probability (the geometric mean of their probabilities, renormalised), where one member that finds a
    # class unlikely counts for more (models.Ensemble). Changes no weights, only how the ensemble scores.
    ensemble_mean: str = "arithmetic"
    # whether, on a CPU, the members train side by side (each in a process with its share of the cores) unless
    # `esc train --jobs` says otherwise; False: one after the other, each on all the cores, for a network that uses
    # both cores well followed by a cheap one (the fast preset's texture network). Not compared by `made`: like
    # --jobs and --threads it changes only the threads each member trains with (and so their floating-point sums).
    members_side_by_side: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    def made(self, train_meta: dict, fold: int | None, seed: int, precision: str) -> bool:
        """Whether a model's `train` metadata says this recipe made it, with this held-out fold, seed and precision
        (models from before the precision was recorded were trained in fp32; a recipe recorded before one of the
        LATER_FIELDS existed was trained as that field's value there says; how often it was validated, and a
        single network's member_variants and ensemble_mean, which it does not use, are not compared; its
        test_shifts are, as they decide its recorded scores)."""
        return not self.made_differences(train_meta, fold, seed, precision)

    def made_differences(self, train_meta: dict, fold: int | None, seed: int, precision: str) -> list[str]:
        """What `made` finds different, each as "field recorded (now asked)": empty when this recipe made it."""
        recorded = train_meta.get("recipe")
        if not isinstance(recorded, dict):
            return ["no recipe recorded"]
        theirs, mine = _as_made({**LATER_FIELDS, **recorded}), _as_made(self.to_dict())
        pairs = [(k, theirs.get(k, _MISSING), mine.get(k, _MISSING)) for k in sorted(set(theirs) | set(mine))]
        pairs += [("fold", train_meta.get("fold"), fold), ("seed", train_meta.get("seed"), seed),
                  ("precision", train_meta.get("precision", "fp32"), precision)]
        return [f"{k} {was!r} (now {now!r})" for k, was, now in pairs if was != now]

    def member_variant(self, k: int) -> dict:
        """The overrides that make member k (0-based) differ from the recipe (with its ENSEMBLE_KEYS)."""
        return self.member_variants[k % len(self.member_variants)] if self.member_variants else {}

    def member(self, k: int = 0) -> "Recipe":
        """The single-network recipe of member k (0-based) of this recipe (itself when it has one member)."""
        variant = {key: v for key, v in self.member_variant(k).items() if key not in ENSEMBLE_KEYS}
        if NOT_IN_VARIANTS & set(variant):
            raise ValueError(f"a member variant cannot set {', '.join(sorted(NOT_IN_VARIANTS & set(variant)))}: "
                             "members share their features, and the ensemble's scoring and scheduling")
        if variant.get("arch") == "ensemble":
            raise ValueError("a member variant cannot make a member an ensemble")
        if variant.get("arch", self.arch) != self.arch and "arch_args" not in variant:  # another network does not
            variant = {**variant, "arch_args": {}}  # take this one's arguments
        try:
            return replace(self, members=1, member_variants=[{}], **variant)
        except TypeError:
            raise ValueError(f"unknown recipe field in member variant {variant}") from None

    def with_arch(self, arch: str) -> "Recipe":
        """This recipe with its networks made `arch` (with that network's default arguments). Members whose variant
        names an architecture of its own (the default's texture network) are left out."""
        if arch == self.arch:
            return self
        kept = [v for v in self.member_variants if "arch" not in v] or [{}]
        members = self.members if len(kept) == len(self.member_variants) else min(self.members, len(kept))
        return replace(self, arch=arch, arch_args={}, members=members, member_variants=kept)

    def member_archs(self) -> str:
        """The architectures of its networks, joined by "+" when they differ ("escnet+escnet+texture")."""
        archs = [self.member(k).arch for k in range(self.members)]
        return archs[0] if len(set(archs)) == 1 else "+".join(archs)

    def member_seed(self, seed: int, k: int) -> int:
        """The seed of member k: its variant's seed_offset added, and, each time the variants repeat (more members
        than variants), seeds beyond every offset, so that no two members of one variant share a seed."""
        step = 1 + max((v.get("seed_offset", 0) for v in self.member_variants  # bad offsets: problems() says so
                        if isinstance(v, dict) and type(v.get("seed_offset", 0)) is int), default=0)
        return seed + k // max(1, len(self.member_variants)) * step + self.member_variant(k).get("seed_offset", 0)

    def member_weights(self) -> list[float]:
        """What each member counts for in the ensemble's mean (its variant's weight, default 1)."""
        return [float(self.member_variant(k).get("weight", 1.0)) for k in range(self.members)]

    def problems(self) -> list[str]:
        """What makes this recipe untrainable or makes one of its settings do nothing (empty when it is sound)."""
        out = [f"{k} must be at least {low}, not {getattr(self, k)}"
               for k, low in (("epochs", 1), ("batch_size", 1), ("members", 1), ("val_every", 1), ("stretch", 1.0),
                              ("freq_shift", 0), ("eq_db", 0.0), ("noise_db", 0.0), ("reverb_s", 0.0),
                              ("crop_frames", 0), ("step_every", 1))
               if getattr(self, k) < low]
        if not self.lr > 0:
            out.append(f"lr must be above 0, not {self.lr}: at 0 nothing is learnt")
        out += [f"{k} must be one of {', '.join(known)}, not {getattr(self, k)!r}"
                for k, known in (("schedule", ("onecycle", "step")), ("optimizer", ("adamw", "adam", "sgd")),
                                 ("ensemble_mean", ENSEMBLE_MEANS))
                if getattr(self, k) not in known]
        if not (isinstance(self.test_shifts, list) and self.test_shifts and all(type(b) is int for b in self.test_shifts)):
            out.append(f"test_shifts must be a non-empty list of whole numbers of mel bins, not {self.test_shifts!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            out.append(f"ema_decay must be at least 0 and below 1, not {self.ema_decay}")
        if self.arch == "seed" and self.crop_frames:
            out.append(f"the seed network flattens a whole clip into its dense layer, so it trains on whole clips: "
                       f"crop_frames must be 0, not {self.crop_frames} (its own recipe is --preset seed)")
        if self.stretch > 1.0 and not self.crop_frames:
            out.append("stretch needs crops (crop_frames > 0): it is applied while cropping")
        if self.early_crop_frames and not 0 < self.early_crop_frames < self.crop_frames:
            out.append(f"early_crop_frames must be between 0 and crop_frames ({self.crop_frames}), "
                       f"not {self.early_crop_frames}")
        if not 0.0 <= self.early_crop_share <= 1.0:
            out.append(f"early_crop_share must be between 0 and 1, not {self.early_crop_share}")
        if bool(self.early_crop_frames) != bool(self.early_crop_share):
            out.append("early_crop_frames and early_crop_share go together: set both or neither")
        if self.mixup_power and self.mixup_alpha <= 0:
            out.append("mixup_power needs mixup (mixup_alpha > 0): it says how clips are mixed")
        if not self.member_variants:
            out.append("member_variants needs at least one entry ({} for the recipe itself)")
        elif self.members > 1:
            for k in range(min(self.members, len(self.member_variants))):
                if not isinstance(self.member_variants[k], dict):
                    out.append(f"member {k + 1}: a variant is a dict of recipe fields, not {self.member_variants[k]!r}")
                    continue
                weight, offset = self.member_variants[k].get("weight", 1.0), self.member_variants[k].get("seed_offset", 0)
                if not (type(weight) in (int, float) and MIN_WEIGHT <= weight <= MAX_WEIGHT):
                    out.append(f"member {k + 1}: weight must be a number from {MIN_WEIGHT:g} to {MAX_WEIGHT:g}, "
                               f"not {weight!r}")
                if not (type(offset) is int and offset >= 0):
                    out.append(f"member {k + 1}: seed_offset must be a whole number, at least 0, not {offset!r}")
                try:  # what the variant itself brings (the recipe's own problems are listed once, above)
                    out += [f"member {k + 1}: {p}" for p in self.member(k).problems() if p not in out]
                except ValueError as e:
                    out.append(f"member {k + 1}: {e}")
        if self.arch == "texture" and self.arch_args.get("modulation") and not self.sees_clips_as_they_are():
            out.append("a texture network that hears the modulation statistics trains on clips as they are (the "
                       "statistics are computed once per clip): no crop, shift, filter, noise, room, roll, mask or mixup")
        return out

    def sees_clips_as_they_are(self) -> bool:
        """Whether training feeds each clip as it is: no crop, shift, filter, noise, room, roll, mask or mixup
        (INPUT_FIELDS). A network's fixed front end then gives the same output for a clip in every epoch."""
        return (not self.crop_frames and self.stretch == 1.0 and not self.freq_shift and not self.eq_db
                and not self.noise_db and not self.reverb_s and not self.time_roll and not self.freq_masks
                and not self.time_masks and self.mixup_alpha <= 0)

    def with_epochs(self, epochs: int | None) -> "Recipe":
        """This recipe trained for `epochs` epochs (itself for None). Members that train for epochs of their own (the
        texture networks) keep them, or, when fewer epochs than the recipe's are asked for, their share of them:
        `--epochs 1` is a quick run for every member, and more epochs lengthen only the networks that share the
        recipe's (a texture network has learnt what it can in its own)."""
        if epochs is None or epochs == self.epochs:
            return self
        scaled = [{**v, "epochs": max(1, min(v["epochs"], round(v["epochs"] * epochs / self.epochs)))}
                  if isinstance(v, dict) and "epochs" in v else v for v in self.member_variants]
        return replace(self, epochs=epochs, member_variants=scaled)

    def with_overrides(self, **kw) -> "Recipe":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


class _Missing:
    def __repr__(self) -> str:
        return "(none)"


_MISSING = _Missing()  # a field one recipe dict has and the other has not (made_differences)


def _as_made(recipe: dict) -> dict:
    """A recipe dict with what does not change the recipe's weights or the recorded scores left out: how often it
    was validated, whether its members trained side by side (that changes their thread counts, which, like
    those `--jobs` and `--threads` set, are recorded but not compared), and a single network's member_variants and
    ensemble_mean (which it does not use). test_shifts change no weights but do change every recorded score, so
    they are compared: a stored score is reused only under the same ones (and so is an ensemble's ensemble_mean)."""
    recipe = {**recipe, "val_every": 1, "members_side_by_side": True}
    return {**recipe, "member_variants": [{}], "ensemble_mean": "arithmetic"} if recipe.get("members") == 1 else recipe


# Fields added to Recipe after models were made without them, with the value that does what esc did before the
# field existed (the training code draws no extra random numbers at these values, so such models are reproduced
# bit for bit by a recipe that states them).
LATER_FIELDS = {"stretch": 1.0, "freq_shift": 0, "members": 1, "member_variants": [{}], "val_every": 1,
                "mixup_power": False, "eq_db": 0.0, "ema_decay": 0.0, "test_shifts": [0],
                "noise_db": 0.0, "reverb_s": 0.0, "early_crop_frames": 0, "early_crop_share": 0.0,
                "ensemble_mean": "arithmetic", "members_side_by_side": True}
ENSEMBLE_MEANS = ("arithmetic", "geometric")
# the fields that change what a training batch's clips look like (Recipe.sees_clips_as_they_are); the others
# change how they are learnt from or scored. tests/test_texture.py lists those others, so that a field added to
# Recipe fails it until it is put on one side or the other.
INPUT_FIELDS = ("crop_frames", "crop_energy", "early_crop_frames", "early_crop_share", "stretch", "freq_shift",
                "eq_db", "noise_db", "reverb_s", "time_roll", "freq_masks", "freq_mask_width", "time_masks",
                "time_mask_width", "mixup_alpha", "mixup_power")

# the augmentations that read the features as dB (they work on power): features scaled otherwise are refused
READS_DB = ("mixup_power", "eq_db", "noise_db", "reverb_s")
# what a member variant may say of how the ensemble uses its member, rather than of how the member is trained
ENSEMBLE_KEYS = ("weight", "seed_offset")
MIN_WEIGHT, MAX_WEIGHT = 1e-3, 1e3  # a member's weight, within what float32 sums keep finite and meaningful
NOT_IN_VARIANTS = {"features", "members", "member_variants", "val_every", "test_shifts", "ensemble_mean",
                   "members_side_by_side"}
PITCH_TEMPO = {"freq_shift": 4, "stretch": 1.25}  # the second member's augmentation (docs/ablation.md, round 3)
# a member that sees each whole clip as its texture statistics (models.TextureNet): a small MLP, trained for many
# short epochs without crops, masks, mixup or filters (docs/ablation.md, round 17), on the extended statistics
# since round 18 (esccli/texture.py)
TEXTURE = {"arch": "texture", "arch_args": {"extended": True}, "epochs": 300, "batch_size": 64, "lr": 1e-3,
           "weight_decay": 1e-2, "crop_frames": 0, "crop_energy": False, "mixup_alpha": 0.0, "freq_masks": 0,
           "time_masks": 0, "eq_db": 0.0, "channels_last": False}
# the fast preset's texture network: the default's in 150 epochs rather than 300 (round 19, on an AVX2 CPU: 73.80 %
# alone over five folds against 73.70 %, in 0.76-0.83 min per fold on two threads against 1.41-1.57 undisturbed),
# hearing also the per-band statistics (texture.py; round 20: 75.00 % alone, in 0.83-0.94 min, and +0.50 points
# for the fast preset with its 96-epoch CNN over five folds)
FAST_TEXTURE = {**TEXTURE, "epochs": 150, "arch_args": {"extended": True, "bands": True}}
# the texture network that also hears the fine-rate modulation statistics (esccli/modulation.py; round 25)
MODULATION_TEXTURE = {**TEXTURE, "arch_args": {"extended": True, "modulation": modulation.VERSION}}
EQ_DB = 6.0  # random filters of up to +-6 dB across the mel axis: +4.10 points for the fast preset (round 5)
# the fast network's stages after its 16-channel stem: the first at 16 channels rather than escnet's 32 makes a
# training step 0.76x as long in fp32 (AVX-512, two threads; an epoch 0.89x) and scored 1.15 points less over five
# folds (round 10)
FAST_CHANNELS = [16, 64, 128]
# and its stem's BatchNorm after the pooling, at a quarter of the positions (models.STEM_ORDERS): 0.93x the step of
# escnet's own order, and +0.20 points over five folds, within the noise (round 11)
FAST_ARCH = {"channels": FAST_CHANNELS, "stem_order": "relu-pool-bn"}
# the default's networks keep escnet's channels and take the same stem order: +0.30 points over five folds (within
# the noise) and 16.6 min per fold (median of the training calls) rather than 18.0, in fp32 on an AVX-512 CPU
# without bf16 (round 13)
DEFAULT_ARCH = {"stem_order": "relu-pool-bn"}

# the default's first texture network since round 26: round 18's, also hearing the per-band statistics (round 21)
BANDS_TEXTURE = {**TEXTURE, "arch_args": {"extended": True, "bands": True}}

RECIPES = {
    # The student notebook: its CNN on 44.1 kHz 128-mel images, Adam 2e-5 divided by 10 every 20 epochs,
    # batch 16, 60 epochs, no augmentation. ~12 h per run on two CPU cores.
    "seed": Recipe(
        arch="seed", features="seed", epochs=60, batch_size=16, optimizer="adam", lr=2e-5, weight_decay=0.0,
        schedule="step", warmup_epochs=0, step_every=20, step_gamma=0.1, label_smoothing=0.0, mixup_alpha=0.0,
        crop_frames=0, crop_energy=False, freq_masks=0, time_masks=0, channels_last=False, allow_bf16=False,
        val_every=1,
    ),
    # networks trained apart, side by side on a 2-core CPU (one thread each), averaged geometrically. Two escnets on
    # crops through random filters; the second learns from clips also shifted in pitch (up to 4 mel bins) and
    # stretched in time (up to 1.25x). Their stems normalise after the pooling (DEFAULT_ARCH) since round 13. Since
    # round 17 a texture network hears whole clips as texture statistics (round 17: 85.00 % over five folds, +1.55
    # points); since round 18 250 more, computed once per clip, with the members averaged geometrically (86.10 %,
    # fp32 on an AVX-512 CPU without bf16); since round 26 the per-band statistics too (BANDS_TEXTURE, round 21), and
    # a fourth member made of three texture networks that also hear the fine-rate modulation statistics
    # (MODULATION_TEXTURE, round 25), seeds 0-2, each weighted 1/3 so that together they count as one member:
    # 87.15 % over five folds, in 8.7 min per fold (bf16 on an AVX-512 BF16 EPYC; README, docs/ablation.md).
    "default": Recipe(arch_args=DEFAULT_ARCH, members=6, eq_db=EQ_DB, ensemble_mean="geometric",
                      member_variants=[{}, PITCH_TEMPO, BANDS_TEXTURE]
                      + [{**MODULATION_TEXTURE, "weight": 1 / 3, "seed_offset": k} for k in range(3)]),
    # a network on all the cores, fewer epochs, its first stage as narrow as its stem (FAST_CHANNELS); crops
    # through random filters. Since round 19 a texture network (FAST_TEXTURE) trains after it, on all the cores
    # too, and the two are averaged geometrically, with no test-time shifts (the texture network, which never heard
    # a shifted clip, lost 8 points alone under them). Since round 20 the texture network also hears per-band
    # statistics, and the CNN trains for 30 epochs rather than 96, which fits a fold in 5 minutes on an AVX2 CPU
    # without bf16: 81.05 % over five folds in 4.6 min per fold there, against 85.00 % with 96 epochs (composed
    # from round 19's stored CNNs and these texture networks, not one run; round 19's folds took 12.5 min there;
    # README; docs/ablation.md, rounds 19 and 20). The CNN is
    # scored once, at the end (30 < val_every); the texture network every 48 epochs and at the end.
    "fast": Recipe(arch_args=FAST_ARCH, epochs=30, members=2, member_variants=[{}, FAST_TEXTURE], eq_db=EQ_DB,
                   val_every=48, ensemble_mean="geometric", members_side_by_side=False),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}") from None
