"""FreeInit filters and noise re-initialisation (motion_module.freeinit)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.fft as fft

from motion_module.core.freeinit import freeinit_noise, lowpass_filter
from motion_module.errors import ParameterError


def _diffusers_filter(shape, kind, d_s, d_t, order=4):
    from diffusers.pipelines.free_init_utils import FreeInitMixin

    return FreeInitMixin()._get_free_init_freq_filter(
        shape=shape, device="cpu", filter_type=kind, order=order,
        spatial_stop_frequency=d_s, temporal_stop_frequency=d_t,
    )


SHAPES = [(1, 4, 8, 6, 6), (1, 2, 5, 7, 4), (1, 1, 16, 8, 8)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind, d_s, d_t", [("butterworth", 0.25, 0.25), ("gaussian", 0.25, 0.4),
                                           ("butterworth", 0.4, 0.1)])
def test_smooth_filters_equal_diffusers(shape, kind, d_s, d_t):
    ours = lowpass_filter(shape, kind, d_s=d_s, d_t=d_t, order=4)
    assert ours.shape == shape
    assert torch.allclose(ours, _diffusers_filter(shape, kind, d_s, d_t), atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_ideal_filter_fixes_the_reference_threshold(shape):
    d_s, d_t = 0.25, 0.25
    ideal = lowpass_filter(shape, "ideal", d_s=d_s, d_t=d_t)
    # Correct ideal filter = the Butterworth half-power region (d2 <= d_s**2).
    butterworth = _diffusers_filter(shape, "butterworth", d_s, d_t)
    assert torch.equal(ideal, (butterworth >= 0.5).float())
    # The reference compares with d_s*2; asking ours for the stop frequency sqrt(2 d_s) (same
    # temporal ratio) reproduces it, which shows the two differ exactly by that threshold.
    wide = math.sqrt(2 * d_s)
    ours = lowpass_filter(shape, "ideal", d_s=wide, d_t=d_t * wide / d_s)
    assert torch.equal(ours, _diffusers_filter(shape, "ideal", d_s, d_t))
    assert not torch.equal(ideal, ours)


def test_box_filter_and_zero_stop():
    box = lowpass_filter((8, 8, 8), "box", d_s=0.5, d_t=0.25)
    # centre 4; spatial half-width round(4*.5)=2 -> 2..5; temporal round(4*.25)=1 -> 3..4.
    expected = torch.zeros(8, 8, 8)
    expected[3:5, 2:6, 2:6] = 1.0
    assert torch.equal(box, expected)
    for kind in ("butterworth", "gaussian", "ideal", "box"):
        assert torch.count_nonzero(lowpass_filter((4, 4, 4), kind, d_s=0.0, d_t=0.3)) == 0
    with pytest.raises(ParameterError, match="freeinit_filter"):
        lowpass_filter((4, 4, 4), "sinc")
    with pytest.raises(ParameterError, match="freeinit_ds"):
        lowpass_filter((4, 4, 4), d_s=1.5)


def test_freeinit_noise_matches_diffusers_mixing_in_a1111_layout():
    from diffusers.pipelines.free_init_utils import FreeInitMixin

    frames, channels, size = 8, 4, 6
    g = torch.Generator().manual_seed(0)
    x0, z, fresh = (torch.randn(frames, channels, size, size, generator=g) for _ in range(3))
    alpha = 0.0047
    lowpass = lowpass_filter((frames, size, size), "butterworth", d_s=0.25, d_t=0.25)
    got = freeinit_noise(x0, z, fresh, alpha, lowpass)
    # diffusers works in (B, C, F, H, W): transpose, mix with its filter, transpose back.
    to_bcf = lambda t: t.permute(1, 0, 2, 3).unsqueeze(0)  # noqa: E731
    diffused = math.sqrt(alpha) * x0 + math.sqrt(1 - alpha) * z
    shape = (1, channels, frames, size, size)
    expected = FreeInitMixin()._apply_freq_filter(
        to_bcf(diffused), to_bcf(fresh), _diffusers_filter(shape, "butterworth", 0.25, 0.25)
    )[0].permute(1, 0, 2, 3)
    assert got.shape == x0.shape
    assert torch.allclose(got, expected, atol=1e-5)


def test_freeinit_keeps_low_frequencies_and_takes_high_ones_from_fresh_noise():
    frames, size = 8, 8
    x0 = torch.randn(frames, 4, size, size)
    z = torch.randn_like(x0)
    fresh = torch.randn_like(x0)
    everything = lowpass_filter((frames, size, size), "box", d_s=1.0, d_t=1.0)
    nothing = lowpass_filter((frames, size, size), "box", d_s=0.0, d_t=0.0)
    diffused = math.sqrt(0.3) * x0 + math.sqrt(0.7) * z
    assert torch.allclose(freeinit_noise(x0, z, fresh, 0.3, everything), diffused, atol=1e-5)
    assert torch.allclose(freeinit_noise(x0, z, fresh, 0.3, nothing), fresh, atol=1e-5)
    mixed = freeinit_noise(x0, z, fresh, 0.3, lowpass_filter((frames, size, size), d_s=0.25, d_t=0.25))
    spectrum = lambda t: fft.fftshift(fft.fftn(t, dim=(0, 2, 3)), dim=(0, 2, 3))  # noqa: E731
    centre = (frames // 2, slice(None), size // 2, size // 2)
    assert torch.allclose(spectrum(mixed)[centre], spectrum(diffused)[centre], atol=1e-3)
    corner = (0, slice(None), 0, 0)
    assert torch.allclose(spectrum(mixed)[corner], spectrum(fresh)[corner], atol=1e-3)


def test_freeinit_shape_errors():
    x = torch.randn(8, 4, 6, 6)
    with pytest.raises(ParameterError, match="does not match"):
        freeinit_noise(x, x, x, 0.5, lowpass_filter((4, 6, 6)))
    with pytest.raises(ParameterError, match="share"):
        freeinit_noise(x, x[:4], x, 0.5, lowpass_filter((8, 6, 6)))
    half = freeinit_noise(x.half(), x.half(), x.half(), 0.5, lowpass_filter((1, 8, 6, 6)))
    assert half.dtype == torch.float16


class CountingRng:
    """A host generator: every draw is new standard-normal noise from its own seed."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape, self.draws = shape, 0
        self.generator = torch.Generator().manual_seed(11)

    def next(self) -> torch.Tensor:
        self.draws += 1
        return torch.randn(self.shape, generator=self.generator)


