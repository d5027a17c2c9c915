"""sd-webui-controlnet 1.1.455's own SparseCtrl class (from the WebUI kit's sources) built on our MotionWrapper:
a tiny RGB and scribble SparseCtrl with random weights in the official key layout loads through ControlNet's
``load_state_dict``, gets our temporal layers at input blocks 1, 2, 4, 5, 7, 8, 10, 11, and every layer sees
whole videos of the window in each call (the frame count of the running injection), also in motion-module
window mode; with a V2 module it is a 422 naming ``model``.

Needs the kit's ControlNet (``ANIMATEDIFF_WEBUI_DIR`` or ``~/.cache/animatediff-webui-kit/webui``; ``.ci/run``
builds it before this tier); skipped without it. ldm is the real one (the tests' Stability-AI ldm).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import torch

from motion_module.control.sparsectrl import SparseCtrlTemporal
from motion_module.core.injection import TemporalWindows, injected
from motion_module.core.model import MotionModule
from motion_module.errors import ParameterError
from motion_module.files.sparsectrl_file import to_controlnet_layout
from motion_module.files.spec import MotionModuleSpec
from tests.fixtures.sparsectrl import (
    SD15_CHANNELS,
    controlnet_module,
    controlnet_part,
    motion_tensors,
    official_controlnet_part,
    tiny_config,
)
from tests.fixtures.unets import CONTEXT_DIM, randomize, tiny_unet

SITES = (1, 2, 4, 5, 7, 8, 10, 11)
FRAMES = 4


@pytest.fixture(scope="module")
def sparsectrl_module() -> Iterator[ModuleType]:
    try:
        with controlnet_module("controlnet_sparsectrl") as module:
            yield module
    except FileNotFoundError as missing:
        pytest.skip(f"sd-webui-controlnet's sources are not here: {missing}")


def build(module: ModuleType, rgb: bool, seed: int = 0) -> Any:
    config = tiny_config(rgb)
    state = {**controlnet_part(module.SparseCtrl, config, seed), **motion_tensors(seed=seed + 1)}
    model = module.SparseCtrl(**config)
    model.load_state_dict(state)  # ControlNet's: strict for its part, our MotionWrapper (strict) for the rest
    return model.eval()


def mm(family: str) -> MotionModule:
    return randomize(MotionModule(MotionModuleSpec(family, "sd15", SD15_CHANNELS, 32, family == "v2")), 5).eval()


def inputs(rows: int, rgb: bool, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 4, 8, 8, generator=gen)
    hint = torch.randn(rows, 5, 8, 8, generator=gen) if rgb else torch.rand(rows, 4, 64, 64, generator=gen)
    return x, hint, torch.full((rows,), 500.0), torch.randn(rows, 7, CONTEXT_DIM, generator=gen)


def record_frames(model: Any) -> list[tuple[int, int, Any]]:
    """(rows, frames per video, windows) of every call of every temporal layer of ``model``."""
    seen: list[tuple[int, int, Any]] = []
    for layer in model.modules():
        if isinstance(layer, SparseCtrlTemporal):
            transformer = layer.temporal_transformer
            transformer.register_forward_pre_hook(lambda _, args: seen.append((args[0].shape[0], args[1], None)))
            original = transformer.windowed

            def windowed(x: torch.Tensor, groups: Any, budget: Any = None, original: Any = original) -> Any:
                seen.append((x.shape[0], 0, [(length, rows.tolist()) for length, rows, _ in groups]))
                return original(x, groups, budget)

            transformer.windowed = windowed
    return seen


@pytest.mark.parametrize("rgb", [True, False], ids=["rgb", "scribble"])
def test_controlnets_sparsectrl_loads_the_official_layout(sparsectrl_module: ModuleType, rgb: bool) -> None:
    model = build(sparsectrl_module, rgb)
    assert model.use_simplified_condition_embedding is rgb
    appended = {i: block[-1] for i, block in enumerate(model.input_blocks) if isinstance(block[-1], SparseCtrlTemporal)}
    assert sorted(appended) == list(SITES)
    for number, (site, layer) in enumerate(appended.items()):
        proj_in = motion_tensors(seed=1)[f"down_blocks.{number // 2}.motion_modules.{number % 2}.temporal_transformer"
                                         ".proj_in.weight"]
        assert torch.equal(layer.temporal_transformer.proj_in.weight, proj_in), site


@pytest.mark.parametrize("rgb", [True, False], ids=["rgb", "scribble"])
def test_its_temporal_layers_see_whole_videos_of_the_window(sparsectrl_module: ModuleType, rgb: bool) -> None:
    """Two videos of FRAMES frames in one call (cond and uncond): every layer groups the 8 rows as 2 x 4; the
    result is each video's alone, and a change in video 0 moves the other frames of video 0, never video 1."""
    model = build(sparsectrl_module, rgb)
    seen = record_frames(model)
    x, hint, t, ctx = inputs(2 * FRAMES, rgb)
    with injected(tiny_unet("sd15"), mm("v3"), FRAMES), torch.no_grad():
        both = model(x, hint, t, ctx)
        assert seen == [(2 * FRAMES, FRAMES, None)] * len(SITES)
        alone = model(x[:FRAMES], hint[:FRAMES], t[:FRAMES], ctx[:FRAMES])
        changed = hint.clone()
        changed[1] = changed[1].flip(-1)
        moved = model(x, changed, t, ctx)
    assert len(both) == 13 and all(o.shape[0] == 2 * FRAMES for o in both)
    for full, first, other in zip(both, alone, moved):
        torch.testing.assert_close(full[:FRAMES], first, rtol=1e-4, atol=1e-5)
        assert torch.equal(other[FRAMES:], full[FRAMES:])
    assert any(not torch.allclose(o[[0, 2, 3]], f[[0, 2, 3]]) for o, f in zip(moved, both))  # temporal mixing


