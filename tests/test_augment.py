import pytest
import torch

from esccli import augment
from esccli.models import EscNet


def clips_with_one_event(batch=64, mels=8, frames=100, at=(70, 80)):
    """Silent clips (-1, the dB floor) with one loud event (+1) in the frames `at`."""
    x = -torch.ones(batch, 1, mels, frames)
    x[..., at[0]:at[1]] = 1.0
    return x


def test_uniform_crops_have_the_length_asked_and_come_from_the_clip():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(50.0).expand(4, 1, 3, 50).clone()
    y = augment.random_crop(x, 10, g)
    assert y.shape == (4, 1, 3, 10)
    for clip in y:
        start = int(clip[0, 0, 0])
        assert torch.equal(clip[0, 0], torch.arange(start, start + 10.0))


def test_energy_crops_land_on_the_sound_and_uniform_ones_mostly_miss_it():
    x = clips_with_one_event()
    g = torch.Generator().manual_seed(0)
    hit_energy = (augment.random_crop(x, 10, g, energy=True) > 0).flatten(1).any(1).float().mean()
    hit_uniform = (augment.random_crop(x, 10, g, energy=False) > 0).flatten(1).any(1).float().mean()
    assert hit_energy == 1.0
    assert hit_uniform < 0.5  # 19 of 91 windows touch the event


def test_energy_crops_of_silent_clips_still_work():
    x = -torch.ones(3, 1, 4, 30)
    y = augment.random_crop(x, 10, torch.Generator().manual_seed(1), energy=True)
    assert y.shape == (3, 1, 4, 10)


def test_crops_are_repeatable_from_the_generator():
    x = torch.randn(8, 1, 4, 60)
    a = augment.random_crop(x, 20, torch.Generator().manual_seed(5), energy=True)
    b = augment.random_crop(x, 20, torch.Generator().manual_seed(5), energy=True)
    assert torch.equal(a, b)


def test_stretched_crops_read_a_longer_or_shorter_window_at_an_even_pace():
    # a clip whose frame t holds the value t: a stretched crop is then an arithmetic sequence whose step is the
    # tempo factor, within [1/1.5, 1.5], and not 1 for every clip
    x = torch.arange(200.0).expand(16, 1, 3, 200).clone()
    y = augment.random_crop(x, 20, torch.Generator().manual_seed(0), stretch=1.5)
    assert y.shape == (16, 1, 3, 20)
    steps = y[:, 0, 0].diff(dim=1)
    assert torch.allclose(steps, steps[:, :1].expand_as(steps), atol=1e-4)  # even pace within each crop
    assert (steps[:, 0] >= 1 / 1.5 - 1e-4).all() and (steps[:, 0] <= 1.5 + 1e-4).all()
    assert (steps[:, 0] > 1.05).any() and (steps[:, 0] < 0.95).any()


def test_stretch_one_and_no_shift_are_the_plain_crop_and_draw_nothing_more():
    # models trained before stretch and freq_shift existed are reproduced by recipes that state them as 1 and 0
    # (recipes.LATER_FIELDS): the same crops, and the generator left exactly where the old code left it
    x = torch.randn(8, 1, 4, 60)
    g_old, g_new = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    starts = torch.multinomial(_windows(x, 20), 1, generator=g_old)[:, 0]  # the crop code before stretch existed
    old = torch.stack([x[b, :, :, s:s + 20] for b, s in enumerate(starts.tolist())])
    new = augment.freq_shift(augment.random_crop(x, 20, g_new, energy=True, stretch=1.0), 0, g_new)
    assert torch.equal(old, new)
    assert torch.equal(g_old.get_state(), g_new.get_state())


