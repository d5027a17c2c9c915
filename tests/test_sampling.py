"""Windowed denoising (motion_module.sampling.windowed_denoise)."""

from __future__ import annotations

import pytest
import torch

from motion_module.core.sampling import windowed_denoise
from motion_module.core.schedules import context_windows, fusion_weights
from motion_module.errors import ParameterError

SHAPE = (4, 3, 3)  # latent C, H, W


def _rows(groups: int, frames: int) -> torch.Tensor:
    """Latents whose every value is the row's global index (easy to check after slicing)."""
    rows = groups * frames
    return torch.arange(rows, dtype=torch.float32).view(-1, 1, 1, 1).expand(rows, *SHAPE).clone()


def _sd1_cond(x: torch.Tensor) -> dict:
    rows = x.shape[0]
    ids = x[:, 0, 0, 0]
    return {
        "c_crossattn": [ids.view(-1, 1, 1).expand(rows, 77, 8).clone()],
        "c_concat": [ids.view(-1, 1, 1, 1).expand(rows, 5, 3, 3).clone()],
        "shared": torch.ones(1, 7),  # first dim is not rows: passed through untouched
    }


def _sdxl_cond(x: torch.Tensor) -> dict:
    rows = x.shape[0]
    ids = x[:, 0, 0, 0]
    return {
        "crossattn": ids.view(-1, 1, 1).expand(rows, 77, 8).clone(),
        "vector": ids.view(-1, 1).expand(rows, 16).clone(),
        "c_concat": ids.view(-1, 1, 1, 1).expand(rows, 5, 3, 3).clone(),
    }


class CheckingDenoiser:
    """Asserts that every cond entry and sigma were sliced like x; returns x + position.

    ``position`` is the row's index inside its window block (known from ``set_window``), so a
    frame's output depends on where it sits in each window and fusion becomes observable.
    """

    def __init__(self) -> None:
        self.frames_in_call = 0
        self.calls: list[int] = []
        self.window_sizes: list[int] = []

    def set_window(self, n: int) -> None:
        self.frames_in_call = n
        self.window_sizes.append(n)

    def __call__(self, x: torch.Tensor, sigma, cond) -> torch.Tensor:
        self.calls.append(x.shape[0])
        ids = x[:, 0, 0, 0]
        if isinstance(sigma, torch.Tensor) and sigma.dim() == 1:
            assert torch.equal(sigma, ids * 0.5)
        if isinstance(cond, torch.Tensor):
            assert torch.equal(cond[:, 0, 0], ids)
        else:
            for key, value in cond.items():
                for t in value if isinstance(value, list) else [value]:
                    if key == "shared":
                        assert t.shape == (1, 7)
                        continue
                    assert t.shape[0] == x.shape[0], key
                    assert torch.equal(t.reshape(t.shape[0], -1)[:, 0], ids), key
        assert x.shape[0] % self.frames_in_call == 0
        position = torch.arange(x.shape[0]) % self.frames_in_call
        return x + position.to(x.dtype).view(-1, 1, 1, 1)


def _expected(x: torch.Tensor, frames: int, windows, fusion: str = "pyramid") -> torch.Tensor:
    """Hand-computed fusion: weighted average over windows of (x + position in window)."""
    groups = x.shape[0] // frames
    out = torch.empty_like(x, dtype=torch.float64)
    for g in range(groups):
        for f in range(frames):
            num = den = 0.0
            for window in windows:
                if f in window:
                    j = window.index(f)
                    w = float(fusion_weights(len(window), fusion)[j])
                    num += w * j
                    den += w
            out[g * frames + f] = x[g * frames + f].double() + num / den
    return out


@pytest.mark.parametrize("groups", [1, 2, 3])
@pytest.mark.parametrize("layout", ["sd1", "sdxl", "bare"])
def test_slicing_and_fusion_match_hand_computation(groups, layout):
    frames = 24
    x = _rows(groups, frames)
    cond = {"sd1": _sd1_cond, "sdxl": _sdxl_cond}.get(layout, lambda t: _sdxl_cond(t)["crossattn"])(x)
    sigma = x[:, 0, 0, 0] * 0.5
    windows = context_windows(frames, 8, 1, 3, "R-P", 2)
    den = CheckingDenoiser()
    got = windowed_denoise(den, x, sigma, cond, num_frames=frames, windows=windows,
                           set_window=den.set_window)
    assert torch.allclose(got.double(), _expected(x, frames, windows), atol=1e-5, rtol=0)
    assert den.window_sizes == [8] * len(windows)
    assert den.calls == [8 * groups] * len(windows)


def test_flat_fusion_and_strided_windows():
    frames = 40
    x = _rows(2, frames)
    windows = context_windows(frames, 8, 3, 2, "N", 5)
    assert any(w[1] - w[0] > 1 for w in windows)
    den = CheckingDenoiser()
    got = windowed_denoise(den, x, torch.tensor(3.0), _sd1_cond(x), num_frames=frames,
                           windows=windows, fusion="flat", set_window=den.set_window)
    assert torch.allclose(got.double(), _expected(x, frames, windows, "flat"), atol=1e-5, rtol=0)


