"""Frame selection for video-to-video input, with the four options of VideoHelperSuite's video loader.

Applied in this order (as VHS's loader applies them):

1. ``force_rate`` R (0 = off): the video is resampled to R frames per second by timestamps. Output frame k
   stands for the time t_k = t_0 + k/R (t_0: the first frame's timestamp) and shows the source frame on
   screen at that time: the last frame whose timestamp is <= t_k. Frames shown for less than 1/R are
   dropped, frames shown longer are repeated; a frame whose timestamp equals the next one's is never shown.
   Output frames are made while t_k is before the end of the last source frame (its timestamp plus its
   duration). This is frame-exact for variable-frame-rate files: the timestamps are the decoder's own (read
   with ffmpeg's ``showinfo`` filter as exact multiples of the stream's time base).
2. ``skip_first_frames`` N: the first N frames (of the resampled frames when R is set) are dropped.
3. ``select_every_nth`` n: of the rest, frames 0, n, 2n... are kept.
4. ``frame_load_cap`` C (0 = no cap): at most C frames are kept (then, for AnimateDiff, ``video_length``
   when it is set).

The kept frames stand for the rate (R or the source's average rate) / n: that is the rate the video plays at
when ``fps`` is 0, and the audio of the clip starts at the time of the first kept frame (t_{N} on the
resampled grid, else the first kept frame's timestamp), both measured from the first frame.

Decoding streams: a first pass reads every frame's timestamp (ffmpeg decodes to nowhere; its log goes to a
temporary file), a second pass pipes the frames one at a time from ffmpeg and writes each kept frame to disk
as a PNG (a repeated frame is a hard link to the same file, or a copy), and stops ffmpeg after the last
kept frame. Only one decoded frame is in memory at a time.

A frames folder (``video_path``) has no timestamps: skip, every-nth and cap apply to its images in natural
order; ``force_rate`` is refused for it.
"""

from __future__ import annotations

import bisect
import functools
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, TypeVar

from PIL import Image

from motion_module.errors import InputError, OutputError, ParameterError
from motion_module.params.coerce import is_int
from motion_module.video.input import (
    VideoFrames,
    _decode_args,
    _decode_failed,
    _passthrough_args,
    _read_ppm_stream,
    exact_frame_rate,
    probe_video,
)
from motion_module.video.metadata import ffmpeg_exe

T = TypeVar("T")
_FIELDS = ("skip_first_frames", "select_every_nth", "frame_load_cap", "force_rate")
_PNG_LEVEL = 1  # fast zlib level: these PNGs are temporary


@dataclass(frozen=True)
class FrameSelection:
    """Which frames of a video source (or a frames folder) to use; the defaults select every frame."""

    skip_first_frames: int = 0
    select_every_nth: int = 1
    frame_load_cap: int = 0
    force_rate: Fraction | None = None  # frames per second; None = off

    def __post_init__(self) -> None:
        for name, low in (("skip_first_frames", 0), ("select_every_nth", 1), ("frame_load_cap", 0)):
            value = getattr(self, name)
            if not is_int(value) or value < low:
                raise ParameterError(name, f"must be a whole number >= {low}, got {value!r}.")
        rate = self.force_rate
        if rate is not None and (not isinstance(rate, (int, Fraction)) or rate <= 0):
            raise ParameterError("force_rate", f"must be above 0 frames per second (0 = off), got {rate!r}.")

    @classmethod
    def of(cls, params: Any) -> FrameSelection:
        """The selection of an object with the four fields (``AnimateDiffParams``); ``force_rate`` 0 is off.

        A rate written with decimals is read the way ffmpeg's rounded rates are: 29.97 is 30000/1001.
        """
        rate = float(getattr(params, "force_rate", 0.0) or 0.0)
        if not math.isfinite(rate) or rate < 0:
            raise ParameterError("force_rate", f"must be 0 (off) or above 0 frames per second, got {rate!r}.")
        exact = exact_frame_rate(repr(rate)) if rate > 0 else None
        return cls(int(getattr(params, "skip_first_frames", 0)), int(getattr(params, "select_every_nth", 1)),
                   int(getattr(params, "frame_load_cap", 0)), exact)

    @property
    def active(self) -> bool:
        """Whether anything but every frame is selected."""
        return self != FrameSelection()

    def rate(self, source_fps: Fraction | None) -> Fraction | None:
        """Frames per second the kept frames stand for: (force_rate or the source's rate) / every-nth."""
        base = self.force_rate if self.force_rate is not None else source_fps
        return None if base is None else Fraction(base) / self.select_every_nth

    def describe(self) -> str:
        """The non-default options as ``name=value`` text, for messages."""
        parts = [f"{name}={getattr(self, name)}" for name in _FIELDS
                 if getattr(self, name) != getattr(FrameSelection(), name)]
        return ", ".join(parts) or "every frame"


# --------------------------------------------------------------------------------- timestamps
@dataclass(frozen=True)
class FrameTimes:
    """Presentation times of every decoded frame in seconds from the first one (never decreasing), and the
    end of the last frame (its time plus its duration)."""

    times: tuple[Fraction, ...]
    end: Fraction


