"""ControlNet keyframes: sd-webui-animatediff v2's "keyframe" parameter of a ControlNet unit's batch input.

A unit in batch mode names its folder on the first line of ``batch_images`` and, on a later line,
``keyframe: 0, 8, 15``: the folder's images, in natural order, control exactly those frames, one image per
keyframe. sd-webui-controlnet 1.1.455 reads the line (``batch_keyframe_idx``): an ordinary ControlNet gets each
image at its frame and an empty (zero) control at every other frame; SparseCtrl builds its own keyframe mask;
IP-Adapter would travel its image embeddings between the keyframes (``run.PromptSchedule``). A keyframe unit
does not set the video length. Here: reading the line, placing it in the video (negative frames count from
the end, -1 = the last), and the line ControlNet gets back (frames ascending, images restaged in that order).
Every mistake is a ParameterError naming ``batch_images`` and the unit (HTTP 422).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from motion_module.errors import ParameterError

FIELD = "batch_images"
LINE_PREFIX = "keyframe:"
EXAMPLE = "e.g. 'keyframe: 0, 8, 15' (one frame per image of the unit's folder, in the folder's order)"


def split_batch_images(index: int, text: str) -> tuple[str | None, tuple[int, ...] | None]:
    """A batch unit's folder (the first line; None when empty) and its keyframes (None without a keyframe
    line). Other lines (ControlNet's ``mask:``) are left to ControlNet."""
    lines = text.split("\n")
    keyframes: tuple[int, ...] | None = None
    for line in lines[1:]:
        stripped = line.strip()
        if not stripped.lower().startswith(LINE_PREFIX):
            continue
        if keyframes is not None:
            raise ParameterError(FIELD, f"ControlNet unit {index}: more than one keyframe line; give every "
                                 f"keyframe on one line, {EXAMPLE}")
        keyframes = parse_keyframes(index, stripped[len(LINE_PREFIX):])
    return lines[0].strip() or None, keyframes


def parse_keyframes(index: int, text: str) -> tuple[int, ...]:
    """The frame numbers of a keyframe line's value (``"0, 8, -1"``); ParameterError unless all are integers."""
    try:
        return tuple(int(part.strip()) for part in text.split(","))
    except ValueError:
        raise ParameterError(FIELD, f"ControlNet unit {index}: 'keyframe:{text}' is not a list of frame "
                             f"numbers; write {EXAMPLE}") from None


@dataclass(frozen=True)
class Placement:
    """Keyframes placed in a video: ``frames`` ascending, ``images[i]`` the folder image (its index in the
    folder's natural order) for ``frames[i]``."""

    frames: tuple[int, ...]
    images: tuple[int, ...]


def place_keyframes(index: int, keyframes: Sequence[int], images: int, frames: int) -> Placement:
    """Place ``keyframes`` (image ``i`` of the folder at ``keyframes[i]``) in a video of ``frames`` frames.

    Raises ParameterError naming ``batch_images`` when the folder's ``images`` are not one per keyframe, a
    keyframe lies outside the video, or two name the same frame (``-1`` and ``frames - 1``)."""
    listed = ", ".join(map(str, keyframes))
    if images != len(keyframes):
        raise ParameterError(FIELD, f"ControlNet unit {index}: its folder has {images} images for "
                             f"{len(keyframes)} keyframes ({listed}); give one image per keyframe")
    placed: dict[int, int] = {}
    for image, frame in enumerate(keyframes):
        if not -frames <= frame < frames:
            raise ParameterError(FIELD, f"ControlNet unit {index}: keyframe {frame} is outside the video "
                                 f"(frames 0..{frames - 1}, -1 is the last); use a smaller frame or more frames")
        at = frame % frames
        if at in placed:
            raise ParameterError(FIELD, f"ControlNet unit {index}: keyframes {keyframes[placed[at]]} and {frame} "
                                 f"are both frame {at}; give each frame once")
        placed[at] = image
    ordered = tuple(sorted(placed))
    return Placement(ordered, tuple(placed[frame] for frame in ordered))


def keyframe_line(frames: Sequence[int]) -> str:
    """The line ControlNet 1.1.455 parses (``keyframe:`` then comma-separated integers)."""
    return f"{LINE_PREFIX} {', '.join(map(str, frames))}"


__all__ = ["FIELD", "Placement", "keyframe_line", "parse_keyframes", "place_keyframes", "split_batch_images"]
