"""Where motion modules go in an ldm/sgm UNet, derived from the UNet's block structure.

The UNet is read, not assumed: its ``input_blocks`` are walked, a level ends at each ``Downsample``,
and every block holding a ``ResBlock`` is a motion-module site of that level (SD1.5: input blocks
1, 2, 4, 5, 7, 8, 10, 11; SDXL: 1, 2, 4, 5, 7, 8). ``output_blocks`` are walked the same way, a level
ending at each ``Upsample``; the module goes *before* a trailing ``Upsample`` and at the end otherwise.
In the middle block (V2-type modules only) it goes before the final ResBlock. Classes are recognised
by name so the same code serves ldm (SD1.x/2.x) and sgm (SDXL) without importing either.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from motion_module.core.instance_forward import wrap_instance_forward
from motion_module.core.model import MotionModule, TemporalModule
from motion_module.core.rows import slice_rows
from motion_module.core.weights import follow_host
from motion_module.errors import IncompatibleModelError, TooManyFramesError


@dataclass(frozen=True)
class TemporalWindows:
    """Motion-module windows: the temporal attention of a call holding whole videos runs over each of
    ``windows`` (frame indices within a video) and the outputs are fused with ``weights`` (one vector per
    window, summing to 1 per frame over the windows that hold it)."""

    windows: tuple[tuple[int, ...], ...]
    weights: tuple[Tensor, ...]
    chunk: int | None = None  # rows per spatial-layer call (None: all rows at once); see frame_chunks

    @property
    def longest(self) -> int:
        return max(len(w) for w in self.windows)


class FrameState:
    """The window of the UNet call in progress, shared by every inserted module.

    ``window`` is the number of consecutive rows that form one video (one context window) in the
    current call; it is not the video length, which the UNet never sees. With ``temporal`` set, each
    call holds whole videos and the motion modules window over them themselves.
    """

    def __init__(self, window: int, max_frames: int, family: str = "") -> None:
        self.max_frames = max_frames
        self.family = family  # the motion module's family (SparseCtrl's layers check it: V3 only)
        self._window = 0
        self.temporal: TemporalWindows | None = None
        self.scale = 1.0  # motion scale: each module's residual (output - input) is multiplied by it
        self.frame_scales: Tensor | None = None  # per video frame (keyframes); then row_scales per call
        self.row_scales: Tensor | None = None
        self.window = window

    @property
    def window(self) -> int:
        return self._window

    @window.setter
    def window(self, value: int) -> None:
        value = int(value)
        if value < 1:
            raise ValueError(f"the window must be at least 1 frame, got {value}")
        seen = value if self.temporal is None else self.temporal.longest  # frames one attention call sees
        if seen > self.max_frames:
            raise TooManyFramesError(
                f"{value} frames in one UNet call, but the motion module's positional table holds "
                f"{self.max_frames}: use a context length of {self.max_frames} or less"
            )
        self._window = value


def temporal_forward(module: TemporalModule, state: FrameState, x: Tensor) -> Tensor:
    """``module`` over the rows of one UNet call as ``state`` groups them: whole videos of ``state.window``
    consecutive rows, or (``state.temporal`` set) the motion-module windows of each whole video, fused."""
    if state.temporal is None:
        return module(x, state.window)
    frames, temporal = state.window, state.temporal
    videos = x.shape[0] // frames
    by_length: dict[int, list[int]] = {}
    for number, window in enumerate(temporal.windows):
        by_length.setdefault(len(window), []).append(number)
    groups = []
    for length, numbers in by_length.items():  # windows of one length: one batch of sequences
        rows = torch.tensor([v * frames + f for n in numbers for v in range(videos)
                             for f in temporal.windows[n]], device=x.device)
        weights = torch.cat([temporal.weights[n].repeat(videos) for n in numbers]).to(x.device)
        groups.append((length, rows, weights))
    budget = None if temporal.chunk is None else temporal.chunk * x.shape[-2] * x.shape[-1]
    return module.temporal_transformer.windowed(x, groups, budget)


_RUNNING: list[FrameState] = []  # the FrameState of every injection in progress, innermost last


def running_state() -> FrameState | None:
    """The frame state of the injection in progress (the innermost), None outside :func:`injected`: layers
    that run beside the UNet in its calls (SparseCtrl's, inside ControlNet) group their rows by it."""
    return _RUNNING[-1] if _RUNNING else None


class InsertedTemporal(nn.Module):
    """Adapter placed in a ``TimestepEmbedSequential``: called as ``layer(x)``, runs ``module(x, F)``."""

    _state: FrameState

    def __init__(self, module: TemporalModule, state: FrameState, name: str) -> None:
        super().__init__()
        self.module = module
        self.site = name
        object.__setattr__(self, "_state", state)  # not a submodule, not a parameter

    def forward(self, x: Tensor) -> Tensor:
        state = self._state
        out = temporal_forward(self.module, state, x)
        if state.frame_scales is not None:
            if state.row_scales is None or state.row_scales.numel() != x.shape[0]:
                raise RuntimeError(f"per-frame motion scales: the frames of this {x.shape[0]}-row UNet call were "
                                   "not named (Injection.select_frames)")
            return x + (out - x) * state.row_scales.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))
        return out if state.scale == 1.0 else x + (out - x) * state.scale

    def extra_repr(self) -> str:
        return f"site={self.site}"


