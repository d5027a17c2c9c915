"""Injection into the real ldm UNet: sites from structure, exact restore, frame grouping, GroupNorm, errors."""

from __future__ import annotations

import pytest
import torch

from motion_module.core.injection import injected
from motion_module.core.model import MotionModule
from motion_module.core.patch import Host, animatediff_patch
from motion_module.errors import IncompatibleModelError, TooManyFramesError
from motion_module.files.spec import MotionModuleSpec
from tests.fixtures.motion_modules import make_mm
from tests.fixtures.unets import (
    ScheduleOwner,
    assert_same_fingerprint,
    randomize,
    tiny_unet,
    unet_fingerprint,
    unet_inputs,
)


@pytest.fixture(scope="module")
def sd15() -> torch.nn.Module:
    return tiny_unet("sd15")


@pytest.fixture(scope="module")
def sdxl() -> torch.nn.Module:
    return tiny_unet("sdxl")


def test_sites_follow_block_structure(sd15: torch.nn.Module, sdxl: torch.nn.Module) -> None:
    down = [f"input_blocks.{i}" for i in (1, 2, 4, 5, 7, 8, 10, 11)]
    up = [f"output_blocks.{i}" for i in range(12)]
    with injected(sd15, make_mm("v2"), 4) as handle:
        assert handle.sites == down + ["middle_block"] + up
        # before a trailing Upsample, at the end otherwise; before the last ResBlock in the middle
        assert type(sd15.output_blocks[2][-1]).__name__ == "Upsample"
        assert type(sd15.output_blocks[2][-2]).__name__ == "InsertedTemporal"
        assert type(sd15.output_blocks[11][-1]).__name__ == "InsertedTemporal"
        kinds = [type(m).__name__ for m in sd15.middle_block]
        assert kinds == ["ResBlock", "SpatialTransformer", "InsertedTemporal", "ResBlock"]
    with injected(sd15, make_mm("v3"), 4) as handle:
        assert handle.sites == down + up
    with injected(sdxl, make_mm("sdxl", "sdxl"), 4) as handle:
        assert handle.sites == down[:6] + [f"output_blocks.{i}" for i in range(9)]


@pytest.mark.parametrize("how", ["normal", "exception", "base_exception"])
def test_exact_restore(sd15: torch.nn.Module, how: str) -> None:
    x, t, c = unet_inputs(4)
    with torch.no_grad():
        before_out = sd15(x, t, c)
    before = unet_fingerprint(sd15)
    mm = make_mm("v1")  # V1 also patches GroupNorm32 instances

    class Stop(BaseException):
        pass

    def boom(*_: object) -> None:
        if how == "exception":
            raise ValueError("mid-forward")
        raise Stop()

    if how != "normal":
        mm.up(1, 1).register_forward_hook(boom)  # raises in the middle of the UNet's forward
    try:
        with injected(sd15, mm, 4), torch.no_grad():
            sd15(x, t, c)
    except (ValueError, Stop):
        assert how != "normal"
    else:
        assert how == "normal"
    assert_same_fingerprint(before, unet_fingerprint(sd15))
    assert not any("forward" in m.__dict__ for m in sd15.modules())
    with torch.no_grad():
        assert torch.equal(sd15(x, t, c), before_out)


def test_entering_twice_is_refused(sd15: torch.nn.Module) -> None:
    before = unet_fingerprint(sd15)
    with injected(sd15, make_mm("v2"), 4):
        with pytest.raises(RuntimeError, match="already injected"):
            with injected(sd15, make_mm("v3"), 4):
                pass
    assert_same_fingerprint(before, unet_fingerprint(sd15))


def test_frames_mix_within_a_video_only(sd15: torch.nn.Module) -> None:
    """Two videos in one call equal each video alone; changing frame 3 changes frame 0 of its own video."""
    x, t, c = unet_inputs(4, videos=2)
    with injected(sd15, make_mm("v2"), 4), torch.no_grad():
        both = sd15(x, t, c)
        first = sd15(x[:4], t[:4], c[:4])
        second = sd15(x[4:], t[4:], c[4:])
        x2 = x.clone()
        x2[3] += 1.0
        changed = sd15(x2, t, c)
    torch.testing.assert_close(both, torch.cat([first, second]), atol=1e-5, rtol=1e-5)
    assert (changed[0] - both[0]).abs().max() > 1e-4  # frame 0 sees frame 3 of its own video
    torch.testing.assert_close(changed[4:], both[4:], atol=1e-6, rtol=0)  # the other video does not
    with torch.no_grad():
        plain = sd15(x2, t, c) - sd15(x, t, c)
    assert plain[0].abs().max() == 0  # without modules frames are independent