def test_motion_module_window_mode(sparsectrl_module: ModuleType) -> None:
    """One call holds the whole 8-frame video; the layers attend within the step's windows (0-3, 4-7)."""
    model = build(sparsectrl_module, rgb=True, seed=4)
    x, hint, t, ctx = inputs(8, rgb=True, seed=2)
    windows = TemporalWindows(((0, 1, 2, 3), (4, 5, 6, 7)), (torch.ones(4), torch.ones(4)))
    unet = tiny_unet("sd15")
    with injected(unet, mm("v3"), 8) as handle, torch.no_grad():
        handle.set_temporal_windows(windows)
        seen = record_frames(model)
        whole = model(x, hint, t, ctx)
        assert seen == [(8, 0, [(4, list(range(8)))])] * len(SITES)
        handle.set_temporal_windows(None)
        handle.window = 4
        split = model(x, hint, t, ctx)  # the same windows as whole-UNet calls of 4 frames
    for a, b in zip(whole, split):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_non_v3_module_is_a_422_naming_model(sparsectrl_module: ModuleType) -> None:
    model = build(sparsectrl_module, rgb=True)
    x, hint, t, ctx = inputs(FRAMES, rgb=True)
    with injected(tiny_unet("sd15"), mm("v2"), FRAMES), torch.no_grad(), pytest.raises(ParameterError) as caught:
        model(x, hint, t, ctx)
    assert caught.value.field == "model" and caught.value.status_code == 422
    with torch.no_grad(), pytest.raises(ParameterError, match="'enable'"):
        model(x, hint, t, ctx)  # no AnimateDiff generation



@pytest.mark.parametrize("rgb", [True, False], ids=["rgb", "scribble"])
def test_official_files_load_after_the_sparsectrl_command(sparsectrl_module: ModuleType, rgb: bool) -> None:
    """An official file (AnimateDiff's names) converted by ``to_controlnet_layout`` loads into ControlNet's own
    SparseCtrl with its RGB / scribble config (what its model guess picks from ``input_hint_block.0.weight``)."""
    part, _ = official_controlnet_part(rgb)
    converted = to_controlnet_layout({**part, **motion_tensors(pe_length=32)})
    assert ("input_hint_block.0.weight" in converted) is rgb
    model = sparsectrl_module.SparseCtrl(**tiny_config(rgb))
    model.load_state_dict(converted)
    assert sum(isinstance(m, SparseCtrlTemporal) for m in model.modules()) == len(SITES)


def test_converted_scribble_model_computes_what_the_official_one_does(sparsectrl_module: ModuleType) -> None:
    """With its temporal layers neutral (proj_out zero: x + 0), the converted scribble model's 13 outputs are those
    of the same weights in diffusers' ControlNetModel (the official model's layers and names), zero sample input."""
    part, reference = official_controlnet_part(rgb=False)
    temporal = {k: (torch.zeros_like(v) if ".proj_out." in k else v) for k, v in motion_tensors().items()}
    model = sparsectrl_module.SparseCtrl(**tiny_config(rgb=False))
    model.load_state_dict(to_controlnet_layout({**part, **temporal}))
    x, hint, t, ctx = inputs(FRAMES, rgb=False, seed=3)
    with injected(tiny_unet("sd15"), mm("v3"), FRAMES), torch.no_grad():
        ours = model.eval()(x, hint, t, ctx)
        down, mid = reference(torch.zeros_like(x), t, ctx, hint, return_dict=False)
    assert len(ours) == len(down) + 1 == 13
    for number, (a, b) in enumerate(zip(ours, [*down, mid])):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=f"output {number}")