@dataclass(frozen=True)
class Site:
    """One insertion: ``module`` goes into ``block`` (a TimestepEmbedSequential) at ``index``."""

    name: str  # e.g. "input_blocks.1", "middle_block", "output_blocks.2"
    block: nn.Sequential
    index: int
    channels: int
    pick: Callable[[MotionModule], TemporalModule | None]


def _kind(layer: nn.Module) -> str:
    return type(layer).__name__


def _resblock_channels(block: nn.Module) -> int | None:
    for layer in block:  # type: ignore[attr-defined]
        if _kind(layer) == "ResBlock":
            return int(layer.out_channels)
    return None


def _down_sites(unet: nn.Module) -> list[tuple[int, int, int, nn.Sequential, int]]:
    """(level, index within level, channels, block, block number) for each input block with a ResBlock."""
    sites: list[tuple[int, int, int, nn.Sequential, int]] = []
    level, index = 0, 0
    for number, block in enumerate(unet.input_blocks):  # type: ignore[attr-defined, arg-type]
        kinds = [_kind(layer) for layer in block]
        if "Downsample" in kinds:
            level, index = level + 1, 0
            continue
        channels = _resblock_channels(block)
        if channels is not None:
            sites.append((level, index, channels, block, number))
            index += 1
    return sites


def _up_sites(unet: nn.Module) -> list[tuple[int, int, int, nn.Sequential, int, bool]]:
    """(up level, index in level, channels, block, block number, ends with Upsample) per output block."""
    sites: list[tuple[int, int, int, nn.Sequential, int, bool]] = []
    level, index = 0, 0
    for number, block in enumerate(unet.output_blocks):  # type: ignore[attr-defined, arg-type]
        channels = _resblock_channels(block)
        upsample = _kind(block[-1]) == "Upsample"
        if channels is not None:
            sites.append((level, index, channels, block, number, upsample))
            index += 1
        if upsample:
            level, index = level + 1, 0
    return sites


def level_channels(unet: nn.Module) -> tuple[int, ...]:
    """Channels of each UNet level, read from its input blocks (SD1.5: 320/640/1280/1280)."""
    levels: dict[int, int] = {}
    for level, _, channels, _, _ in _down_sites(unet):
        levels.setdefault(level, channels)
    return tuple(levels[i] for i in sorted(levels))


def _describe(levels: int) -> str:
    return {4: "SD1.5/SD2-shaped (4 levels)", 3: "SDXL-shaped (3 levels)"}.get(levels, f"{levels}-level")


def _pick(where: str, level: int, index: int) -> Callable[[MotionModule], TemporalModule | None]:
    """The function that finds a site's module in a MotionModule (down/up: by level and index; mid)."""
    def pick(mm: MotionModule) -> TemporalModule | None:
        if where == "mid":
            return mm.mid()
        return mm.down(level, index) if where == "down" else mm.up(level, index)
    return pick