_TIME_BASE = re.compile(r"config in time_base: (\d+)/(\d+)")
_FRAME_LINE = re.compile(r"\bn:\s*(\d+)\s+pts:\s*(-?\d+|NOPTS)\s+pts_time:\s*(\S+)(?:\s+duration:\s*(-?\d+))?")


@functools.lru_cache(maxsize=4)
def _showinfo(exe: str) -> str:
    """``showinfo`` without per-plane checksums where this ffmpeg has the option (they cost time)."""
    proc = subprocess.run([exe, "-hide_banner", "-h", "filter=showinfo"], capture_output=True, check=False,
                          timeout=60)
    return "showinfo=checksum=0" if b"checksum" in proc.stdout + proc.stderr else "showinfo"


def parse_showinfo(lines: Iterator[str], fps: Fraction | None) -> FrameTimes:
    """``FrameTimes`` from ffmpeg's log of the ``showinfo`` filter (one line per frame, in output order).

    A frame without a timestamp (``NOPTS``) comes one frame period (1/``fps``) after the previous one; a
    timestamp below the previous one is raised to it (the frame is then never shown by ``force_rate``). The
    last frame lasts its logged duration, else the previous frame interval, else 1/``fps``.
    """
    base: Fraction | None = None
    raw: list[Fraction | None] = []
    last_duration = 0
    for line in lines:
        if base is None and (found := _TIME_BASE.search(line)):
            base = Fraction(int(found.group(1)), int(found.group(2)) or 1)
        elif match := _FRAME_LINE.search(line):
            pts, pts_time, duration = match.group(2), match.group(3), match.group(4)
            if pts == "NOPTS":
                raw.append(None)
            else:
                raw.append(int(pts) * base if base is not None else Fraction(pts_time))
            last_duration = int(duration) if duration else 0
    period = Fraction(1) / fps if fps else None
    times: list[Fraction] = []
    for value in raw:
        if value is None:
            value = times[-1] + (period or 0) if times else Fraction(0)
        times.append(max(value, times[-1]) if times else value)
    first = times[0] if times else Fraction(0)
    relative = tuple(t - first for t in times)
    if last_duration > 0 and base is not None:
        tail = last_duration * base
    elif len(relative) > 1 and relative[-1] > relative[-2]:
        tail = relative[-1] - relative[-2]
    else:
        tail = period or Fraction(1)
    return FrameTimes(relative, (relative[-1] + tail) if relative else Fraction(0))


def read_frame_times(path: Path, fps: Fraction | None) -> FrameTimes:
    """The timestamps of every frame of the first video stream, decoded as ``read_video_frames`` decodes it
    (same stream, same frames, same order); ffmpeg's log goes to a temporary file, never into memory."""
    exe = ffmpeg_exe()
    cmd = [exe, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", "-i", str(path), "-map", "0:V:0",
           *_passthrough_args(exe), "-vf", _showinfo(exe), "-f", "null", "-"]
    with tempfile.TemporaryFile(mode="w+b") as log:
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL, check=False)
        log.seek(0)
        if proc.returncode != 0:
            _decode_failed(path, proc.returncode, log.read()[-4000:])
        text = (line.decode("utf-8", "replace") for line in log)
        return parse_showinfo((line for line in text if "showinfo" in line.lower()), fps)


# --------------------------------------------------------------------------------- which frames
def resampled_count(times: FrameTimes, rate: Fraction) -> int:
    """How many frames ``force_rate`` = ``rate`` makes: the k with k/rate before the end of the last frame."""
    return max(1, math.ceil(times.end * rate))


def resampled_index(times: FrameTimes, rate: Fraction, k: int) -> int:
    """The source frame on screen at output frame k's time k/``rate``: the last one whose time is <= it."""
    return bisect.bisect_right(times.times, Fraction(k) / rate) - 1


def _too_far(selection: FrameSelection, count: int, what: str) -> ParameterError:
    resampled = f" at force_rate {selection.force_rate}" if selection.force_rate is not None else ""
    return ParameterError("skip_first_frames", f"skips {selection.skip_first_frames} frames, but {what} has "
                          f"only {count} frames{resampled}; skip fewer than {count} frames.")


def selected_positions(count: int, selection: FrameSelection, limit: int | None = None,
                       what: str = "the video") -> range:
    """Which of ``count`` frames (after ``force_rate``) skip, every-nth and cap keep, in order.

    ``limit`` caps them further (AnimateDiff's ``video_length``). Skipping every frame is a ParameterError
    naming ``skip_first_frames`` and ``what``.
    """
    if selection.skip_first_frames >= count:
        raise _too_far(selection, count, what)
    kept = range(selection.skip_first_frames, count, selection.select_every_nth)
    for cap in (selection.frame_load_cap, limit or 0):
        if cap > 0:
            kept = kept[:cap]
    return kept


