"""Motion-scale keyframes: a motion scale per frame, interpolated between keyframes like prompt travel.

Text form (the ``motion_scale_keyframes`` parameter): ``frame: scale`` pairs separated by commas,
semicolons or new lines, e.g. ``0: 1, 16: 0.4, 31: 1.2``. Frames count from 0; scales are 0..2 like
``motion_scale``, which the keyframes replace when given. Between two keyframes the scale changes
linearly; before the first and after the last it stays at their value, except on closed loops past one
context window (R+P, A: ``cyclic``), where it runs from the last keyframe back to the first.

The text form is parsed and printed by ``param_coerce.parse_keyframes`` / ``keyframes_text`` (the
parameter layer), re-exported here.

What a scale does (``injection.InsertedTemporal``): each motion module's output for a frame becomes
``x + scale * (module(x) - x)``; 1 is the module as trained, 0 removes its effect on that frame.
"""

from __future__ import annotations

from motion_module.errors import ParameterError
from motion_module.params.coerce import Keyframes, keyframes_text, parse_keyframes

NAME = "motion_scale_keyframes"


def frame_scales(keys: Keyframes, frames: int, cyclic: bool = False) -> tuple[float, ...]:
    """The scale of each of ``frames`` frames. Raises ParameterError for a keyframe past the last frame."""
    if not keys:
        raise ValueError("no keyframes")
    late = [frame for frame, _ in keys if frame >= frames]
    if late:
        raise ParameterError(NAME, f"keyframe at frame {late[0]}, but the video has {frames} frames "
                             f"(0..{frames - 1})")
    points = list(keys)
    if cyclic and len(points) > 1:  # wrap: the last keyframe leads into the first one of the next loop
        first, last = points[0], points[-1]
        points = [(last[0] - frames, last[1]), *points, (first[0] + frames, first[1])]
    scales = []
    for frame in range(frames):
        before = [p for p in points if p[0] <= frame]
        after = [p for p in points if p[0] >= frame]
        if not before or not after:
            scales.append((after or before)[0 if after else -1][1])
            continue
        (f0, s0), (f1, s1) = before[-1], after[0]
        scales.append(s0 if f1 == f0 else s0 + (s1 - s0) * (frame - f0) / (f1 - f0))
    return tuple(scales)


__all__ = ["Keyframes", "frame_scales", "keyframes_text", "parse_keyframes"]