def plan_sites(unet: nn.Module, mm: MotionModule) -> list[Site]:
    """Every insertion site for ``mm`` in ``unet``; raises IncompatibleModelError on any mismatch."""
    spec = mm.spec
    down, up = _down_sites(unet), _up_sites(unet)
    unet_levels = 1 + max((site[0] for site in down), default=-1)
    if unet_levels != len(spec.channels):
        base = "SDXL" if spec.base == "sdxl" else "SD1.5"
        raise IncompatibleModelError(
            f"this {base} motion module ({spec.family}) needs a {_describe(len(spec.channels))} UNet, but the "
            f"loaded checkpoint's UNet is {_describe(unet_levels)}: pick a motion module made for this checkpoint"
        )
    sites: list[Site] = []
    for level, index, channels, block, number in down:
        if index > 1:
            raise IncompatibleModelError(f"UNet level {level} has more than 2 ResBlocks; not an SD-family UNet")
        sites.append(Site(f"input_blocks.{number}", block, len(block), channels, _pick("down", level, index)))
    if spec.mid_block:
        mid: nn.Sequential = unet.middle_block  # type: ignore[assignment]
        sites.append(Site("middle_block", mid, len(mid) - 1, _resblock_channels(mid) or -1, _pick("mid", 0, 0)))
    for level, index, channels, block, number, upsample in up:
        if index > 2:
            raise IncompatibleModelError(f"UNet up level {level} has more than 3 ResBlocks; not an SD-family UNet")
        sites.append(Site(f"output_blocks.{number}", block, len(block) - 1 if upsample else len(block), channels,
                          _pick("up", level, index)))
    _check_channels(sites, mm)
    return sites


def _check_channels(sites: list[Site], mm: MotionModule) -> None:
    for site in sites:
        module = site.pick(mm)
        if module is None:
            raise IncompatibleModelError(f"the motion module has no module for {site.name}")
        have = module.temporal_transformer.proj_in.in_features
        if have != site.channels:
            raise IncompatibleModelError(
                f"channel mismatch at {site.name}: the UNet has {site.channels} channels there, the motion module "
                f"{have}; this motion module ({mm.spec.describe()}) was made for a different base model"
            )


def insert(sites: list[Site], mm: MotionModule, state: FrameState) -> Callable[[], None]:
    """Insert the modules; returns a function that puts every touched block's module dict back exactly."""
    saved: list[tuple[nn.Module, dict[str, Any]]] = []
    grouped: dict[int, list[Site]] = {}
    for site in sites:
        grouped.setdefault(id(site.block), []).append(site)
    try:
        for group in grouped.values():
            block = group[0].block
            layers = list(block._modules.values())
            for site in sorted(group, key=lambda s: s.index, reverse=True):
                module = site.pick(mm)
                assert module is not None
                layers.insert(site.index, InsertedTemporal(module, state, site.name))
            saved.append((block, block._modules))
            object.__setattr__(block, "_modules", {str(i): layer for i, layer in enumerate(layers)})
    except BaseException:
        _put_back(saved)
        raise

    def restore() -> None:
        _put_back(saved)

    return restore


def after_layers(sites: list[Site], mm: MotionModule, state: FrameState) -> dict[tuple[int, int], InsertedTemporal]:
    """The same insertions without touching the UNet, for hosts that call a hook around every layer of a block
    (Forge's block-inner modifiers): ``(id(block), i)`` -> the module that runs on the output of layer ``i``
    of that block, i.e. where :func:`insert` would have put it (every site follows at least one layer)."""
    table: dict[tuple[int, int], InsertedTemporal] = {}
    for site in sites:
        module = site.pick(mm)
        assert module is not None and site.index >= 1
        table[(id(site.block), site.index - 1)] = InsertedTemporal(module, state, site.name)
    return table


def _put_back(saved: list[tuple[nn.Module, dict[str, Any]]]) -> None:
    for block, modules in reversed(saved):
        object.__setattr__(block, "_modules", modules)
    saved.clear()


