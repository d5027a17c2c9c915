"""img2gif latent initialisation (motion_module.latent_init)."""

from __future__ import annotations

import pytest
import torch

from motion_module.core.latent_init import img2gif_init, img2gif_weights
from motion_module.errors import ParameterError


def test_first_image_weights_by_hand():
    a, b = img2gif_weights(5, power=1.0, scale=32.0)
    assert a.tolist() == pytest.approx([1.0, 31 / 32, 30 / 32, 29 / 32, 28 / 32])
    assert b.tolist() == [0.0] * 5
    a, _ = img2gif_weights(6, power=2.0, scale=9.0)
    assert a.tolist() == pytest.approx([1.0, 8 / 9, 5 / 9, 0.0, 0.0, 0.0])  # clamped at 0


def test_last_image_weights_normalised_and_forced():
    a, b = img2gif_weights(4, power=1.0, scale=2.0, has_last=True, power_last=1.0, scale_last=2.0)
    # raw a = 1, .5, 0, 0 ; raw b = 0, 0, .5, 1 (mirrored); no sum exceeds 1; endpoints forced.
    assert a.tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert b.tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0])
    a, b = img2gif_weights(3, power=1.0, scale=4.0, has_last=True, power_last=1.0, scale_last=4.0)
    # raw a = 1, .75, .5 ; raw b = .5, .75, 1 ; middle sum 1.5 -> .5/.5 ; ends forced.
    assert a.tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert b.tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert torch.all(a + b <= 1.0 + 1e-12)


def test_init_blends_first_last_and_noise():
    frames, shape = 4, (4, 2, 2)
    first = torch.full(shape, 10.0)
    last = torch.full((1, *shape), -10.0)
    noise = torch.randn(frames, *shape)
    got = img2gif_init(first, noise, num_frames=frames, scale=2.0, last=last, scale_last=2.0)
    a = torch.tensor([1.0, 0.5, 0.0, 0.0]).view(-1, 1, 1, 1)
    b = torch.tensor([0.0, 0.0, 0.5, 1.0]).view(-1, 1, 1, 1)
    assert torch.allclose(got, a * 10 + b * -10 + (1 - a - b) * noise, atol=1e-6)
    assert torch.equal(got[0], first) and torch.equal(got[-1], last[0])


def test_fewer_frames_than_context():
    # ADW#213: the weight vector must match the frame count, whatever the context length is.
    noise = torch.randn(6, 4, 8, 8)
    got = img2gif_init(torch.zeros(1, 4, 8, 8), noise, num_frames=6)
    a, _ = img2gif_weights(6)
    assert got.shape == (6, 4, 8, 8)
    assert torch.allclose(got, (1 - a.float()).view(-1, 1, 1, 1) * noise, atol=1e-6)


def test_dtype_and_errors():
    noise = torch.randn(3, 4, 2, 2).half()
    assert img2gif_init(torch.zeros(4, 2, 2), noise, num_frames=3).dtype == torch.float16
    with pytest.raises(ParameterError, match="num_frames"):
        img2gif_init(torch.zeros(4, 2, 2), noise, num_frames=16)
    with pytest.raises(ParameterError, match="init_image"):
        img2gif_init(torch.zeros(4, 3, 3), noise, num_frames=3)
    with pytest.raises(ParameterError, match="latent_scale"):
        img2gif_weights(3, scale=0.0)


def test_img2gif_latents_for_a_request():
    from motion_module.core.latent_init import img2gif_init, img2gif_latents
    from motion_module.params.request import AnimateDiffParams

    params = AnimateDiffParams(video_length=6, latent_power=2.0, latent_scale=8.0)
    init = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    out = img2gif_latents(init, params, seed=42)
    noise = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(42 ^ 0x5EED))
    assert torch.equal(out, img2gif_init(init[0], noise, num_frames=6, power=2.0, scale=8.0))
    assert torch.equal(out, img2gif_latents(init, params, seed=42))  # seeded: the same every time
    assert img2gif_latents(init[:4], params, seed=42) is None  # not one latent per frame: left alone
    last = torch.ones(4, 3, 3)
    with_last = img2gif_latents(init, params, seed=42, last=last)
    assert with_last is not None and torch.allclose(with_last[-1], last)
