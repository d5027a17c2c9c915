"""From a request's sampled frames to its videos: grouping, naming, files, upload, and what to show.

The host hands over what it generated (frames in order, their infotexts, seeds and per-frame prompts)
and gets back what to show or return in their place. Frames of video ``v`` are
``images[v * frames:(v + 1) * frames]``; only images that have a seed are frames (ControlNet and
others may append images, e.g. detected maps, which are never taken for frames). Failures after
sampling (frame interpolation, an encoder, an upload) never lose the frames: they are logged, reported in
``notes``, and the frames of that video are saved without interpolation, or returned instead.

Frame interpolation (``interpolation.py``) runs per video on its finished frames (after A's forward-backward
clip), before any file is written: every format, the PNG frames and the API get the interpolated frames at the
interpolated rate.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image

from motion_module.errors import AnimateDiffError
from motion_module.params.fields import VIDEO_FORMATS, OutputFormat
from motion_module.params.request import AnimateDiffParams
from motion_module.params.settings import Get, encode_options, interp_batch, interp_folder, s3_options
from motion_module.video.encoders import EncodeOptions
from motion_module.video.files import ping_pong, save_video
from motion_module.video.input import format_rate, mux_audio, output_fps
from motion_module.video.interpolation import (
    InterpHost,
    Interpolation,
    interpolate,
    interpolated_fps,
    interpolation_for,
)
from motion_module.video.upload import S3Options, upload_s3

logger = logging.getLogger("animatediff")
SHOWN_IN_GALLERY = (".gif", ".webp")  # WebUI's gallery plays these; MP4/WEBM it cannot


@dataclass(frozen=True)
class VideoJob:
    """How to turn frames into videos. ``frames``: frames per video; ``original_prompt``: the prompt
    as the user wrote it (prompt travel hands the host one prompt per frame)."""

    frames: int
    formats: tuple[OutputFormat, ...]
    out_dir: Path
    options: EncodeOptions
    ping_pong: bool = False
    original_prompt: str | None = None
    request_id: str | None = None
    s3: S3Options | None = None
    audio: Path | None = None  # a video whose audio MP4/WEBM outputs carry, trimmed to the clip
    interp: Interpolation | None = None  # frame interpolation of every video, or None
    notes: tuple[str, ...] = ()  # what the request should say once (e.g. why the source's audio was left out)


@dataclass
class Published:
    """What to show in place of the frames. ``images``: base64 strings of the videos (API) or preview
    images whose ``already_saved_as`` names the GIF/WEBP file (UI), then frames where asked for;
    ``infotexts`` one per image; ``files`` every path written; ``uploaded`` the URLs; ``notes`` failures."""

    images: list[Any] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def report(self, what: str, error: BaseException) -> None:
        """Log a failure after sampling and keep its message for the response, the same way every time."""
        note = f"AnimateDiff: {what} failed: {error}"
        logger.error(note)
        self.notes.append(note)


def video_infotext(text: str, frame_prompt: str, original_prompt: str | None) -> str:
    """A frame's infotext with the original (multi-line travel) prompt in place of the frame's prompt."""
    if original_prompt is not None and text.startswith(frame_prompt):
        return original_prompt + text[len(frame_prompt):]
    return text


def video_count(images: int, seeds: int, frames: int) -> int:
    """Whole videos among ``images`` images of which the first ``seeds`` are frames."""
    return min(images, seeds) // frames


def _shown(path: Path, first_frame: Image.Image, for_api: bool) -> Any | None:
    if for_api:
        return base64.b64encode(path.read_bytes()).decode("ascii")
    if path.suffix not in SHOWN_IN_GALLERY:
        return None
    preview = first_frame.copy()
    preview.already_saved_as = str(path)  # type: ignore[attr-defined]  # WebUI serves this file as is
    return preview


def _add_audio(files: dict[str, Path], frames: int, fps: float | Fraction, job: VideoJob, out: Published) -> None:
    for name in ("MP4", "WEBM"):
        if job.audio is not None and name in files:
            try:
                mux_audio(files[name], job.audio, frames=frames, fps=Fraction(fps), out_path=files[name])
            except AnimateDiffError as error:
                out.report(f"adding the source's audio to the {name} (kept without audio)", error)


def _interpolated(frames: list[Image.Image], job: VideoJob, out: Published
                  ) -> tuple[list[Image.Image], EncodeOptions]:
    """The frames to save and how: interpolated at the interpolated rate, or as they are when that fails."""
    if job.interp is None:
        return frames, job.options
    try:
        made = interpolate(frames, job.interp)
    except Exception as error:  # missing weights, out of memory, FILM unavailable...: the frames are kept
        out.report(f"frame interpolation ({job.interp.label}; the video is saved without it)", error)
        return frames, job.options
    return made, dataclasses.replace(job.options, fps=job.interp.fps, keep_duration=True)


def _one_video(frames: list[Image.Image], info: str, seed: int, job: VideoJob, for_api: bool,
               out: Published) -> None:
    formats = [str(f.value) for f in job.formats if f is not OutputFormat.FRAME]
    shown = 0
    frames, options = _interpolated(frames, job, out)
    try:
        saved = save_video(frames, job.out_dir, seed=seed, formats=formats, infotext=info,
                           options=options, request_id=job.request_id)
    except AnimateDiffError as error:
        out.report("writing the video", error)
        saved = None
    if saved is not None:
        _add_audio(saved.files, len(frames), options.fps, job, out)
        out.files += [str(path) for path in saved.files.values()]
        videos = [saved.files[f] for f in VIDEO_FORMATS if f in saved.files]
        if job.s3 is not None and videos:
            try:
                out.uploaded += upload_s3(videos, job.s3)
            except AnimateDiffError as error:
                out.report("uploading (files kept locally)", error)
        for path in videos:
            item = _shown(path, frames[0], for_api)
            if item is not None:
                out.images.append(item)
                out.infotexts.append(info)
                shown += 1
    if OutputFormat.FRAME in job.formats or not shown:
        out.images += frames
        out.infotexts += [info] * len(frames)


def publish_videos(images: Sequence[Image.Image], infotexts: Sequence[str], seeds: Sequence[int],
                   prompts: Sequence[str], job: VideoJob, *, for_api: bool) -> Published:
    """Write every video of a request and say what to show instead of its frames.

    ``images``/``infotexts``: the generated images from the first frame on; ``seeds``/``prompts``:
    one per frame (the host's ``all_seeds``/``all_prompts``). With ``for_api`` the videos come back
    as base64 strings, else as previews (GIF/WEBP). The frames themselves come back when the
    ``Frame`` format is asked for, or when no video could be shown for them.
    """
    out = Published(notes=list(job.notes))
    for video in range(video_count(len(images), len(seeds), job.frames)):
        first = video * job.frames
        frames = list(images[first:first + job.frames])
        info = video_infotext(infotexts[first], prompts[first], job.original_prompt)
        if job.ping_pong:
            frames = ping_pong(frames)
        _one_video(frames, info, int(seeds[first]), job, for_api, out)
    return out


def report(processed: Any, out: Published | None, notes: Sequence[str], original_prompt: str | None) -> None:
    """Hand the published videos (``out``; None when publishing failed: the frames stay) and the notes to the
    host's result ``processed`` (A1111's ``Processed``, duck-typed). Its ``extra_generation_params`` is replaced
    by a copy: it is the request's own dict, which the X/Y/Z plot's copies of one request share, so one cell's
    files and notes must not reach the next cell's infotext."""
    params = dict(processed.extra_generation_params)
    if out is not None:
        processed.images, processed.infotexts, processed.index_of_first_image = out.images, out.infotexts, 0
        processed.prompt = original_prompt or processed.prompt
        params["AnimateDiff files"] = tuple(out.files)  # a list: one entry per image
        if out.uploaded:
            params["AnimateDiff upload"] = tuple(out.uploaded)
        notes = [*notes, *out.notes]
    if notes:
        params["AnimateDiff notes"] = tuple(notes)
        processed.comments = (processed.comments or "") + "".join(f"{note}\n" for note in notes)
    processed.extra_generation_params = params


