"""Prompt travel: parse keyframe prompts and interpolate text conditionings per frame.

Text format (one item per line; blank lines are ignored)::

    masterpiece, best quality          <- head lines (any number, optional)
    0: a girl standing                 <- keyframe lines "N: text" (spacing free, any order)
    8 :  a girl running
    -1: a girl flying                  <- negative N counts from the end (-1 = last frame)
    by the sea, sunset                 <- tail lines (optional)

Keyframe prompt = head, text and tail joined with ", ", skipping empty parts and stray commas.
Frame ``i`` is prompted with the last keyframe ``<= i``; frames before the first keyframe use
the first keyframe. Text with no keyframe line is a plain prompt (``parse_prompt_travel`` -> None).

Conditionings are interpolated per frame between the two surrounding keyframes (slerp over the
whole flattened tensor, lerp when the two are nearly parallel), held before the first and after
the last keyframe, or wrapped from the last back to the first when ``cyclic``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from motion_module.errors import ParameterError

Cond = torch.Tensor | dict

SLERP_DOT_THRESHOLD = 0.9995
TOKEN_CHUNK = 77
_KEYFRAME = re.compile(r"^\s*(-?\d+)\s*:(.*)$")


@dataclass(frozen=True)
class PromptTravel:
    """A parsed prompt-travel text: keyframes sorted by frame, plus shared head and tail."""

    num_frames: int
    keyframes: dict[int, str]
    head: str = ""
    tail: str = ""
    lines: dict[int, int] = field(default_factory=dict, compare=False)

    def prompt_at(self, frame: int) -> str:
        """The full prompt of the keyframe in effect at ``frame``."""
        keys = sorted(self.keyframes)
        current = keys[0]
        for key in keys:
            if key <= frame:
                current = key
        return join_prompt(self.head, self.keyframes[current], self.tail)


def _clean(part: str) -> str:
    return part.strip().strip(",").strip()


def join_prompt(*parts: str) -> str:
    """Join prompt parts with ", ", dropping empty parts and leading/trailing commas."""
    return ", ".join(p for p in (_clean(part) for part in parts) if p)


def parse_prompt_travel(text: str, num_frames: int) -> PromptTravel | None:
    """Parse ``text`` (see module docstring); ``None`` if it has no keyframe line.

    Raises:
        ParameterError("prompt"): a frame number outside ``-L..L-1``, a frame given twice, or a
            keyframe line after tail lines started; the message names the line number and text.
    """
    if num_frames < 1:
        raise ParameterError("num_frames", f"must be >= 1, got {num_frames}")
    head: list[str] = []
    tail: list[str] = []
    keyframes: dict[int, str] = {}
    lines: dict[int, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _KEYFRAME.match(line)
        if match is None:
            (tail if keyframes else head).append(line)
            continue
        where = f"line {number} ({line.strip()!r})"
        if tail:
            raise ParameterError(
                "prompt", f"{where}: keyframe after the tail lines; put all 'N: text' lines together"
            )
        frame = int(match.group(1))
        if not -num_frames <= frame < num_frames:
            raise ParameterError(
                "prompt",
                f"{where}: frame {frame} is outside the video (frames 0..{num_frames - 1}); "
                "use a smaller frame number or more frames",
            )
        frame %= num_frames
        if frame in keyframes:
            raise ParameterError(
                "prompt", f"{where}: frame {frame} already has a prompt on line {lines[frame]}; "
                "keep one line per frame",
            )
        keyframes[frame] = match.group(2).strip()
        lines[frame] = number
    if not keyframes:
        return None
    return PromptTravel(
        num_frames=num_frames,
        keyframes=dict(sorted(keyframes.items())),
        head=join_prompt(*head),
        tail=join_prompt(*tail),
        lines=lines,
    )


def frame_prompts(travel: PromptTravel) -> list[str]:
    """One prompt string per frame (length ``travel.num_frames``) for A1111's prompt list."""
    return [travel.prompt_at(frame) for frame in range(travel.num_frames)]