def test_freeinit_sample_runs_the_passes_from_the_previous_result():
    from motion_module.core.freeinit import FreeInitConfig, freeinit_sample

    shape = (6, 4, 8, 8)
    rng, starts = CountingRng(shape), []

    def sample(source):  # a sampler: initial noise from the source, then one ancestral draw
        start = source.next()
        starts.append(start)
        source.next()
        return start * 0.5 + 1.0

    config = FreeInitConfig(passes=3, filter="butterworth", d_s=0.25, d_t=0.25, seed=5, alpha_T=0.0047)
    result = freeinit_sample(sample, rng, config)
    assert len(starts) == 3 and rng.draws == 4  # pass 1 draws its start; every pass draws once more
    lowpass = lowpass_filter(shape[:1] + shape[2:], "butterworth", d_s=0.25, d_t=0.25)
    fresh = torch.randn(shape, generator=torch.Generator().manual_seed(5 + 7919))
    assert torch.allclose(starts[1], freeinit_noise(starts[0] * 0.5 + 1.0, starts[0], fresh, 0.0047, lowpass))
    assert torch.equal(result, starts[2] * 0.5 + 1.0)
    stopped = freeinit_sample(sample, CountingRng(shape), config, interrupted=lambda: True)
    assert stopped.shape == shape and len(starts) == 4  # one pass only when interrupted


def test_noise_source_hands_out_the_given_start_once_and_delegates():
    from motion_module.core.freeinit import NoiseSource

    rng = CountingRng((2, 4, 2, 2))
    first = torch.zeros(2, 4, 2, 2)
    source = NoiseSource(rng, first=first)
    assert source.next() is first and source.initial is first and rng.draws == 0
    assert source.next().abs().sum() > 0 and rng.draws == 1 and source.initial is first
    assert source.shape == (2, 4, 2, 2)  # other attributes are the host generator's


def test_freenoise_reschedules_frames_past_the_first_window():
    from motion_module.core.freenoise import freenoise_noise, noise_source

    noise = torch.randn(40, 4, 2, 2, generator=torch.Generator().manual_seed(3))
    out = freenoise_noise(noise, context=16, overlap=4, seed=9)
    assert torch.equal(out[:16], noise[:16]) and not torch.equal(out[16:], noise[16:])
    first = {tuple(noise[i].flatten().tolist()) for i in range(16)}
    assert all(tuple(out[i].flatten().tolist()) in first for i in range(40))  # only the first window's noise
    for start in (16, 28):  # each block of context - overlap = 12 frames is a shuffle of the frames 16 earlier
        block = {tuple(out[i].flatten().tolist()) for i in range(start, min(start + 12, 40))}
        source = {tuple(out[i].flatten().tolist()) for i in range(start - 16, start - 4)}
        assert block <= source and len(block) == min(12, 40 - start)
    assert torch.equal(out, freenoise_noise(noise, 16, 4, seed=9))
    assert not torch.equal(out, freenoise_noise(noise, 16, 4, seed=10))
    short = noise[:16]
    assert freenoise_noise(short, 16, 4, seed=9) is short  # a video within one window is left as it is
    rng = CountingRng((40, 4, 2, 2))
    source = noise_source(rng, 16, 4, seed=9)
    start, later = source.next(), source.next()
    assert torch.equal(start[20], start[start_index(start, 20)]) and source.initial is start and rng.draws == 2
    assert all(not torch.equal(later[20], later[i]) for i in range(16))  # later draws are not rescheduled


def start_index(noise: torch.Tensor, frame: int) -> int:
    """The first-window frame whose noise ``frame`` repeats."""
    return next(i for i in range(16) if torch.equal(noise[i], noise[frame]))