def test_filters_off_and_power_mixup_draw_nothing_more():
    # models made before eq_db and mixup_power existed are reproduced by recipes that state them as 0 and False
    x, y = torch.rand(8, 1, 4, 20) * 2 - 1, torch.arange(8)
    g_old, g_new = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(augment.random_eq(x, 0.0, 80.0, g_new), x)
    assert torch.equal(g_old.get_state(), g_new.get_state())
    old = augment.mixup(x, y, 0.4, g_old)
    new = augment.mixup(x, y, 0.4, g_new, db_range=80.0)
    assert old[3] == new[3] and torch.equal(old[2], new[2])  # the same weight and partners
    assert torch.equal(g_old.get_state(), g_new.get_state())


def _windows(x, frames):
    loud = (x.mean(dim=(1, 2)) + 1.0).clamp_min(0.0)
    c = torch.nn.functional.pad(loud.cumsum(1), (1, 0))
    w = c[:, frames:] - c[:, :-frames]
    return w + 1e-3 * w.mean(1, keepdim=True) + 1e-12


def test_stretched_crops_at_the_ends_repeat_the_edge_frame():
    x = torch.arange(30.0).expand(64, 1, 2, 30).clone()
    y = augment.random_crop(x, 28, torch.Generator().manual_seed(0), stretch=2.0)
    assert y.min() == 0.0 and y.max() == 29.0  # positions past either end are clamped, never wrapped


