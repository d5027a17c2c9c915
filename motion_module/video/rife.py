"""RIFE's intermediate-flow network (IFNet, Practical-RIFE v4.x), written from the paper and the weight files.

RIFE (Huang et al., "Real-Time Intermediate Flow Estimation for Video Frame Interpolation", ECCV 2022) estimates,
for a time ``t`` between two frames, the flows from the unknown middle frame back to each input frame, coarse to
fine: block ``i`` of ``n`` works at 1/2^(n-1-i) of the resolution, sees both inputs warped by the flow so far, and
adds a correction. The frame at ``t`` is the two backward-warped inputs blended by a learned mask (a sigmoid).
Since v4 the time ``t`` is an input, so any number of frames can be made between a pair in one pass each.

The layout read here is the one Practical-RIFE's ``flownet.pkl`` files use from v4.13 on (the ``Head``
feature encoder ``encode.cnn0..3``); block count, widths and the features carried from block to block (v4.22+)
are read from the tensor shapes, so 4.17 to 4.26 and their lite variants load. Key names (``module.`` prefix
removed): ``encode.cnn{0,1,2,3}``; ``block{i}.conv0.{0,1}.0`` (two stride-2 convolutions),
``block{i}.convblock.{j}.conv`` and ``.beta`` (residual convolutions with a per-channel gain),
``block{i}.lastconv.0`` (a transposed convolution followed by a 2x pixel shuffle: 4 flow channels, a mask, and
the carried features). Inputs are RGB in [0, 1]; sizes are padded to a multiple of 4 * 2^(n-1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from motion_module.errors import InterpolationError

_BLOCK = re.compile(r"block(\d+)\.")
_RES = re.compile(r"block(\d+)\.convblock\.(\d+)\.conv\.weight$")
LEAK = 0.2


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """Backward warp: ``out[y, x] = image[y + flow_y, x + flow_x]`` (bilinear; the border repeats outside).

    ``image`` (N, C, H, W); ``flow`` (N, 2, H, W) in pixels, x then y. An integer flow moves content exactly:
    with a constant flow (dx, dy) what was at (x, y) appears at (x - dx, y - dy).
    """
    n, _, h, w = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    x = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    y = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((x, y), dim=-1)
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=True)


@dataclass(frozen=True)
class BlockShape:
    """One flow block: ``inputs`` channels in, ``width`` channels inside (``width_in`` after the first
    convolution), ``residuals`` residual convolutions, ``outputs`` channels out (4 flow, 1 mask, features)."""

    inputs: int
    width_in: int
    width: int
    residuals: int
    outputs: int


@dataclass(frozen=True)
class IFNetConfig:
    """The shape of an IFNet: the encoder's (hidden, feature) channels, the blocks, the carried features."""

    head: tuple[int, int] = (16, 4)
    blocks: tuple[BlockShape, ...] = (BlockShape(15, 96, 192, 8, 13), BlockShape(28, 64, 128, 8, 13),
                                      BlockShape(28, 48, 96, 8, 13), BlockShape(28, 32, 64, 8, 13),
                                      BlockShape(28, 16, 32, 8, 13))
    carried: int = 8

    @property
    def multiple(self) -> int:
        """Frame sizes must be a multiple of this (the coarsest block sees 1/(4 * 2^(n-1)) of the frame)."""
        return 4 * 2 ** (len(self.blocks) - 1)


