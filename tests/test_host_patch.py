"""The one owner of host changes (`patch.animatediff_patch` + `HostPatch`): every kind of change is undone
exactly after success, an Exception and an interrupt (a BaseException, as A1111's), on the real ldm UNet."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from motion_module.core.freeinit import NoiseSource
from motion_module.core.patch import Host, animatediff_patch
from tests.fixtures.motion_modules import make_mm
from tests.fixtures.unets import ScheduleOwner, assert_same_fingerprint, unet_fingerprint, unet_inputs


class Interrupted(BaseException):
    """Stands in for A1111's interrupt (raised through every frame like KeyboardInterrupt)."""


class InnerModel(torch.nn.Module):
    """The sampler's inner model as A1111 builds it: ``forward(x, sigma, cond=...)`` around the UNet."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(x, sigma, cond)


class Processing:
    """A host's per-request object: the attributes AnimateDiff swaps while sampling."""

    def __init__(self) -> None:
        self.rng = object()
        self.sampler = object()
        self.init_latent = torch.zeros(4, 4, 8, 8)


def _state(owner: ScheduleOwner, inner: InnerModel, p: Processing) -> dict[str, Any]:
    return {"owner": dict(owner.__dict__), "buffers": dict(owner._buffers), "inner": dict(inner.__dict__),
            "p": dict(p.__dict__)}


def _same(before: dict[str, Any], after: dict[str, Any]) -> None:
    for part in before:
        assert before[part].keys() == after[part].keys(), part
        for key, value in before[part].items():
            assert after[part][key] is value, (part, key)


CHANGES: dict[str, Callable[[Any, InnerModel, Processing], None]] = {
    "inner-model wrapper": lambda patch, inner, p: patch.wrap_forward(inner, lambda f: lambda *a, **k: f(*a, **k)),
    "rng stand-in": lambda patch, inner, p: patch.set_attribute(p, "rng", NoiseSource(p.rng)),
    "rebuilt sampler": lambda patch, inner, p: patch.set_attribute(p, "sampler", object()),
    "init latents": lambda patch, inner, p: patch.set_attribute(p, "init_latent", torch.ones(4, 4, 8, 8)),
    "every change, twice": lambda patch, inner, p: [change(patch, inner, p) for change in list(CHANGES.values())[:4]
                                                     for _ in range(2)],
}


@pytest.mark.parametrize("change", list(CHANGES))
@pytest.mark.parametrize("outcome", ["success", "exception", "interrupt"])
def test_every_host_change_is_undone_exactly(unet: torch.nn.Module, change: str, outcome: str) -> None:
    x, t, c = unet_inputs(4)
    owner, inner, p = ScheduleOwner(), InnerModel(unet), Processing()
    with torch.no_grad():
        plain = inner(x, t, cond=c)
    fingerprint, before = unet_fingerprint(unet), _state(owner, inner, p)
    new_schedule = torch.linspace(0.9, 0.1, 10)
    try:
        with animatediff_patch(Host(unet, owner), make_mm("v1"), 4, alphas_cumprod=new_schedule) as patch:
            CHANGES[change](patch, inner, p)
            during = _state(owner, inner, p)
            assert any(during[part].get(key) is not value for part in before for key, value in before[part].items()) \
                or "forward" in during["inner"]
            with torch.no_grad():
                animated = inner(x, t, cond=c)  # runs through the wrapper and the inserted modules
            assert not torch.equal(animated, plain)
            if outcome == "exception":
                raise ValueError("mid-run")
            if outcome == "interrupt":
                raise Interrupted()
    except (ValueError, Interrupted):
        assert outcome != "success"
    _same(before, _state(owner, inner, p))
    assert_same_fingerprint(fingerprint, unet_fingerprint(unet))
    with torch.no_grad():
        assert torch.equal(inner(x, t, cond=c), plain)


def test_a_wrapper_another_extension_installed_first_is_chained_and_put_back(unet: torch.nn.Module) -> None:
    inner, calls = InnerModel(unet), []

    def theirs(x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        calls.append("theirs")
        return InnerModel.forward(inner, x, sigma, cond) * 2

    inner.forward = theirs  # type: ignore[method-assign]
    x, t, c = unet_inputs(2)
    with animatediff_patch(Host(unet), make_mm("v2"), 2) as patch:
        def ours(forward: Any) -> Any:
            def run(*args: Any, **kwargs: Any) -> Any:
                calls.append("ours")
                return forward(*args, **kwargs)
            return run

        assert patch.wrap_forward(inner, ours) is True
        assert patch.wrap_forward(inner, ours) is False  # once per module and block
        with torch.no_grad():
            inner(x, t, cond=c)
        assert calls == ["ours", "theirs"]
    assert inner.__dict__["forward"] is theirs


def test_a_wrapper_installed_over_ours_stays_and_ours_passes_through(unet: torch.nn.Module) -> None:
    inner = InnerModel(unet)
    x, t, c = unet_inputs(2)
    with animatediff_patch(Host(unet), make_mm("v2"), 2) as patch:
        patch.wrap_forward(inner, lambda forward: lambda *a, **k: forward(*a, **k) + 100)
        ours = inner.__dict__["forward"]
        inner.forward = lambda *a, **k: ours(*a, **k) * 0 + 7  # type: ignore[method-assign]
        later = inner.__dict__["forward"]
    assert inner.__dict__["forward"] is later  # not cut out by our restore
    with torch.no_grad():
        assert torch.equal(ours(x, t, cond=c), InnerModel.forward(inner, x, t, c))  # ours is a pass-through now


def test_no_change_is_accepted_after_the_block(unet: torch.nn.Module) -> None:
    p = Processing()
    with animatediff_patch(Host(unet), make_mm("v2"), 2) as patch:
        pass
    with pytest.raises(RuntimeError, match="ended"):
        patch.set_attribute(p, "rng", None)
    with pytest.raises(RuntimeError, match="ended"):
        patch.wrap_forward(InnerModel(unet), lambda f: f)


def test_changes_are_undone_in_reverse_order(unet: torch.nn.Module) -> None:
    p, order = Processing(), []
    rng = p.rng
    with animatediff_patch(Host(unet), make_mm("v2"), 2) as patch:
        first, second = NoiseSource(rng), NoiseSource(rng)
        patch.set_attribute(p, "rng", first)
        patch.set_attribute(p, "rng", second)
        patch.injection.set_window(1)
        patch._open().callback(lambda: order.append(p.rng))  # sees the state just before the undo steps
        assert p.rng is second
    assert order == [second] and p.rng is rng