def test_freq_shift_moves_clips_along_the_mel_axis_and_fills_with_the_floor():
    x = torch.arange(16.0).view(1, 1, 16, 1).expand(32, 1, 16, 5).clone() + 1.0  # bin i holds i + 1; floor 1

    def shifted(s):  # bin i takes bin i - s; bins with no source hold the floor
        src = torch.arange(16) - s
        return torch.where((src >= 0) & (src < 16), src + 1.0, torch.tensor(1.0))

    y = augment.freq_shift(x, 3, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    drawn = []
    for clip in y[:, 0]:
        matches = [s for s in range(-3, 4) if torch.equal(clip, shifted(s)[:, None].expand(16, 5))]
        assert len(matches) == 1
        drawn += matches
    assert min(drawn) < 0 < max(drawn)  # down and up
    assert torch.equal(augment.freq_shift(x, 0, torch.Generator()), x)
    # the same move for every clip, as test-time shifts ask for it
    for s in (-2, 0, 3):
        assert torch.equal(augment.shift_mel(x, torch.full((32,), s))[:, 0], shifted(s)[:, None].expand(32, 16, 5))


def test_roll_keeps_every_frame():
    x = torch.randn(5, 1, 4, 30)
    y = augment.random_roll(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert torch.allclose(y.sort(dim=3).values, x.sort(dim=3).values)
    assert not torch.equal(x, y)


def test_masks_set_bands_to_the_clip_floor():
    x = torch.rand(4, 1, 16, 40) + 1.0
    y = augment.mask_bands(x, 2, 5, 3, torch.Generator().manual_seed(0))
    floor = x.amin(dim=(1, 2, 3), keepdim=True)
    masked = (y == floor).all(dim=2)  # whole columns at the floor
    assert masked.any()
    assert torch.equal(y[~(y == floor)], x[~(y == floor)])


def test_power_mixup_adds_the_sounds_and_feature_mixup_averages_the_images():
    loud, silent = torch.ones(1, 1, 2, 3), -torch.ones(1, 1, 2, 3)  # 0 dB and the -80 dB floor, scaled to [-1, 1]
    x, y = torch.cat([loud, silent]), torch.tensor([3, 7])
    xm, ya, yb, lam = augment.mixup(x, y, 0.4, torch.Generator().manual_seed(0), db_range=80.0)
    assert 0.5 <= lam < 1.0 and torch.equal(ya, y)
    assert torch.equal(yb, torch.tensor([7, 3]))  # this seed pairs the two clips (randperm could keep them apart)
    db = lambda power: 1.0 + 10 * torch.log10(torch.tensor(power)) / 40.0  # noqa: E731 (dB scaled to [-1, 1])
    # a 0 dB bin at weight lam plus the other's -80 dB floor: 10 log10(lam) dB, and 10 log10(1 - lam) dB the other way
    assert torch.allclose(xm[0], db(lam + (1 - lam) * 1e-8).expand(1, 2, 3), atol=1e-5)
    assert torch.allclose(xm[1], db((1 - lam) + lam * 1e-8).expand(1, 2, 3), atol=1e-5)
    same = torch.full((2, 1, 2, 3), 0.3)
    assert torch.allclose(augment.mixup(same, y, 0.4, torch.Generator().manual_seed(0), 80.0)[0], same, atol=1e-5)
    xf, _, _, lam_f = augment.mixup(x, y, 0.4, torch.Generator().manual_seed(0))  # the same draws, in dB
    assert lam_f == lam and torch.allclose(xf[0], torch.full((1, 2, 3), 2 * lam - 1.0))  # the dB values averaged


def test_random_eq_filters_each_crop_keeps_silence_and_scales_it_to_peak_at_0_db():
    x = torch.full((16, 1, 32, 5), 0.5)  # -20 dB everywhere (top_db 80): a crop that missed its clip's peak
    x[:, :, :, 0] = -1.0  # a silent frame
    g = torch.Generator().manual_seed(0)
    y = augment.random_eq(x, 6.0, 80.0, g)
    assert torch.equal(y[..., 0], x[..., 0])  # silence stays at the floor
    assert torch.allclose(y.amax(dim=(1, 2, 3)), torch.ones(16))  # rescaled to peak at 0 dB
    db = (y[:, 0, :, 1] - 1) * 40  # [clips, mels] dB of a sounding frame: the filter's curve, up to a constant
    spread = db.amax(1) - db.amin(1)
    assert (spread <= 12.0 + 1e-4).all() and (spread > 6.0).any()  # +-6 dB at most, and the whole range is used
    steps = db.diff(dim=1)  # piecewise linear in 3 segments over 32 bins: steps constant within a segment
    assert torch.allclose(steps[:, 1:10], steps[:, 1:2].expand(-1, 9), atol=1e-4)
    assert torch.equal(y[..., 1], y[..., 4])  # the same gain in every frame
    assert torch.equal(augment.random_eq(x, 0.0, 80.0, g), x)
    other = augment.random_eq(x, 6.0, 80.0, g)
    assert not torch.equal(other, y)  # a new draw


def test_noise_floor_fills_silence_with_a_quiet_background_and_leaves_loud_bins():
    x = torch.full((64, 1, 32, 50), -1.0)  # digital silence (the floor, -80 dB with top_db 80)...
    x[:, :, 8:16, 10:20] = 1.0  # ...but for a 0 dB sound
    g = torch.Generator().manual_seed(0)
    y = augment.noise_floor(x, 40.0, 80.0, g)
    assert y.shape == x.shape and (y >= x - 1e-6).all() and (y <= 1.0).all()  # power adds: nothing gets quieter
    assert torch.allclose(y[:, :, 8:16, 10:20], x[:, :, 8:16, 10:20], atol=1e-3)  # 0 dB is far above the noise
    silence_db = (y[:, 0, :, 30:] - 1) * 40  # [clips, mels, frames] dB where the clip was silent
    level = silence_db.median(dim=2).values.median(dim=1).values  # each clip's background level
    assert (level > -80.0).all() and (level < -34.0).all()  # between the floor and 40 dB above it (+ the colour)
    assert level.max() - level.min() > 20.0  # levels drawn across the range, clip by clip
    assert silence_db.std(dim=2).mean() > 1.0  # a noise: it varies from frame to frame
    assert not torch.equal(augment.noise_floor(x, 40.0, 80.0, g), y)  # a new draw
    g_off = torch.Generator().manual_seed(0)
    assert torch.equal(augment.noise_floor(x, 0.0, 80.0, g_off), x)  # off: the clip as is, and no draw
    assert torch.equal(g_off.get_state(), torch.Generator().manual_seed(0).get_state())


def test_reverb_leaves_a_decaying_tail_after_each_sound_and_nothing_before_it():
    x = torch.full((64, 1, 16, 60), -1.0)  # silence (the floor, -80 dB with top_db 80)...
    x[:, :, :, 10] = 1.0  # ...but for a 0 dB click in frame 10
    g = torch.Generator().manual_seed(0)
    y = augment.reverb(x, 1.0, 80.0, 0.02, g)  # reverberation times up to 1 s, frames 20 ms apart
    assert y.shape == x.shape and torch.allclose(y.amax(dim=(1, 2, 3)), torch.ones(64))  # rescaled to peak at 0 dB
    assert torch.equal(y[..., :10], x[..., :10])  # nothing before the sound: silence does not echo
    db = (y[:, 0, :, 11:] - 1) * 40  # [clips, mels, frames] dB of the tail after the click
    assert (db[:, 0, 0] > -70.0).float().mean() > 0.8  # nearly every clip gets a tail (some rooms are dry)...
    long = (db[:, :, 3] > -60.0).all(dim=1)  # the clips whose tails are far above the floor for 4 frames...
    steps = db[long, :, :4].diff(dim=2)  # ...decay by the same dB each frame
    assert long.sum() > 20 and (steps < 0).all() and torch.allclose(steps[..., 0], steps[..., 2], atol=0.05)
    rate = -steps[..., 0]  # [clips, mels] dB per frame: 60 dB per reverberation time, of 20 ms frames
    assert (rate[:, 0] >= 60 * 0.02 / 1.0 - 1e-3).all()  # at most 1 s at the bottom of the mel axis...
    assert (rate[:, -1] > rate[:, 0]).all()  # ...and shorter at the top, where rooms damp more
    assert rate[:, 0].min() < 2.0 and rate[:, 0].max() > 6.0  # times drawn across the range, clip by clip
    # the whole tail's energy (its first frame's over the share of the tail that frame holds, 1 - a), re the click
    # (the tails between -12 and 0 dB of it; the click brought down by up to 3 dB when the tail peaks with it)
    level = db[long, 0, 0] + rate[:, 0] - 10 * torch.log10(1 - torch.pow(10.0, -rate[:, 0] / 10))
    assert (level > -15.01).all() and (level < 0.01).all() and level.max() - level.min() > 6.0
    assert not torch.equal(augment.reverb(x, 1.0, 80.0, 0.02, g), y)  # a new draw
    g_off = torch.Generator().manual_seed(0)
    silent, quiet = torch.full((2, 1, 4, 8), -1.0), torch.full((2, 1, 4, 8), 0.5)  # no sound; -20 dB everywhere
    assert torch.equal(augment.reverb(silent, 1.0, 80.0, 0.02, g), silent)  # stays silent, not brought up
    louder = augment.reverb(quiet, 1.0, 80.0, 0.02, g)
    assert (louder >= quiet).all() and (louder[..., 1:] > quiet[..., 1:]).all()  # tails add...
    assert (louder < 1.0).all()  # ...and a quiet clip is not brought up to 0 dB
    assert torch.equal(augment.reverb(x, 0.0, 80.0, 0.02, g_off), x)  # off: the clip as is, and no draw
    assert torch.equal(g_off.get_state(), torch.Generator().manual_seed(0).get_state())


def test_a_training_batch_gets_the_reverb_at_the_features_frame_rate():
    from esccli.features import FeatureParams
    from esccli.recipes import Recipe
    from esccli.train import augment_batch
    x = torch.rand(8, 1, 16, 40) * 2 - 1
    params = FeatureParams(hop_length=320, sample_rate=16000)  # 20 ms frames
    plain = Recipe(crop_frames=0, freq_masks=0, time_masks=0)
    room = Recipe(crop_frames=0, freq_masks=0, time_masks=0, reverb_s=0.7)
    assert torch.equal(augment_batch(x, plain, torch.Generator().manual_seed(2), params), x)
    expected = augment.reverb(x, 0.7, params.top_db, 0.02, torch.Generator().manual_seed(2))
    assert torch.equal(augment_batch(x, room, torch.Generator().manual_seed(2), params), expected)
    assert not torch.equal(expected, x)


@pytest.mark.parametrize("args", [{}, {"pool": "max"}, {"stem_pool": [2, 4]}, {"stem_pool": [4, 2]},
                                  {"head": "mean", "channels": [8, 16, 32, 64]}, {"stem_order": "pool-bn-relu"},
                                  {"stem_order": "relu-pool-bn"}])
def test_escnet_variants_take_any_length(args):
    m = EscNet(64, 251, 50, stem=8, **{"channels": [8, 16, 32], **args}).eval()
    for frames in (100, 251):
        assert m(torch.zeros(2, 1, 64, frames)).shape == (2, 50)


def test_escnet_stem_orders_apply_the_stems_layers_in_that_order():
    F = torch.nn.functional
    torch.manual_seed(0)
    x = torch.randn(4, 1, 32, 40)
    by_hand = {"pool-bn-relu": lambda conv, bn: torch.relu(bn(F.avg_pool2d(conv(x), 2))),
               "relu-pool-bn": lambda conv, bn: bn(F.avg_pool2d(torch.relu(conv(x)), 2))}
    for order, expected in by_hand.items():
        net = EscNet(32, 40, 50, stem=8, channels=[8, 16], stem_order=order).train()
        conv = net.features[0]
        bn = next(m for m in net.features[:4] if isinstance(m, torch.nn.BatchNorm2d))
        with torch.no_grad():
            bn.weight.uniform_(0.5, 2.0), bn.bias.uniform_(-1.0, 1.0)
        out = net.features[:4](x)
        assert out.shape == (4, 8, 16, 20)
        assert torch.allclose(out, expected(conv, lambda t: F.batch_norm(t, None, None, bn.weight, bn.bias, True)),
                              atol=1e-5)
        assert (conv.bias is not None) == (order == "relu-pool-bn")  # a ReLU straight after the conv needs its bias
    # escnet's own order keeps the layers, and so the names of the weights in model files made before the option
    own = EscNet(32, 40, 50, stem=8, channels=[8, 16])
    assert [type(m).__name__ for m in list(own.features)[:4]] == ["Conv2d", "BatchNorm2d", "ReLU", "AvgPool2d"]
    assert "features.1.running_mean" in own.state_dict() and "features.0.bias" not in own.state_dict()


def test_escnet_refuses_unknown_choices():
    with pytest.raises(ValueError, match="pool"):
        EscNet(64, 251, 50, pool="median")
    with pytest.raises(ValueError, match="stem_order must be one of bn-relu-pool"):
        EscNet(64, 251, 50, stem_order="relu-bn-pool")


def test_the_seed_recipe_and_network_are_the_notebooks():
    from torch import nn

    from esccli.features import PRESETS
    from esccli.models import ModelConfig, build_model
    from esccli.recipes import get_recipe

    r = get_recipe("seed")
    assert (r.arch, r.features, r.epochs, r.batch_size, r.optimizer, r.lr, r.weight_decay) == ("seed", "seed", 60, 16, "adam", 2e-5, 0.0)
    assert (r.schedule, r.step_every, r.step_gamma) == ("step", 20, 0.1)
    assert (r.mixup_alpha, r.crop_frames, r.freq_masks, r.time_masks, r.label_smoothing) == (0.0, 0, 0, 0, 0.0)
    assert not r.allow_bf16 and not r.channels_last  # fp32, as the notebook
    p = PRESETS["seed"]
    assert (p.sample_rate, p.n_fft, p.hop_length, p.n_mels, p.fmin, p.fmax, p.scale) == (44100, 2048, 512, 128, 20.0, 8300.0, "image")
    m = build_model(ModelConfig("seed", 50, p.n_mels, p.frames))
    convs = [l for l in m.modules() if isinstance(l, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512] and all(c.kernel_size == (3, 3) for c in convs)
    linears = [l for l in m.modules() if isinstance(l, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(512 * 8 * 26, 1024), (1024, 50)]
    assert any(isinstance(l, nn.Dropout) and l.p == 0.5 for l in m.modules())