def test_identity_denoiser_returns_the_input():
    frames = 37
    x = torch.randn(2 * frames, *SHAPE, generator=torch.Generator().manual_seed(1))
    windows = context_windows(frames, 16, 2, 4, "A", 3)
    got = windowed_denoise(lambda a, s, c: a.clone(), x, torch.ones(2 * frames), None,
                           num_frames=frames, windows=windows)
    assert torch.allclose(got, x, atol=1e-6, rtol=1e-6)
    once = windowed_denoise(lambda a, s, c: a.clone(), x, 1.0, None, num_frames=frames,
                            windows=[list(range(0, 20)), list(range(20, 37))])
    assert torch.equal(once, x)  # frames seen by one window come back exactly


def test_single_window_is_a_direct_call():
    frames = 8
    x = torch.randn(2 * frames, *SHAPE)
    sigma = torch.rand(2 * frames)
    cond = _sdxl_cond(_rows(2, frames))
    seen = []

    def denoiser(a, s, c):
        seen.append((a, s, c))
        return a * s.view(-1, 1, 1, 1) + c["vector"][:, :1].view(-1, 1, 1, 1)

    windows = context_windows(frames, 16, 1, 4, "R-P", 7)
    assert windows == [list(range(frames))]
    sizes = []
    got = windowed_denoise(denoiser, x, sigma, cond, num_frames=frames, windows=windows,
                           set_window=sizes.append)
    assert torch.equal(got, denoiser(x, sigma, cond))
    assert seen[0][0] is x and seen[0][1] is sigma and seen[0][2] is cond
    assert sizes == [frames]


class TemporalDenoiser:
    """Mixes frames inside each window block, like a motion module (block size via set_window)."""

    def __init__(self) -> None:
        self.n = 0
        self.calls = 0

    def __call__(self, x, sigma, cond):
        self.calls += 1
        blocks = x.view(-1, self.n, *x.shape[1:])
        mixed = blocks - 0.3 * blocks.mean(dim=1, keepdim=True) + blocks.roll(1, dims=1) * 0.1
        return (mixed * 2.0).reshape(x.shape) + cond[:, :1, :1].reshape(-1, 1, 1, 1)

    def set_window(self, n):
        self.n = n


@pytest.mark.parametrize("groups", [1, 2, 3])
def test_batched_windows_equal_one_by_one(groups):
    frames = 64
    x = torch.randn(groups * frames, *SHAPE)
    cond = torch.randn(groups * frames, 77, 8)
    windows = context_windows(frames, 16, 2, 4, "R+P", 1)
    one = TemporalDenoiser()
    many = TemporalDenoiser()
    sequential = windowed_denoise(one, x, 1.0, cond, num_frames=frames, windows=windows,
                                  set_window=one.set_window)
    batched = windowed_denoise(many, x, 1.0, cond, num_frames=frames, windows=windows,
                               set_window=many.set_window, max_rows=3 * 16 * groups)
    assert one.calls == len(windows)
    assert many.calls == -(-len(windows) // 3)
    assert torch.allclose(sequential, batched, atol=1e-6, rtol=0)

    row_one, row_many = CheckingDenoiser(), CheckingDenoiser()
    x_ids = _rows(groups, frames)
    a = windowed_denoise(row_one, x_ids, None, _sd1_cond(x_ids), num_frames=frames,
                         windows=windows, set_window=row_one.set_window)
    b = windowed_denoise(row_many, x_ids, None, _sd1_cond(x_ids), num_frames=frames,
                         windows=windows, set_window=row_many.set_window, max_rows=10_000)
    assert torch.equal(a, b)
    assert len(row_many.calls) == 1 and row_many.calls[0] == 16 * groups * len(windows)


def test_output_dtype_follows_the_denoiser():
    frames = 20
    x = torch.randn(frames, *SHAPE, generator=torch.Generator().manual_seed(0))
    windows = context_windows(frames, 8, 1, 2, "N", 0)
    got = windowed_denoise(lambda a, s, c: a.half(), x, 1.0, None, num_frames=frames, windows=windows)
    assert got.dtype == torch.float16
    # fp16 accumulation of two weighted halves: a few ulp of error, relative to the value
    assert torch.allclose(got.float(), x, rtol=5e-3, atol=1e-3)


def test_errors():
    x = torch.randn(30, *SHAPE)
    with pytest.raises(ParameterError, match="num_frames"):
        windowed_denoise(lambda a, s, c: a, x, 1.0, None, num_frames=16,
                         windows=[list(range(16))])
    with pytest.raises(ParameterError, match="no window"):
        windowed_denoise(lambda a, s, c: a, x, 1.0, None, num_frames=15,
                         windows=[list(range(8))])
    with pytest.raises(ParameterError, match="outside"):
        windowed_denoise(lambda a, s, c: a, x, 1.0, None, num_frames=15,
                         windows=[list(range(8)), list(range(8, 16))])
    with pytest.raises(ParameterError, match="denoiser"):
        windowed_denoise(lambda a, s, c: a[:1], x, 1.0, None, num_frames=15,
                         windows=[list(range(8)), list(range(7, 15))])
