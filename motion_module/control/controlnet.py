"""ControlNet video-to-video, WebUI-free: which frames each unit reads, and the hints of every UNet call.

Planning (before sampling, :func:`plan_control_frames`): every enabled ControlNet unit either keeps its own
single image (it controls all frames) or reads one image per frame from a folder, chosen in this order:
the unit's own batch folder, the img2img Batch tab's input folder, AnimateDiff's ``video_source`` (a video,
decoded frame-exactly into a folder), AnimateDiff's ``video_path`` (a folder of frames). Inpaint units read
``<folder>/image`` and ``<folder>/mask`` (or the folder and AnimateDiff's ``mask_path``). The video length
is the requested one, or the shortest source when 0; a shorter source is an error naming it. AnimateDiff's
frame selection (``frame_selection.py``: skip_first_frames, select_every_nth, frame_load_cap, force_rate)
applies to ``video_source`` and ``video_path`` (and to the masks matched to their frames), not to a unit's own
folder or the img2img Batch tab's folder. A unit whose batch input has a ``keyframe:`` line reads one image per
keyframe from its own folder instead, and does not count for the length (``cn_keyframes``). IP-Adapter units
cannot read frames (ControlNet 1.1.455 fails on them; Forge's built-in ControlNet uses the first): refused with a
422. The two hosts' units differ only in how they name the batch folder: :class:`UnitLayout` (``A1111_UNITS`` for
sd-webui-controlnet, ``FORGE_UNITS`` for Forge's built-in ControlNet, which has no keyframe lines).

Slicing (during sampling, :class:`HintSlicer`): ControlNet keeps one hint tensor per unit with a row per
frame (two copies of them when WebUI batches cond and uncond), at control resolution, on the CPU. Before
each UNet call the slicer hands every unit exactly the rows of the frames in that call, moved to the
device; :meth:`HintSlicer.restore` puts the full tensors back. A control param is anything with
``hint_cond`` / ``hr_hint_cond`` attributes (sd-webui-controlnet's ``ControlParams``, duck-typed).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import shutil
import tempfile
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from motion_module.control.cn_keyframes import keyframe_line, place_keyframes, split_batch_images
from motion_module.errors import AnimateDiffError, ParameterError, naming
from motion_module.params.coerce import within_roots
from motion_module.params.fields import OutputFormat
from motion_module.params.request import AnimateDiffParams
from motion_module.video.frame_selection import FrameSelection, cut_audio, read_selected_frames, select_items
from motion_module.video.input import (
    VideoFrames,
    materialize_video_source,
    read_frame_folder,
    read_inpaint_folder,
    read_video_frames,
    resolve_video_length,
)

HINT_ATTRIBUTES = ("hint_cond", "hr_hint_cond")


@dataclass(frozen=True)
class UnitLayout:
    """How a host's ControlNet unit holds a batch input. ``batch_attr``: the unit attribute naming the folder;
    ``keyframes``: it may carry keyframe lines after the folder (sd-webui-controlnet); ``extra``: further attributes
    a unit given frames gets (sd-webui-controlnet's ``animatediff_batch``: one image per frame of one generation);
    ``ipadapter``: why an IP-Adapter unit cannot take frames on this host."""

    batch_attr: str
    keyframes: bool
    extra: tuple[tuple[str, Any], ...]
    ipadapter: str


A1111_UNITS = UnitLayout("batch_images", True, (("animatediff_batch", True),), (
    "with sd-webui-controlnet 1.1.455: its AnimateDiff batch path fails ('ImageEmbed.__new__() takes 3 positional "
    "arguments but 4 were given'), WebUI logs that and ControlNet does nothing for the request"))
FORGE_UNITS = UnitLayout("batch_image_dir", False, (), (
    "with Forge's built-in ControlNet: its batch input takes one image per frame only for image-like preprocessor "
    "outputs (an IP-Adapter's embedding is made of the first image alone)"))


@dataclass(frozen=True)
class UnitInput:
    """What one enabled ControlNet unit brings. ``index``: its position among ControlNet's units;
    ``has_image``: its own single image; ``batch_dir``: its own folder of frames; ``inpaint``: an inpaint
    preprocessor (needs masks); ``keyframes``: the frames of its batch input's keyframe line (one image of
    ``batch_dir`` each); ``ipadapter``: an IP-Adapter unit."""

    index: int
    has_image: bool = False
    batch_dir: str | None = None
    inpaint: bool = False
    keyframes: tuple[int, ...] | None = None
    ipadapter: str | None = None


@dataclass(frozen=True)
class FrameSources:
    """AnimateDiff's own frame sources, in priority order after a unit's own: the img2img Batch tab's
    folder, the decoded ``video_source`` folder, ``video_path``; ``mask_path`` for inpaint units.

    ``selection`` applies to the frames of ``video_path`` (and their masks); ``video_indices`` is the source
    frame of each decoded ``video_source`` frame (already selected), which picks their masks from ``mask_path``."""

    i2i_batch_dir: Path | None = None
    video_frames_dir: Path | None = None
    video_path: Path | None = None
    mask_path: Path | None = None
    selection: FrameSelection = FrameSelection()
    video_indices: tuple[int, ...] | None = None


@dataclass(frozen=True)
class UnitFrames:
    """A unit that reads one image per frame (or per keyframe: ``keyframes``): the frames (and masks) of
    ``image_dir`` in natural order; ``source`` says where the folder came from (for messages)."""

    index: int
    image_dir: Path
    images: tuple[Path, ...]
    masks: tuple[Path, ...] | None
    source: str
    keyframes: tuple[int, ...] | None = None

    @property
    def count(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class ControlPlan:
    """The units that read frames from folders, and the resolved video length."""

    units: tuple[UnitFrames, ...]
    frames: int


# where a unit's frames come from: (folder, how messages name it, the AnimateDiff field a bad folder is blamed on)
_Found = tuple[Path, str, str | None]


def _folder_for(unit: UnitInput, sources: FrameSources) -> _Found | None:
    candidates: tuple[tuple[Path | None, str, str | None], ...] = (
        (Path(unit.batch_dir) if unit.batch_dir else None, "its batch folder", None),
        (sources.i2i_batch_dir, "the img2img batch folder", None),
        (sources.video_frames_dir, "video_source", "video_source"), (sources.video_path, "video_path", "video_path"))
    return next(((folder, name, field) for folder, name, field in candidates if folder is not None), None)


def _unit_frames(unit: UnitInput, found: _Found, sources: FrameSources) -> UnitFrames:
    folder, source, field = found
    if unit.ipadapter:
        raise ParameterError(field or "batch_images", f"ControlNet unit {unit.index} is an IP-Adapter unit, which "
                             f"cannot take one image per frame or per keyframe {unit.ipadapter}; give the "
                             "unit a single image (it then applies to every frame)")
    picks = sources.video_indices if source == "video_source" else None
    with naming(field):
        frames = _read_unit_frames(unit, folder, source, sources.mask_path, picks)
    frames = dataclasses.replace(frames, keyframes=unit.keyframes)
    if source != "video_path" or not sources.selection.active:
        return frames
    numbers = select_items(range(frames.count), sources.selection, f"video_path {folder}")
    masks = None if frames.masks is None else tuple(frames.masks[i] for i in numbers)
    return dataclasses.replace(frames, images=tuple(frames.images[i] for i in numbers), masks=masks)


def _read_unit_frames(unit: UnitInput, folder: Path, source: str, mask_path: Path | None,
                      mask_picks: tuple[int, ...] | None = None) -> UnitFrames:
    """The unit's frames (and masks) of ``folder``; ``mask_picks``: the mask of each frame, by number (the
    source frames a selection kept), else masks are matched to the frames by order."""
    if not unit.inpaint:
        return UnitFrames(unit.index, folder, tuple(read_frame_folder(folder)), None, source)
    if (folder / "image").is_dir() or mask_path is None:
        pairs = read_inpaint_folder(folder)
        return UnitFrames(unit.index, folder / "image", tuple(i for i, _ in pairs), tuple(m for _, m in pairs),
                          source)
    images = read_frame_folder(folder)
    with naming("mask_path"):
        masks = read_frame_folder(mask_path)
    numbers = list(mask_picks) if mask_picks is not None else list(range(len(images)))
    if len(masks) <= max(numbers, default=-1):
        raise ParameterError("mask_path", f"{mask_path} has {len(masks)} masks for the {max(numbers) + 1} "
                             f"frames of ControlNet unit {unit.index} ({source}); give one mask per frame")
    return UnitFrames(unit.index, folder, tuple(images), tuple(masks[i] for i in numbers), source)


def plan_control_frames(units: Sequence[UnitInput], sources: FrameSources, requested: int) -> ControlPlan:
    """Which folder each enabled unit reads, and the video length (``requested``; 0 = shortest source).

    A unit with its own single image and no batch folder keeps it (one image for every frame). Raises
    ParameterError/InputError naming the unit for a unit without any input, an empty or unreadable
    folder, frames of mixed sizes, or a source shorter than ``requested``.
    """
    planned: list[UnitFrames] = []
    for unit in units:
        if unit.keyframes is not None and not unit.batch_dir:
            raise ParameterError("batch_images", f"ControlNet unit {unit.index}: a keyframe line needs the unit's "
                                 "own folder of keyframe images on the first line of its batch input")
        if unit.has_image and not unit.batch_dir:
            continue
        found = _folder_for(unit, sources)
        if found is None:
            raise ParameterError("video_source", f"ControlNet unit {unit.index} has no input: give it an image or "
                                 "a batch folder, or give AnimateDiff a video source or a frames folder")
        planned.append(_unit_frames(unit, found, sources))
    counts = {f"ControlNet unit {u.index} ({u.source}: {u.image_dir})": u.count for u in planned if u.keyframes is None}
    return ControlPlan(tuple(planned), resolve_video_length(requested, counts) if counts else requested)


def unit_slots(args: Sequence[Any], start: int, end: int, to_unit: Callable[[Any], Any]) -> list[tuple[int, Any]]:
    """(argument slot, unit) for ControlNet's arguments ``args[start:end]`` that are units (a dict from the API
    or a unit object from the UI), each made a unit object by ``to_unit`` (ControlNet's to_processing_unit)."""
    return [(i, to_unit(args[i])) for i in range(start, min(end, len(args)))
            if isinstance(args[i], dict) or hasattr(args[i], "enabled")]


def work_folder(owner: Any) -> Path:
    """A new temporary folder for one request's decoded and staged frames, removed with ``owner``."""
    folder = Path(tempfile.mkdtemp(prefix="animatediff-input-"))
    weakref.finalize(owner, shutil.rmtree, folder, True)
    return folder


def unit_input(index: int, unit: Any, layout: UnitLayout = A1111_UNITS) -> UnitInput | None:
    """What an enabled ControlNet unit brings (the host's ``ControlNetUnit``, read by attribute name, the batch
    folder by ``layout``); None for a disabled unit. A unit in merge mode counts as having its own images."""
    if not getattr(unit, "enabled", False):
        return None
    mode = getattr(unit, "input_mode", "simple")
    mode = str(getattr(mode, "value", mode)).lower()
    batch = getattr(unit, layout.batch_attr, None)
    batch_dir = keyframes = None
    if mode == "batch" and isinstance(batch, str):  # its first line; ControlNet reads "mask:" lines after it
        batch_dir, keyframes = split_batch_images(index, batch) if layout.keyframes else (batch.strip() or None, None)
    module = str(getattr(unit, "module", ""))
    ipadapter = bool(getattr(unit, "is_ipadapter", False)) or "ipadapter" in module.lower().replace("-", "")
    return UnitInput(index, has_image=getattr(unit, "image", None) is not None or mode == "merge",
                     batch_dir=batch_dir, inpaint="inpaint" in module, keyframes=keyframes,
                     ipadapter=layout.ipadapter if ipadapter else None)


def stage(files: Sequence[Path], folder: Path) -> Path:
    """Link ``files`` into the new ``folder`` as 00000<suffix>, 00001...: ControlNet lists a folder in plain
    name order (2.png after 10.png) and reads every file in it, so it gets exactly these frames, in order."""
    folder.mkdir(parents=True)
    for number, source in enumerate(files):
        target = folder / f"{number:05d}{source.suffix.lower()}"
        try:
            target.symlink_to(source.resolve())
        except OSError:  # no symlinks here (e.g. Windows without the privilege): copy
            shutil.copyfile(source, target)
    return folder


def with_frames(unit: Any, frames: UnitFrames, video_length: int, work_dir: Path, batch_mode: Any,
                layout: UnitLayout = A1111_UNITS) -> Any:
    """A copy of ``unit`` that reads the first ``video_length`` frames (and masks) of ``frames``, staged in
    ``work_dir``, as one image per video frame (ControlNet's AnimateDiff batch input; Forge: its batch input, one
    image per row of the batch of ``video_length`` frames); a keyframe unit: its images in the order of their
    frames, and the keyframe line (ParameterError when they do not fit the video)."""
    base = work_dir / f"unit{frames.index}"
    chosen, line = list(range(min(video_length, frames.count))), ""
    if frames.keyframes is not None:
        placement = place_keyframes(frames.index, frames.keyframes, frames.count, video_length)
        chosen, line = list(placement.images), "\n" + keyframe_line(placement.frames)
    masks = frames.masks
    clone = copy.copy(unit)
    changes = {"input_mode": batch_mode, "batch_modifiers": [], **dict(layout.extra),
               layout.batch_attr: str(stage([frames.images[i] for i in chosen], base / "image")) + line,
               "batch_mask_dir": None if masks is None else str(stage([masks[i] for i in chosen], base / "mask"))}
    for name, value in changes.items():
        setattr(clone, name, value)
    return clone


@dataclass(frozen=True)
class VideoToVideo:
    """The outcome of :func:`prepare`: ControlNet's edited units by argument slot, the video length, and
    the video source's exact rate and audio (None without a video source, or without audio). With a frame
    selection ``source_fps`` is the rate the kept frames stand for (the source's rate or force_rate, divided
    by select_every_nth) and ``audio`` begins at the first kept frame."""

    units: dict[int, Any]
    frames: int
    source_fps: Fraction | None = None
    audio: Path | None = None
    notes: tuple[str, ...] = ()


def _checked_folder(value: str | None, field: str, roots: Sequence[Path] | None) -> Path | None:
    if not value:
        return None
    folder = Path(value).expanduser().resolve()
    if roots is not None and not within_roots(folder, roots):
        raise ParameterError(field, f"{value} is outside the folders AnimateDiff may read "
                             f"({', '.join(str(r) for r in roots) or 'none'}); move the frames there")
    return folder


def prepare(params: AnimateDiffParams, slots: Sequence[tuple[int, Any]], *, work_dir: Callable[[], Path],
            allowed_roots: Sequence[Path] | None, batch_mode: Any, i2i_batch_dir: Path | None = None,
            init_frames: int = 0, layout: UnitLayout = A1111_UNITS) -> VideoToVideo:
    """Plan a request's video input: give every enabled ControlNet unit of ``slots`` ((argument slot, unit))
    its frames, decoding ``video_source`` (a path inside ``allowed_roots``, or base64) frame-exactly into
    ``work_dir()`` (called once, when a folder is needed) when a unit needs it, and resolve the video length
    (``init_frames``: the img2img Batch tab's init images, one per frame, also a source). ``batch_mode``:
    ControlNet's ``InputMode.BATCH``; ``layout``: how the host's units name their batch folder."""
    work = functools.cache(work_dir)
    enabled = [(slot, unit, info) for number, (slot, unit) in enumerate(slots)
               if (info := unit_input(number, unit, layout)) is not None]
    selection = FrameSelection.of(params)
    video = None
    if params.video_source and any(not info.has_image or info.batch_dir for _, _, info in enabled):
        video = _decode_video_source(params, selection, work, allowed_roots)
    sources = FrameSources(i2i_batch_dir=i2i_batch_dir, video_frames_dir=None if video is None else work() / "video",
                           video_path=_checked_folder(params.video_path, "video_path", allowed_roots),
                           mask_path=_checked_folder(params.mask_path, "mask_path", allowed_roots),
                           selection=selection, video_indices=None if video is None else video.indices)
    plan = plan_control_frames([info for _, _, info in enabled], sources, params.video_length)
    counts = {"the img2img batch images": init_frames} if init_frames else {}
    frames = resolve_video_length(plan.frames, counts) if counts else plan.frames or params.frames
    by_index = {planned.index: planned for planned in plan.units}
    units = {slot: with_frames(unit, by_index[info.index], frames, work(), batch_mode, layout)
             for slot, unit, info in enabled if info.index in by_index}
    audio, notes = _source_audio(params, video, work)
    unused = (params.video_source or params.video_path) and not enabled
    notes += ("AnimateDiff: video_source / video_path feed ControlNet units that have no input; no ControlNet "
              "unit is enabled, so they were not used",) if unused else ()
    if selection.active and not (params.video_source or params.video_path):
        notes += (f"AnimateDiff: the frame selection ({selection.describe()}) applies to video_source and "
                  "video_path; neither is given, so it was not used",)
    return VideoToVideo(units, frames, video.fps if video is not None else None, audio, notes)


def _decode_video_source(params: AnimateDiffParams, selection: FrameSelection, work: Callable[[], Path],
                         allowed_roots: Sequence[Path] | None) -> VideoFrames:
    """``video_source`` decoded into ``work()/video``: every frame, or the frames ``selection`` keeps."""
    limit = params.video_length or None
    with naming("video_source"):
        source = materialize_video_source(params.video_source or "", work(), allowed_roots=allowed_roots)
        if selection.active:
            return read_selected_frames(source, work() / "video", selection, limit=limit)
        return read_video_frames(source, dest_dir=work() / "video", limit=limit)


def _source_audio(params: AnimateDiffParams, video: VideoFrames | None, work: Callable[[], Path]
                  ) -> tuple[Path | None, tuple[str, ...]]:
    """The audio MP4/WEBM outputs carry: the video source itself, or with a frame selection its audio cut to
    begin at the first kept frame (FLAC in the work folder); a failed cut drops the audio with a note."""
    if video is None or not video.has_audio or not params.keep_audio:
        return None, ()
    if video.start == 0:  # the audio starts with the first frame: mux_audio trims its end
        return video.source, ()
    if not {OutputFormat.MP4, OutputFormat.WEBM} & set(params.formats):
        return None, ()  # no output carries audio
    span = Fraction(len(video)) / video.fps if video.fps else None
    try:
        return cut_audio(video.source, video.start, span, work() / "audio.flac"), ()
    except AnimateDiffError as error:
        return None, (f"AnimateDiff: the video is saved without the source's audio: {error}",)


class HintSlicer:
    """Hands every control param the hint rows of the frames in the current UNet call.

    ``params``: ControlNet's control params of this run; ``frames``: the video length N. A hint with N
    rows (one per frame) or 2N rows (cond and uncond copies, WebUI's batch cond/uncond) is sliced; any
    other hint (one image for all frames, embeddings, keyframe tensors) is left alone. Use as a context
    manager, or call :meth:`restore`: the very same full tensors are put back.
    """

    def __init__(self, params: Sequence[Any], frames: int, device: torch.device | str | None = None) -> None:
        self.frames, self.device = int(frames), device
        self._full: list[tuple[Any, str, Any, torch.Tensor]] = []  # (param, attribute, original, per-frame rows)
        for param in params:
            for name in HINT_ATTRIBUTES:
                hint = getattr(param, name, None)
                if isinstance(hint, torch.Tensor) and hint.dim() >= 1 and hint.shape[0] in (frames, 2 * frames):
                    self._full.append((param, name, hint, hint[:frames]))

    @property
    def sliced(self) -> int:
        """How many hint tensors follow the frames of each call."""
        return len(self._full)

    def select(self, frame_of_row: Sequence[int]) -> None:
        """Set every sliced hint to the rows ``frame_of_row`` (the video frame of each row of the call)."""
        index = torch.as_tensor(list(frame_of_row), dtype=torch.long)
        for param, name, _, per_frame in self._full:
            rows = per_frame.index_select(0, index.to(per_frame.device))
            setattr(param, name, rows if self.device is None else rows.to(self.device))

    def restore(self) -> None:
        """Put every full hint tensor back (ControlNet's setter then drops its cached per-call state)."""
        for param, name, original, _ in self._full:
            if getattr(param, name) is not original:
                setattr(param, name, original)

    def __enter__(self) -> HintSlicer:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.restore()


__all__ = ["A1111_UNITS", "FORGE_UNITS", "ControlPlan", "FrameSources", "HintSlicer", "UnitFrames", "UnitInput",
           "UnitLayout", "VideoToVideo",
           "plan_control_frames", "prepare", "stage", "unit_input", "with_frames"]