class _Head(nn.Module):
    def __init__(self, hidden: int, features: int) -> None:
        super().__init__()
        self.cnn0 = nn.Conv2d(3, hidden, 3, 2, 1)
        self.cnn1 = nn.Conv2d(hidden, hidden, 3, 1, 1)
        self.cnn2 = nn.Conv2d(hidden, hidden, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(hidden, features, 4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        for conv in (self.cnn0, self.cnn1, self.cnn2):
            x = F.leaky_relu(conv(x), LEAK)
        return self.cnn3(x)


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, width, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(self.conv(x) * self.beta + x, LEAK)


def _conv_act(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, 2, 1), nn.LeakyReLU(LEAK))


class _FlowBlock(nn.Module):
    def __init__(self, shape: BlockShape) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_conv_act(shape.inputs, shape.width_in), _conv_act(shape.width_in, shape.width))
        self.convblock = nn.Sequential(*(_Residual(shape.width) for _ in range(shape.residuals)))
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(shape.width, 4 * shape.outputs, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x: Tensor, flow: Tensor | None, scale: int) -> tuple[Tensor, Tensor, Tensor]:
        h, w = x.shape[-2:]
        if scale != 1:
            x = F.interpolate(x, size=(h // scale, w // scale), mode="bilinear", align_corners=False)
        if flow is not None:
            small = flow if scale == 1 else F.interpolate(flow, size=x.shape[-2:], mode="bilinear",
                                                          align_corners=False) / scale
            x = torch.cat((x, small), 1)
        out = self.lastconv(self.convblock(self.conv0(x)))
        if scale != 1:
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return out[:, :4] * scale, out[:, 4:5], out[:, 5:]


class IFNet(nn.Module):
    """The flow network. ``forward(img0, img1, t)``: frames (N, 3, H, W) in [0, 1], ``t`` (N,) in (0, 1);
    returns the frames at ``t`` (N, 3, H, W), H and W multiples of ``config.multiple``."""

    def __init__(self, config: IFNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or IFNetConfig()
        self.encode = _Head(*self.config.head)
        self.names = [f"block{i}" for i in range(len(self.config.blocks))]
        for name, shape in zip(self.names, self.config.blocks):
            self.add_module(name, _FlowBlock(shape))

    def forward(self, img0: Tensor, img1: Tensor, t: Tensor) -> Tensor:
        n, _, h, w = img0.shape
        times = t.to(img0.dtype).view(n, 1, 1, 1).expand(n, 1, h, w)
        f0, f1 = self.encode(img0), self.encode(img1)
        warped0, warped1 = img0, img1
        flow: Tensor | None = None
        mask = feat = times
        for i, name in enumerate(self.names):
            block, scale = getattr(self, name), 2 ** (len(self.names) - 1 - i)
            if flow is None:
                flow, mask, feat = block(torch.cat((img0, img1, f0, f1, times), 1), None, scale)
            else:
                parts = [warped0, warped1, warp(f0, flow[:, :2]), warp(f1, flow[:, 2:4]), times, mask]
                delta, mask, feat = block(torch.cat(parts + ([feat] if self.config.carried else []), 1), flow, scale)
                flow = flow + delta
            warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        weight = torch.sigmoid(mask)
        return warped0 * weight + warped1 * (1 - weight)


def _shape(state: Mapping[str, Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise InterpolationError(f"not RIFE IFNet v4.x weights: no tensor {key!r}")
    return tuple(state[key].shape)


def ifnet_config(state: Mapping[str, Tensor]) -> IFNetConfig:
    """The network shape a state dict (``module.`` prefixes removed) describes; InterpolationError when it is
    not an IFNet of the supported layout."""
    hidden = _shape(state, "encode.cnn0.weight")[0]
    features = _shape(state, "encode.cnn3.weight")[1]
    count = 1 + max((int(m.group(1)) for k in state if (m := _BLOCK.match(k))), default=-1)
    if count < 1:
        raise InterpolationError("not RIFE IFNet v4.x weights: no flow blocks (block0...)")
    blocks = []
    for i in range(count):
        first, second = _shape(state, f"block{i}.conv0.0.0.weight"), _shape(state, f"block{i}.conv0.1.0.weight")
        residuals = sum(1 for k in state if (m := _RES.match(k)) and int(m.group(1)) == i)
        last = _shape(state, f"block{i}.lastconv.0.weight")
        blocks.append(BlockShape(first[1], first[0], second[0], residuals, last[1] // 4))
    carried = blocks[1].inputs - (6 + 2 * features + 2 + 4) if count > 1 else 0
    if blocks[0].inputs != 7 + 2 * features or carried not in (0, blocks[0].outputs - 5):
        raise InterpolationError("RIFE weights of an older layout (before v4.13) or an unknown variant; use "
                                 "Practical-RIFE v4.17 or newer (4.25/4.26 recommended)")
    return IFNetConfig(head=(hidden, features), blocks=tuple(blocks), carried=carried)


def load_ifnet(state: Mapping[str, Tensor]) -> IFNet:
    """An IFNet holding ``state``'s weights (float32, CPU, eval mode). Keys outside the network (a training
    file's extras) are ignored; a missing or mis-shaped one is an InterpolationError."""
    net = IFNet(ifnet_config(state))
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        raise InterpolationError(f"RIFE weights do not fit IFNet v4.x: missing {missing[:3]}, wrong shape {wrong[:3]}")
    net.load_state_dict({k: state[k].float() for k in own})
    return net.eval().requires_grad_(False)


def describe_ifnet(state: Mapping[str, Tensor]) -> dict[str, object] | None:
    """What ``inspect`` says about RIFE weights (None when ``state`` is not an IFNet)."""
    if "encode.cnn0.weight" not in state or "block0.conv0.0.0.weight" not in state:
        return None
    config = ifnet_config(state)
    return {"kind": "RIFE frame-interpolation weights (IFNet v4.x)", "blocks": len(config.blocks),
            "widths": [b.width for b in config.blocks], "carried_features": config.carried,
            "dtype": str(state["encode.cnn0.weight"].dtype).replace("torch.", ""),
            "params": sum(int(v.numel()) for k, v in state.items() if k.startswith(("encode.", "block"))),
            "use": "put it in the motion-module folder (or the folder of Settings > AnimateDiff > RIFE weights) "
                   "and choose interp RIFE"}


__all__ = ["BlockShape", "IFNet", "IFNetConfig", "describe_ifnet", "ifnet_config", "load_ifnet", "warp"]