def spatial_layers(unet: nn.Module, skip_groupnorm: bool = False) -> list[nn.Module]:
    """The UNet's per-frame layers: every layer of its input, middle and output blocks except inserted
    motion modules. ``skip_groupnorm``: leave out layers holding a GroupNorm32 (pooled across frames then)."""
    blocks = [*unet.input_blocks, unet.middle_block, *unet.output_blocks]  # type: ignore[misc, attr-defined]
    layers = [layer for block in blocks for layer in block if not isinstance(layer, InsertedTemporal)]
    if skip_groupnorm:
        layers = [layer for layer in layers if not any(_kind(m) == "GroupNorm32" for m in layer.modules())]
    return layers


def _chunked(inner: Callable[..., Tensor], state: FrameState) -> Callable[..., Tensor]:
    """``inner`` over ``state.temporal.chunk`` rows at a time: every per-row argument (x, emb, context) is
    sliced alike and the outputs are written into one tensor. A pass-through without motion-module windows."""
    def forward(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        chunk = None if state.temporal is None else state.temporal.chunk
        rows = x.shape[0]
        if chunk is None or rows <= chunk:
            return inner(x, *args, **kwargs)
        out: Tensor | None = None
        for start in range(0, rows, chunk):
            part = slice(start, min(start + chunk, rows))
            y = inner(x[part], *slice_rows(args, rows, part), **slice_rows(kwargs, rows, part))
            if out is None:
                out = y.new_empty((rows, *y.shape[1:]))
            out[part] = y
        assert out is not None
        return out

    return forward


@contextmanager
def frame_chunks(unet: nn.Module, state: FrameState, skip_groupnorm: bool = False) -> Iterator[int]:
    """Under motion-module windows (``state.temporal`` with a ``chunk``), the UNet's spatial layers run over
    ``chunk`` rows at a time, so their transient memory (attention, feed-forward, convolutions) stays that of
    a ``chunk``-frame call however long the video; only the residual stream and skips hold every frame.
    Layers pooling GroupNorm across frames (V1/HotShot: ``skip_groupnorm``) keep whole calls."""
    undo: list[Callable[[], None]] = []
    try:
        for layer in spatial_layers(unet, skip_groupnorm):
            undo.append(wrap_instance_forward(layer, lambda inner: _chunked(inner, state)))
        yield len(undo)
    finally:
        for step in reversed(undo):
            step()


class FrameHooks(Protocol):
    """What a windowed denoise tells the motion modules before each UNet call (:class:`Injection` is one)."""

    def set_window(self, value: int) -> None: ...

    def select_frames(self, rows: list[int]) -> None: ...

    def set_temporal_windows(self, temporal: TemporalWindows | None) -> None: ...


_ACTIVE: weakref.WeakSet[nn.Module] = weakref.WeakSet()


class Injection:
    """Handle yielded by :func:`injected`: set ``window`` before each UNet call whose rows differ."""

    def __init__(self, mm: MotionModule, state: FrameState, sites: list[str]) -> None:
        self.motion_module = mm
        self.spec = mm.spec
        self.sites = sites
        self._state = state

    @property
    def window(self) -> int:
        """Frames per video in the UNet call in progress (a context window's length)."""
        return self._state.window

    @window.setter
    def window(self, value: int) -> None:
        self._state.window = value

    def set_window(self, value: int) -> None:
        """Callable form of the setter (for ``sampling.windowed_denoise(set_window=...)``)."""
        self._state.window = value

    def set_motion_scale(self, scale: float | Sequence[float]) -> None:
        """Multiply every module's residual (its output minus its input) by ``scale`` (1: as trained), or by
        one scale per video frame (a sequence): then ``select_frames`` must name each call's frames."""
        state = self._state
        state.row_scales = None
        if isinstance(scale, (int, float)):
            state.scale, state.frame_scales = float(scale), None
        else:
            state.scale, state.frame_scales = 1.0, torch.tensor([float(s) for s in scale], dtype=torch.float64)

    def select_frames(self, rows: list[int]) -> None:
        """The video frame of each row of the next UNet call (per-frame motion scales; else a no-op)."""
        scales = self._state.frame_scales
        self._state.row_scales = None if scales is None else scales[torch.tensor(rows, dtype=torch.long)]

    def set_temporal_windows(self, temporal: TemporalWindows | None) -> None:
        """Motion-module windows for the following calls (None: the modules see each call's rows whole)."""
        self._state.temporal = temporal


def group_norm_across_frames(norm: nn.GroupNorm, x: Tensor, frames: int) -> Tensor:
    """``norm(x)`` in float32 with statistics pooled over the ``frames`` consecutive rows of each video (one
    row's statistics when ``frames`` is 1 or does not divide the rows): V1/HotShot's UNet GroupNorm."""
    weight, bias = (None if t is None else t.to(x.device, torch.float32) for t in (norm.weight, norm.bias))
    rows = x.shape[0]
    if frames <= 1 or rows % frames:
        return F.group_norm(x.float(), norm.num_groups, weight, bias, norm.eps).type(x.dtype)
    # (B*F, C, ...) -> (B, C, F, ...): statistics pooled over the frames of each video.
    video = x.float().reshape(rows // frames, frames, *x.shape[1:]).transpose(1, 2)
    out = F.group_norm(video, norm.num_groups, weight, bias, norm.eps)
    return out.transpose(1, 2).reshape(x.shape).type(x.dtype)


def _cross_frame_forward(state: FrameState) -> Any:
    def forward(self: nn.GroupNorm, x: Tensor) -> Tensor:
        return group_norm_across_frames(self, x, state.window)

    return forward


@contextmanager
def cross_frame_groupnorm(unet: nn.Module, state: FrameState,
                          groupnorm_cls: type[nn.Module] | None = None) -> Iterator[int]:
    """Give the UNet's own GroupNorm32 instances per-video statistics (``groups = rows // frames``).

    Only the host's GroupNorm32 class is touched (ldm: ResBlocks and the output norm); the plain
    ``nn.GroupNorm`` of SpatialTransformers stays per frame, as in AnimateDiff's UNet3D.
    """
    targets = [m for m in unet.modules()
               if (type(m) is groupnorm_cls if groupnorm_cls else type(m).__name__ == "GroupNorm32")]
    forward = _cross_frame_forward(state)
    patched: list[nn.Module] = []
    try:
        for module in targets:
            if "forward" in module.__dict__:
                raise RuntimeError(f"{type(module).__name__} instance already has a patched forward")
            object.__setattr__(module, "forward", types.MethodType(forward, module))
            patched.append(module)
        yield len(patched)
    finally:
        for module in patched:
            del module.__dict__["forward"]


def _prepare(mm: MotionModule, unet: nn.Module) -> None:
    follow_host(mm, unet)  # the UNet's device and compute dtype; weights stored in float8 stay so


@contextmanager
def injected(unet: nn.Module, motion_module: MotionModule, window: int,
             *, groupnorm_cls: type[nn.Module] | None = None) -> Iterator[Injection]:
    """Insert ``motion_module`` into ``unet`` for the duration of the block; restore it exactly on exit.

    Every UNet call inside the block must stack whole windows of ``handle.window`` consecutive rows,
    ``x: (B*F, C, H, W)``. Raises IncompatibleModelError when the module does not fit the UNet and
    RuntimeError when this UNet is already injected.
    """
    if unet in _ACTIVE:
        raise RuntimeError("motion modules are already injected into this UNet; leave that block first")
    sites = plan_sites(unet, motion_module)
    state = FrameState(window, motion_module.spec.max_frames, motion_module.spec.family)
    _prepare(motion_module, unet)
    with ExitStack() as stack:
        _ACTIVE.add(unet)
        stack.callback(_ACTIVE.discard, unet)
        _RUNNING.append(state)
        stack.callback(_RUNNING.remove, state)
        stack.callback(insert(sites, motion_module, state))
        if motion_module.spec.cross_frame_groupnorm:
            stack.enter_context(cross_frame_groupnorm(unet, state, groupnorm_cls))
        stack.enter_context(frame_chunks(unet, state, motion_module.spec.cross_frame_groupnorm))
        yield Injection(motion_module, state, [site.name for site in sites])


__all__ = ["FrameState", "Injection", "after_layers", "cross_frame_groupnorm", "frame_chunks",
           "group_norm_across_frames", "injected", "insert", "level_channels", "plan_sites", "running_state",
           "spatial_layers", "temporal_forward"]