@pytest.mark.parametrize("family", ["v1", "v2"])
def test_groupnorm_statistics(sd15: torch.nn.Module, family: str) -> None:
    """V1: the UNet's GroupNorm32 pools over the frames of each video (groups = rows // frames); V2: per frame."""
    norms = [m for m in sd15.modules() if type(m).__name__ == "GroupNorm32"]
    plain_norms = [m for m in sd15.modules() if type(m) is torch.nn.GroupNorm]
    gn = norms[0]
    x = torch.randn(6, gn.num_channels, 4, 4) * torch.arange(1, 7).view(6, 1, 1, 1)
    with injected(sd15, make_mm(family), 3) as handle:
        patched = sum("forward" in m.__dict__ for m in norms)
        assert sum("forward" in m.__dict__ for m in plain_norms) == 0
        out = gn(x)
        handle.window = 1
        per_frame = gn(x)
    expected_frame = torch.nn.functional.group_norm(x, gn.num_groups, gn.weight, gn.bias, gn.eps)
    torch.testing.assert_close(per_frame, expected_frame)
    if family == "v2":
        assert patched == 0
        torch.testing.assert_close(out, expected_frame)
        return
    assert patched == len(norms) > 0
    video = x.view(2, 3, *x.shape[1:]).transpose(1, 2)
    expected = torch.nn.functional.group_norm(video, gn.num_groups, gn.weight, gn.bias, gn.eps)
    torch.testing.assert_close(out, expected.transpose(1, 2).reshape(x.shape))
    assert (out - expected_frame).abs().max() > 1e-3


def test_mismatched_base_and_channels(sd15: torch.nn.Module, sdxl: torch.nn.Module) -> None:
    before = unet_fingerprint(sd15)
    with pytest.raises(IncompatibleModelError, match="SDXL motion module.*SD1.5"):
        with injected(sd15, make_mm("sdxl", "sdxl"), 4):
            pass
    with pytest.raises(IncompatibleModelError, match="SD1.5 motion module.*SDXL"):
        with injected(sdxl, make_mm("v2"), 4):
            pass
    wide = randomize(MotionModule(MotionModuleSpec("v3", "sd15", (64, 128, 256, 256), 32, False)), 0)
    with pytest.raises(IncompatibleModelError, match="channel mismatch at input_blocks.1"):
        with injected(sd15, wide, 4):
            pass
    assert_same_fingerprint(before, unet_fingerprint(sd15))


def test_too_many_frames(sd15: torch.nn.Module) -> None:
    with pytest.raises(TooManyFramesError, match="24"):
        with injected(sd15, make_mm("v1"), 25):
            pass
    with injected(sd15, make_mm("v1"), 24) as handle:
        with pytest.raises(TooManyFramesError):
            handle.window = 30
        assert handle.window == 24


def test_schedule_swapped_on_both_fields_and_restored(sd15: torch.nn.Module) -> None:
    owner = ScheduleOwner()
    acp, acp_orig = owner.alphas_cumprod, owner.alphas_cumprod_original
    new = torch.linspace(0.9, 0.1, 10, dtype=torch.float64)
    with animatediff_patch(Host(sd15, owner), make_mm("v2"), 4, alphas_cumprod=new):
        assert torch.equal(owner.alphas_cumprod, new.float())
        assert owner.alphas_cumprod.dtype == torch.float32
        assert "alphas_cumprod" in owner._buffers
        assert torch.equal(owner.alphas_cumprod_original, new.float())
    assert owner.alphas_cumprod is acp and owner.alphas_cumprod_original is acp_orig
    with pytest.raises(KeyboardInterrupt):
        with animatediff_patch(Host(sd15, owner), make_mm("v2"), 4, alphas_cumprod=new):
            raise KeyboardInterrupt
    assert owner.alphas_cumprod is acp and owner.alphas_cumprod_original is acp_orig
