"""Fine-rate modulation statistics: how fast each frequency band's envelope fluctuates, up to 128 Hz.

The texture statistics (texture.py) come from the 20 ms features, so the fluctuations they hear stop at 25 Hz.
Engines fire at 20-100 Hz, rotor and propeller blades pass at 10-100 Hz: these statistics hear them. They are
computed from the waveform (not from the features), once per clip by `esc featurize` and once per window by
`esc predict`, and are heard by a texture network whose `modulation` argument names their VERSION
(models.TextureNet; docs/ablation.md, rounds 25-26).

From each clip at any sample rate:
- the power of a STFT with a WINDOW_SECONDS Hann window every HOP_SECONDS (250 envelope frames per second), in
  BANDS triangular bands evenly spaced on the mel scale between FMIN and FMAX;
- each band's level in dB below the clip's loudest (band, frame), floored at -TOP_DB; frames within 1 dB of the
  floor in every band (the digital silence ESC-50 pads short clips with) are left out unless fewer than
  MIN_SECONDS of frames are louder;
- each band's compressed envelope (amplitude ** 0.3), centred on its mean (zero where left out), times a Hann
  window over the whole clip (a sound padded with silence sits on the window's rising half, as in texture.py);
- its modulation power spectrum: the share of its power (the mean removed) in each of the half-octave bands of
  MODULATION_BANDS, as log(share + 1e-4) / 5, then the ratio of its largest bin to its median bin above PEAK_FROM Hz
  (a steady beat stands out), as log(ratio) / 5.

That is BANDS * (len(MODULATION_BANDS) + 1) = 272 numbers per clip, all finite, silence included. The 32 ms window
smooths the envelopes: its first null is at 62.5 Hz, so fluctuations up to about 60 Hz are heard (in the wide upper
bands; a narrow lower band's own random fluctuations are slower), and the bands above mostly hear what leaks.
"""

import math

VERSION = 1  # bump when the computation changes: models and caches record it
WINDOW_SECONDS = 0.032  # 512 samples at 16 kHz
HOP_SECONDS = 0.004  # 64 samples at 16 kHz: 250 frames per second
BANDS = 16
FMIN, FMAX = 20.0, 8000.0  # FMAX is lowered to the Nyquist frequency of audio sampled more slowly
TOP_DB = 80.0
MIN_SECONDS = 0.5
# half-octave bands of modulation frequency, in Hz: 0.5 * 2 ** (k / 2) to 0.5 * 2 ** ((k + 1) / 2), up to 128 Hz
MODULATION_BANDS = tuple((0.5 * 2 ** (k / 2), 0.5 * 2 ** ((k + 1) / 2)) for k in range(16))
PEAK_FROM = 2.0
COUNT = BANDS * (len(MODULATION_BANDS) + 1)


def stft_sizes(sample_rate: int) -> tuple[int, int]:
    """(n_fft, hop) in samples at `sample_rate`: (512, 64) at 16 kHz."""
    return 2 * max(1, round(WINDOW_SECONDS * sample_rate / 2)), max(1, round(HOP_SECONDS * sample_rate))


def band_filters(sample_rate: int, n_fft: int):
    """[BANDS, n_fft // 2 + 1] triangular filters, their centres and edges evenly spaced on the (HTK) mel scale
    between FMIN and min(FMAX, the Nyquist frequency); each band keeps at least the bin nearest its centre."""
    import torch

    def mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)

    top = min(FMAX, sample_rate / 2)
    points = torch.linspace(mel(FMIN), mel(top), BANDS + 2, dtype=torch.float64)
    hz = 700.0 * (10.0 ** (points / 2595.0) - 1.0)
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lo, centre, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (freqs - lo) / (centre - lo)
    down = (hi - freqs) / (hi - centre)
    filters = torch.clamp(torch.minimum(up, down), min=0.0)
    nearest = (freqs[None, :] - centre).abs().argmin(1)
    filters[torch.arange(BANDS), nearest] = filters[torch.arange(BANDS), nearest].clamp_min(1.0)
    return filters.float()


def statistics(waves, sample_rate: int):
    """waves [batch, samples] (a float tensor) -> [batch, COUNT] float32: the statistics of the module's docstring."""
    import torch

    n_fft, hop = stft_sizes(sample_rate)
    x = waves.float()
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft, device=x.device), center=True,
                      pad_mode="constant", return_complex=True)
    power = spec.real ** 2 + spec.imag ** 2  # [batch, bins, frames]
    bands = band_filters(sample_rate, n_fft).to(x.device) @ power  # [batch, BANDS, frames]
    db = 10.0 * torch.log10(bands.clamp_min(1e-10))
    db = (db - db.amax((1, 2), keepdim=True)).clamp_min(-TOP_DB)
    b, _, frames = db.shape
    frame_rate = sample_rate / hop
    loud = db.amax(1) > 1.0 - TOP_DB  # [batch, frames]
    enough = loud.sum(1, keepdim=True) >= max(1, min(round(MIN_SECONDS * frame_rate), frames))
    w = torch.where(enough, loud, torch.ones_like(loud)).float()[:, None, :]  # [batch, 1, frames]
    env = torch.exp(db * (0.015 * math.log(10.0)))  # amplitude ** 0.3, relative to the peak
    mean = (env * w).sum(-1, keepdim=True) / w.sum(-1, keepdim=True)
    centred = (env - mean) * w * torch.hann_window(frames, periodic=False, device=x.device)
    mod = torch.fft.rfft(centred, dim=-1).abs() ** 2  # [batch, BANDS, frames // 2 + 1]
    freqs = torch.fft.rfftfreq(frames, 1.0 / frame_rate).to(x.device)
    total = mod[..., 1:].sum(-1) + 1e-12
    shares = torch.stack([mod[..., (freqs >= lo) & (freqs < hi)].sum(-1) for lo, hi in MODULATION_BANDS], -1)
    shares = (shares / total[..., None] + 1e-4).log() / 5
    above = mod[..., freqs >= PEAK_FROM]
    if above.shape[-1]:
        peak = ((above.amax(-1) + 1e-12) / (above.median(-1).values + 1e-12)).log() / 5
    else:  # a clip too short to have any modulation frequency that high
        peak = mod.new_zeros(mod.shape[:-1])
    return torch.cat([shares.flatten(1), peak], 1)
