"""Context windows, fusion weights and beta schedules (motion_module.schedules)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from motion_module.core.schedules import (
    CLOSED_LOOP_MODES,
    FAMILY_SCHEDULES,
    alphas_cumprod,
    beta_schedule,
    context_windows,
    evaluations_per_frame,
    family_schedule,
    fusion_weights,
    ordered_halving,
    stride_levels,
)
from motion_module.errors import ParameterError


def _runs(window: list[int]) -> list[tuple[int, int]]:
    """(first, last) of each consecutive run, for readable comparisons with features.md §3.6."""
    runs, start = [], window[0]
    for prev, cur in zip(window, window[1:]):
        if cur != prev + 1:
            runs.append((start, prev))
            start = cur
    runs.append((start, window[-1]))
    return runs


@st.composite
def _schedule_args(draw):
    frames = draw(st.integers(1, 256))
    context = draw(st.integers(1, 32))
    overlap = draw(st.integers(0, context - 1))
    stride = draw(st.integers(1, 8))
    mode = draw(st.sampled_from(CLOSED_LOOP_MODES))
    step = draw(st.integers(0, 20))
    return frames, context, stride, overlap, mode, step


@settings(max_examples=400, deadline=None)
@given(_schedule_args())
def test_window_properties(args):
    frames, context, stride, overlap, mode, step = args
    windows = context_windows(frames, context, stride, overlap, mode, step)
    size = min(context, frames)
    covered = set()
    for window in windows:
        assert len(window) == size
        assert len(set(window)) == size, f"duplicate frame in {window}"
        assert all(0 <= f < frames for f in window)
        covered.update(window)
        if mode == "N":
            steps = {b - a for a, b in zip(window, window[1:])}
            assert len(steps) <= 1 and all(s > 0 for s in steps), f"N window wraps: {window}"
    assert covered == set(range(frames))
    assert windows == context_windows(frames, context, stride, overlap, mode, step)
    assert len({tuple(w) for w in windows}) == len(windows)
    if frames <= context:
        assert windows == [list(range(frames))]


@settings(max_examples=150, deadline=None)
@given(_schedule_args())
def test_mode_n_stride_one_uses_the_minimal_window_count(args):
    frames, context, _, overlap, _, step = args
    windows = context_windows(frames, context, 1, overlap, "N", step)
    if frames > context:
        minimal = math.ceil((frames - overlap) / (context - overlap))
        assert len(windows) == minimal
        ordered = sorted(windows)
        assert ordered[0][0] == 0 and ordered[-1][-1] == frames - 1
        for left, right in zip(ordered, ordered[1:]):
            assert left[-1] - right[0] + 1 >= overlap  # neighbours share at least O frames


def test_counting_figure_64_frames_context_16_overlap_4():
    bound = math.ceil((64 - 4) / (16 - 4)) * 16 / 64
    figures = [evaluations_per_frame(context_windows(64, 16, 1, 4, "N", n), 64) for n in range(21)]
    print(f"\nUNet frame-evaluations per frame per step, 64/16/4 mode N: max {max(figures)} "
          f"(bound {bound}); per step {figures}")
    assert bound == 1.25
    assert max(figures) <= bound


def test_reference_worked_example_wrapping_modes():
    # features.md §3.6, L=24 C=16 O=4, stride 1.
    expected = {
        0: [[(0, 15)], [(12, 23), (0, 3)]],
        1: [[(12, 23), (0, 3)], [(0, 15)]],
        2: [[(6, 21)], [(18, 23), (0, 9)]],
        3: [[(18, 23), (0, 9)], [(6, 21)]],
    }
    for mode in ("R-P", "R+P", "A"):
        for step, runs in expected.items():
            got = [_runs(w) for w in context_windows(24, 16, 1, 4, mode, step)]
            assert got == runs, (mode, step)


def test_mode_a_adds_the_closing_window():
    assert [_runs(w) for w in context_windows(28, 16, 1, 4, "R-P", 0)] == [[(0, 15)], [(12, 27)]]
    assert [_runs(w) for w in context_windows(28, 16, 1, 4, "A", 0)] == [
        [(0, 15)], [(12, 27)], [(24, 27), (0, 11)]
    ]


def test_mode_n_rotates_inside_the_slack():
    # 32 frames, C 16, O 4: minimal cover is 3 windows, the middle one may start at 4..12.
    middles = {context_windows(32, 16, 1, 4, "N", n)[1][0] for n in range(8)}
    assert context_windows(32, 16, 1, 4, "N", 0) == [
        list(range(0, 16)), list(range(8, 24)), list(range(16, 32))
    ]
    assert len(middles) == 8 and min(middles) >= 4 and max(middles) <= 12


def test_strided_windows_never_repeat_frames():
    # The reference's stride-2 window for L=24 holds 0,2,4,6 twice; here level 2 needs L >= 31.
    assert stride_levels(24, 16, 2) == [1]
    assert stride_levels(64, 16, 8) == [1, 2, 4]
    windows = context_windows(64, 16, 2, 4, "R-P", 1)
    strided = [w for w in windows if (w[1] - w[0]) % 64 == 2]
    assert strided and all(len(set(w)) == 16 for w in strided)


def test_ordered_halving():
    assert [ordered_halving(n) for n in range(8)] == [0, 0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(num_frames=0), "video_length"),
        (dict(context_length=0), "context"),
        (dict(stride=0), "stride"),
        (dict(overlap=16), "overlap"),
        (dict(overlap=-1), "overlap"),
        (dict(closed_loop="X"), "closed_loop"),
        (dict(step=-1), "step"),
        (dict(num_frames=2.5), "video_length"),
    ],
)
def test_context_window_validation(kwargs, field):
    args = dict(num_frames=32, context_length=16, stride=1, overlap=4, closed_loop="N", step=0)
    args.update(kwargs)
    with pytest.raises(ParameterError) as info:
        context_windows(**args)
    assert info.value.field == field
    assert field in str(info.value)


def test_fusion_weights():
    assert fusion_weights(5).tolist() == [1, 2, 3, 2, 1]
    assert fusion_weights(4).tolist() == [1, 2, 2, 1]
    assert fusion_weights(1).tolist() == [1]
    assert fusion_weights(3, "flat").tolist() == [1, 1, 1]
    assert fusion_weights(16, dtype=torch.float16).dtype == torch.float16
    with pytest.raises(ParameterError, match="fusion"):
        fusion_weights(4, "triangle")


@pytest.mark.parametrize(
    "name, end", [("linear", 0.012), ("scaled_linear", 0.012), ("scaled_linear", 0.020)]
)
def test_alphas_cumprod_equal_diffusers(name, end):
    from diffusers import DDPMScheduler

    reference = DDPMScheduler(beta_schedule=name, beta_start=0.00085, beta_end=end)
    ours = alphas_cumprod(name, 1000, 0.00085, end)
    assert ours.dtype == torch.float64 and ours.shape == (1000,)
    assert torch.allclose(ours, reference.alphas_cumprod.double(), rtol=0, atol=1e-7)
    assert torch.allclose(beta_schedule(name, 1000, 0.00085, end), reference.betas.double(), atol=1e-9)


def test_linear_is_not_scaled_linear():
    # The naming trap: ldm's "linear" is diffusers' "scaled_linear"; the two differ a lot.
    gap = (alphas_cumprod("linear")[-1] - alphas_cumprod("scaled_linear")[-1]).abs()
    assert gap > 1e-3


def test_family_table():
    from diffusers import DDPMScheduler

    assert set(FAMILY_SCHEDULES) == {"v1", "v2", "v3", "animatelcm", "sdxl", "hotshot", "lightning"}
    for family in ("v1", "v2", "v3", "animatelcm", "lightning"):
        assert family_schedule(family).label == "linear 0.00085-0.012"
    assert family_schedule("sdxl").label == "scaled_linear 0.00085-0.02"
    assert family_schedule("hotshot").label == "scaled_linear 0.00085-0.012"
    assert family_schedule("lightning").timestep_spacing == "trailing"
    spec = family_schedule("sdxl")
    reference = DDPMScheduler(beta_schedule=spec.beta_schedule, beta_start=spec.beta_start,
                              beta_end=spec.beta_end)
    assert torch.allclose(spec.alphas_cumprod(), reference.alphas_cumprod.double(), atol=1e-7)
    with pytest.raises(ParameterError, match="family"):
        family_schedule("v4")
    with pytest.raises(ParameterError, match="beta_schedule"):
        beta_schedule("cosine")