def select_items(items: Sequence[T], selection: FrameSelection, what: str) -> list[T]:
    """The items of a frames folder (in natural order) that the selection keeps; ``force_rate`` is refused."""
    if selection.force_rate is not None:
        raise ParameterError("force_rate", f"{what} is a folder of images without timestamps; force_rate applies "
                             "to a video source only (use select_every_nth for a folder, or set force_rate to 0).")
    return [items[i] for i in selected_positions(len(items), selection, what=what)]


@dataclass(frozen=True)
class Plan:
    """The source frame index of every kept frame, and the time of the first kept frame (s from the first)."""

    indices: tuple[int, ...]
    start: Fraction


def plan_selection(times: FrameTimes, selection: FrameSelection, limit: int | None = None) -> Plan:
    """The source frames the selection keeps from frames with these timestamps (see the module doc)."""
    rate = selection.force_rate
    if rate is None:
        kept = selected_positions(len(times.times), selection, limit)
        return Plan(tuple(kept), times.times[kept[0]])
    kept = selected_positions(resampled_count(times, rate), selection, limit)
    return Plan(tuple(resampled_index(times, rate, k) for k in kept), Fraction(kept[0]) / rate)


# --------------------------------------------------------------------------------- decoding
def _write_frames(stream: IO[bytes], indices: Sequence[int], dest: Path) -> list[Path]:
    """Write the frames of the PPM stream at ``indices`` (non-decreasing, may repeat) as 00000.png...; stops
    reading after the last one."""
    paths: list[Path] = []
    position = 0
    for number, image in enumerate(_read_ppm_stream(stream)):
        first: Path | None = None
        while position < len(indices) and indices[position] == number:
            path = dest / f"{position:05d}.png"
            if first is None:
                image.save(path, compress_level=_PNG_LEVEL)
                first = path
            else:
                _link_or_copy(first, path)
            paths.append(path)
            position += 1
        if position == len(indices):
            break
    return paths


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # no hard links on this file system
        shutil.copyfile(source, target)


def _decode_selected(source: Path, indices: Sequence[int], dest: Path) -> list[Path]:
    cmd = [*_decode_args(source, indices[-1] + 1), "-c:v", "ppm", "-f", "image2pipe", "-"]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        try:
            paths = _write_frames(proc.stdout, indices, dest)
        finally:
            proc.stdout.close()  # ffmpeg stops at the next write (its output frame limit stops it anyway)
            returncode = proc.wait()
        if len(paths) < len(indices):
            errors.seek(0)
            if returncode != 0:
                _decode_failed(source, returncode, errors.read())
            raise InputError(f"video {source} ended after fewer frames than its timestamps listed; re-export it.")
    return paths


def read_selected_frames(path: str | os.PathLike[str], dest_dir: str | os.PathLike[str],
                         selection: FrameSelection, *, limit: int | None = None,
                         times: FrameTimes | None = None) -> VideoFrames:
    """The frames ``selection`` keeps of the video at ``path``, written into ``dest_dir`` (empty or new) as
    00000.png, 00001.png... in output order.

    The result's ``fps`` is the rate they stand for (``FrameSelection.rate``), ``indices`` the source frame of
    each, ``start`` the time of the first one (seconds from the first frame). ``limit`` caps the frames after
    the selection. ``times``: the timestamps when already read. Errors: ``ParameterError`` naming
    ``skip_first_frames`` for a skip past the end, ``InputError`` for an unreadable video.
    """
    info = probe_video(path)
    dest = Path(dest_dir)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise OutputError(f"frame folder {dest} is a file or not empty; give an empty or new folder.")
    dest.mkdir(parents=True, exist_ok=True)
    if times is None:
        times = read_frame_times(info.path, info.fps)
    if not times.times:
        raise InputError(f"video {info.path} has a video stream but no frame could be decoded; "
                         "re-export it or choose another video.")
    plan = plan_selection(times, selection, limit)
    paths = _decode_selected(info.path, plan.indices, dest)
    with Image.open(paths[0]) as first:
        size = first.size
    return VideoFrames(info.path, (), tuple(paths), size, selection.rate(info.fps), info.has_audio,
                       indices=plan.indices, start=plan.start)


def cut_audio(source: Path, start: Fraction, duration: Fraction | None, dest: Path) -> Path:
    """The audio of ``source`` from ``start`` seconds on (``duration`` seconds long, or to its end), losslessly
    re-encoded (FLAC) into ``dest``, so that the clip's audio begins with its first kept frame."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-ss", _seconds(start),
           *(["-t", _seconds(duration)] if duration is not None else []), "-i", str(source),
           "-map", "0:a:0", "-vn", "-c:a", "flac", "-y", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip()[-1500:]
        raise InputError(f"ffmpeg could not cut the audio of {source} at {float(start):.3f} s: {message}")
    return dest


def _seconds(value: Fraction) -> str:
    micros = value.numerator * 1_000_000 // value.denominator
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


__all__ = ["FrameSelection", "FrameTimes", "Plan", "cut_audio", "parse_showinfo", "plan_selection",
           "read_frame_times", "read_selected_frames", "resampled_count", "resampled_index", "select_items",
           "selected_positions"]