def audio_mismatch(fps: Fraction | float, source_fps: Fraction | None, interp: Interpolation | None) -> str | None:
    """Why the video source's audio would not match the picture, or None when it plays at the source's speed.

    The audio matches when source frame i plays at the time it had in the source: ``fps`` (after
    ``output_fps``) is the source's exact rate (an unknown source rate is trusted), and interpolation, if any,
    keeps the duration (its rate is ``fps`` * X).
    """
    if source_fps is not None and Fraction(fps) != source_fps:
        return (f"AnimateDiff: the video source's audio was left out: the video plays at {format_rate(fps)} fps "
                f"and the source at {format_rate(source_fps)} fps, so its sound would not match the picture; "
                f"set FPS to 0 (the source's rate) or {format_rate(source_fps)} to keep it")
    if interp is not None:
        keeps = interpolated_fps(fps, interp.factor)  # the rate that keeps the duration
        if Fraction(interp.fps).limit_denominator(100_000) != keeps:
            return (f"AnimateDiff: the video source's audio was left out: the interpolated video plays at "
                    f"{format_rate(interp.fps)} fps, not FPS x {interp.factor} = {format_rate(keeps)}, so its "
                    "sound would not match the picture; set Interpolated FPS to 0 to keep it")
    return None


def video_job(frames: int, params: AnimateDiffParams, out_dir: Path, get: Get, *, ping_pong: bool = False,
              original_prompt: str | None = None, source_fps: Fraction | None = None,
              audio: Path | None = None, host: InterpHost | None = None) -> VideoJob:
    """The job for a request's ``params`` with the encoder, upload and interpolation settings read through ``get``.

    ``fps`` 0 plays at ``source_fps`` (the video source's exact rate) or 8; ``audio``: see ``VideoJob``, left out
    with a note when the video would not play at the source's speed (``audio_mismatch``); ``host``: the device,
    folders and progress callback frame interpolation uses.
    """
    fps = output_fps(params.fps, source_fps)
    interp = interpolation_for(params, fps, ping_pong=ping_pong, weights_dir=interp_folder(get),
                               batch=interp_batch(get), host=host)
    mismatch = audio_mismatch(fps, source_fps, interp) if audio is not None else None
    if mismatch is not None:
        logger.warning(mismatch)
    return VideoJob(frames=frames, formats=params.formats, out_dir=out_dir, ping_pong=ping_pong,
                    options=encode_options(get, fps=fps, loop=params.loop_number), original_prompt=original_prompt,
                    request_id=params.request_id, s3=s3_options(get), audio=None if mismatch else audio,
                    interp=interp, notes=(mismatch,) if mismatch else ())


__all__ = ["InterpHost", "Published", "VideoJob", "audio_mismatch", "publish_videos", "video_count", "video_infotext",
           "video_job"]
