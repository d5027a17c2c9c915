"""Window modes on the real ldm UNet with motion modules inserted: "unet" (whole-UNet windows) and
"motion_module" (the UNet runs over every frame once; only the temporal attention is windowed)."""

from __future__ import annotations

import pytest
import torch

from motion_module.core.injection import injected
from motion_module.core.run import plan_run
from motion_module.core.schedules import evaluations_per_frame
from motion_module.params.request import AnimateDiffParams
from tests.fixtures.motion_modules import make_mm
from tests.fixtures.unets import unet_inputs


def run(unet: torch.nn.Module, frames: int, mode: str, family: str = "v2", steps: range = range(1),
        context: int = 16, max_rows: int | None = None) -> tuple[torch.Tensor, list[tuple[int, float, int]]]:
    """Denoise ``steps`` sampler calls of 2 groups (cond, uncond); per step: (spatial rows, temporal
    frame-evaluations, most rows in one spatial-layer call)."""
    params = AnimateDiffParams(enable=True, video_length=frames, context=context, overlap=4, window_mode=mode,
                               closed_loop="N")
    mm = make_mm(family)
    plan = plan_run(params, mm.spec, "")
    counts = {"spatial": 0, "temporal": 0, "widest": 0}
    spatial = unet.input_blocks[1][1].proj_in  # in a SpatialTransformer: once per row of every layer call
    positions = 8 * 8  # input_blocks.1 is at the latent's size

    def on_spatial(module, inputs, output):  # noqa: ANN001, ANN202
        counts["spatial"] += inputs[0].shape[0]
        counts["widest"] = max(counts["widest"], inputs[0].shape[0])

    def on_temporal(module, inputs, output):  # noqa: ANN001, ANN202
        counts["temporal"] += inputs[0].shape[0] * inputs[0].shape[1]  # (sequences, frames, C) tokens

    hooks = [spatial.register_forward_hook(on_spatial),
             mm.down(0, 0).temporal_transformer.proj_in.register_forward_hook(on_temporal)]
    x, t, c = unet_inputs(frames, videos=2)
    per_step = []
    try:
        with injected(unet, mm, plan.context) as injection, torch.no_grad():
            for step in steps:
                counts.update(spatial=0, temporal=0, widest=0)
                x = plan.denoise(lambda xs, ss, cs: unet(xs, ss, cs), x, t, c, step=step, max_rows=max_rows,
                                 frames=injection)
                per_step.append((counts["spatial"], counts["temporal"] / positions, counts["widest"]))
                assert injection._state.temporal is None  # cleared after every step
    finally:
        for hook in hooks:
            hook.remove()
    return x, per_step


def test_counting_64_frames_context_16_overlap_4(unet: torch.nn.Module) -> None:
    frames = 64
    plan = plan_run(AnimateDiffParams(enable=True, video_length=frames, context=16, overlap=4, closed_loop="N"),
                    make_mm("v2").spec, "")
    bound = evaluations_per_frame(plan.windows(0), frames)
    assert bound == 1.25
    _, motion = run(unet, frames, "motion_module", steps=range(3))
    _, whole = run(unet, frames, "unet", steps=range(1))
    for spatial, temporal, widest in motion:
        assert spatial / (2 * frames) == 1.0  # every frame's spatial layers once per step and group
        assert temporal / (2 * frames) == bound  # the temporal attention: today's window bound
        assert widest == 16  # spatial layers run over chunks of the context length, not all 64 frames
    assert whole[0][0] / (2 * frames) == whole[0][1] / (2 * frames) == bound
    assert whole[0][2] == 16
    print(f"\nspatial frame-evals per frame per step: motion_module {motion[0][0] / (2 * frames):.2f}, "
          f"unet {whole[0][0] / (2 * frames):.2f}; motion-module frame-evals {motion[0][1] / (2 * frames):.2f}")


@pytest.mark.parametrize("family", ["v2", "v1"])
def test_frames_within_the_context_are_bit_identical_in_both_modes(unet: torch.nn.Module, family: str) -> None:
    mm = make_mm(family)
    x, t, c = unet_inputs(12, videos=2)
    with injected(unet, mm, 12), torch.no_grad():
        plain = unet(x[:12], t[:12], c[:12]), unet(x[12:], t[12:], c[12:])
    for mode in ("unet", "motion_module"):
        out, _ = run(unet, 12, mode, family)
        assert torch.equal(out, torch.cat(plain)), mode


def test_motion_module_windows_run_long_videos_past_the_positional_table(unet: torch.nn.Module) -> None:
    # V1's table holds 24 frames: a 40-frame call is fine when the attention sees windows of 16
    out, per_step = run(unet, 40, "motion_module", family="v1")
    whole, _ = run(unet, 40, "unet", family="v1")
    assert torch.isfinite(out).all() and out.shape == whole.shape
    assert not torch.equal(out, whole)  # spatial layers see different batches (V1's GroupNorm pools all frames)
    assert per_step[0][0] == 2 * 40


def test_chunked_spatial_layers_and_position_chunks_match_whole_calls(unet: torch.nn.Module) -> None:
    """The chunks only bound memory: 40 frames in chunks of 16 rows (and the temporal layers in chunks of
    16 rows' tokens) equal one call over all 40 rows up to float rounding."""
    from motion_module.core.injection import FrameState

    chunked, per_step = run(unet, 40, "motion_module")
    whole, wide = run(unet, 40, "motion_module", max_rows=40)
    assert per_step[0][2] == 16 and wide[0][2] == 40
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    # the temporal transformer alone: windows over position chunks (budget) vs all positions at once
    module = make_mm("v2").down(0, 0).temporal_transformer
    x = torch.randn(2 * 20, 32, 8, 8)
    groups = [(20, torch.arange(40), torch.ones(40, dtype=torch.float64))]  # one window: each video whole
    with torch.no_grad():
        whole = module(x, 20)
        torch.testing.assert_close(module.windowed(x, groups), whole, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(module.windowed(x, groups, budget=3 * 40), whole, rtol=1e-5, atol=1e-5)
    assert FrameState(4, 32).temporal is None


def test_v1_keeps_resblocks_whole_for_its_cross_frame_groupnorm(unet: torch.nn.Module) -> None:
    from motion_module.core.injection import spatial_layers

    every, without = spatial_layers(unet), spatial_layers(unet, skip_groupnorm=True)
    kinds = {type(layer).__name__ for layer in without}
    assert "ResBlock" not in kinds and "SpatialTransformer" in kinds and len(without) < len(every)
    rows = []
    hook = unet.input_blocks[1][0].register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    try:
        run(unet, 40, "motion_module", family="v1")
    finally:
        hook.remove()
    assert rows == [40, 40]  # one call per group over the whole video: statistics pooled over all frames


def test_motion_scale_multiplies_each_modules_residual(unet: torch.nn.Module) -> None:
    from motion_module.core.patch import Host, animatediff_patch

    x, t, c = unet_inputs(8)
    with torch.no_grad():
        bare = unet(x, t, c)
        outs = {}
        for scale in (0.0, 1.0, 2.0):
            with animatediff_patch(Host(unet), make_mm("v2"), 8, motion_scale=scale):
                outs[scale] = unet(x, t, c)
        with injected(unet, make_mm("v2"), 8):
            default = unet(x, t, c)
    assert torch.equal(outs[0.0], bare)  # no motion-module effect at all (V2: no cross-frame GroupNorm)
    assert torch.equal(outs[1.0], default)  # 1 = exactly the modules as trained
    assert not torch.equal(outs[2.0], outs[1.0]) and torch.isfinite(outs[2.0]).all()