# --------------------------------------------------------------------------- interpolation
def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of two same-shape tensors treated as flat vectors.

    Falls back to lerp when ``|cos| > 0.9995`` (nearly parallel). Computed in float32 or wider
    and returned in ``a``'s dtype.
    """
    work = torch.promote_types(a.dtype, torch.float32)
    va, vb = a.to(work), b.to(work)
    norm = float(va.norm().double() * vb.norm().double())
    dot = float((va.double() * vb.double()).sum() / norm) if norm > 0 else 1.0
    if abs(dot) > SLERP_DOT_THRESHOLD:
        return torch.lerp(va, vb, t).to(a.dtype)
    theta = math.acos(dot)
    sin_theta = math.sin(theta)
    wa = math.sin((1.0 - t) * theta) / sin_theta
    wb = math.sin(t * theta) / sin_theta
    return (wa * va + wb * vb).to(a.dtype)


def _blend(a: torch.Tensor, b: torch.Tensor, t: float, method: str) -> torch.Tensor:
    if method == "slerp":
        return slerp(a, b, t)
    work = torch.promote_types(a.dtype, torch.float32)
    return torch.lerp(a.to(work), b.to(work), t).to(a.dtype)


def pad_tokens(cond: torch.Tensor, length: int, empty_chunk: torch.Tensor | None = None) -> torch.Tensor:
    """Pad a ``(T, D)`` cond to ``(length, D)`` by appending whole 77-row chunks.

    The chunks are ``empty_chunk`` (the encoding of "" as A1111 pads, shape ``(77, D)``) or, if
    none is given, copies of the cond's own last 77-row chunk (the whole cond if shorter).
    """
    missing = length - cond.shape[0]
    if missing == 0:
        return cond
    chunk = empty_chunk if empty_chunk is not None else cond[-min(TOKEN_CHUNK, cond.shape[0]) :]
    if missing < 0 or missing % chunk.shape[0]:
        raise ParameterError(
            "prompt",
            f"cannot pad {cond.shape[0]} token rows to {length} with chunks of {chunk.shape[0]}; "
            "encode every keyframe prompt with the same text encoder",
        )
    filler = chunk.to(dtype=cond.dtype, device=cond.device).repeat(missing // chunk.shape[0], 1)
    return torch.cat([cond, filler], dim=0)


def _equalise(
    conds: dict[int, Cond], empty_chunk: torch.Tensor | dict | None
) -> dict[int, Cond]:
    """Pad every 2-D token tensor (bare, or a dict's) to the longest keyframe's length."""

    def token_len(c: Cond) -> int:
        tensors = [c] if isinstance(c, torch.Tensor) else list(c.values())
        return max((t.shape[0] for t in tensors if t.dim() == 2), default=0)

    longest = max(token_len(c) for c in conds.values())

    def pad(c: Cond) -> Cond:
        if isinstance(c, torch.Tensor):
            chunk = empty_chunk if isinstance(empty_chunk, torch.Tensor) else None
            return pad_tokens(c, longest, chunk) if c.dim() == 2 else c
        padded = {}
        for key, value in c.items():
            chunk = empty_chunk.get(key) if isinstance(empty_chunk, dict) else empty_chunk
            padded[key] = pad_tokens(value, longest, chunk) if value.dim() == 2 else value
        return padded

    return {frame: pad(c) for frame, c in conds.items()}


def _mix(a: Cond, b: Cond, t: float, method: str) -> Cond:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), "keyframe conds of one request share one type"
        return _blend(a, b, t, method)
    assert isinstance(b, dict), "keyframe conds of one request share one type"
    if set(a) != set(b):
        raise ParameterError("prompt", f"keyframe conds have different keys {sorted(a)} vs {sorted(b)}")
    return {key: _blend(a[key], b[key], t, method) for key in a}


def interpolate_conds(
    key_conds: Mapping[int, Cond],
    num_frames: int,
    *,
    cyclic: bool = False,
    method: str = "slerp",
    empty_chunk: torch.Tensor | dict | None = None,
) -> list[Cond]:
    """Per-frame conds (length ``num_frames``) interpolated between keyframe conds.

    Args:
        key_conds: frame -> cond; a cond is a ``(T, D)`` tensor or a dict of tensors (SDXL:
            ``{"crossattn": (T, D), "vector": (V,)}``); each dict entry is interpolated separately.
        num_frames: video length L; keys must lie in ``0..L-1``.
        cyclic: wrap from the last keyframe back to the first across the end (closed loop);
            otherwise hold the first key before it and the last key after it.
        method: ``"slerp"`` (lerp fallback when nearly parallel) or ``"lerp"``.
        empty_chunk: encoding of "" ``(77, D)`` (or a dict of them per key) used to pad keys with
            fewer token rows (e.g. 77 vs 154); without it the shorter key repeats its last chunk.

    Returns:
        One cond per frame; keyframes get their own cond (padded if needed) unchanged.
    """
    method = getattr(method, "value", method)
    if method not in ("slerp", "lerp"):
        raise ParameterError("prompt_interpolation", f"unknown method {method!r}; use 'slerp' or 'lerp'")
    if not key_conds:
        raise ParameterError("prompt", "no keyframe conds given; pass at least one keyframe")
    bad = [k for k in key_conds if not 0 <= k < num_frames]
    if bad:
        raise ParameterError("prompt", f"keyframes {bad} are outside frames 0..{num_frames - 1}")
    conds = _equalise(dict(sorted(key_conds.items())), empty_chunk)
    keys = list(conds)
    result: list[Cond] = []
    for frame in range(num_frames):
        if frame in conds:
            result.append(conds[frame])
            continue
        after = [k for k in keys if k > frame]
        before = [k for k in keys if k < frame]
        if before and after:
            prev, nxt, span = before[-1], after[0], after[0] - before[-1]
        elif cyclic and len(keys) > 1:
            prev, nxt = keys[-1], keys[0]
            span = nxt + num_frames - prev
        else:
            result.append(conds[after[0] if after else before[-1]])
            continue
        t = ((frame - prev) % num_frames) / span
        result.append(_mix(conds[prev], conds[nxt], t, method))
    return result


def stack_conds(conds: Sequence[Cond]) -> torch.Tensor | dict[str, torch.Tensor]:
    """Stack per-frame conds: tensors -> ``(frames, T, D)``, dicts -> dict of stacked tensors."""
    if not conds:
        raise ParameterError("prompt", "no conds to stack")
    first = conds[0]
    if isinstance(first, torch.Tensor):
        return torch.stack([c for c in conds if isinstance(c, torch.Tensor)])
    return {key: torch.stack([c[key] for c in conds if isinstance(c, dict)]) for key in first}
