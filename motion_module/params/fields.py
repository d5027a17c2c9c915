"""The table of AnimateDiff parameters: names, API aliases, types, defaults, ranges and help.

``FIELDS`` is data: the dataclass in ``params.py``, the WebUI controls, the XYZ axes, the infotext
writer and the README table are all derived from it. Its order is the frozen positional order
(UI args and positional API args); new fields are only ever appended.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from motion_module.errors import ParameterError
from motion_module.params import coerce as pc


class OutputFormat(str, Enum):
    """What to save, in the order videos are returned over the API (as the reference did).

    ``Frame`` is API-only: it also returns the frames as images. It is not a file format; drop
    it before handing the formats to ``output.save_video``.
    """

    GIF = "GIF"
    MP4 = "MP4"
    WEBP = "WEBP"
    WEBM = "WEBM"
    PNG = "PNG"
    TXT = "TXT"
    FRAME = "Frame"


# The one format list: files ``video_files.save_video`` writes, and the video containers among them
# (the order is the order videos are returned over the API).
FILE_FORMATS: tuple[str, ...] = tuple(str(f.value) for f in OutputFormat if f is not OutputFormat.FRAME)
VIDEO_FORMATS: tuple[str, ...] = ("GIF", "MP4", "WEBP", "WEBM")


class ClosedLoop(str, Enum):
    """How the end of the clip relates to its start (reference names kept for compatibility)."""

    N = "N"
    R_MINUS_P = "R-P"
    R_PLUS_P = "R+P"
    A = "A"


class Fusion(str, Enum):
    """How the outputs of overlapping context windows are combined."""

    PYRAMID = "pyramid"
    FLAT = "flat"


class WindowMode(str, Enum):
    """Where context windows apply: the whole UNet, or only the motion modules' temporal attention."""

    UNET = "unet"
    MOTION_MODULE = "motion_module"


class BetaSchedule(str, Enum):
    """Beta schedule while the motion module is active (diffusers naming)."""

    AUTO = "auto"
    LINEAR = "linear"
    SCALED_LINEAR = "scaled_linear"


class FreeInitFilter(str, Enum):
    """Low-pass filter used by FreeInit."""

    BUTTERWORTH = "butterworth"
    GAUSSIAN = "gaussian"
    BOX = "box"
    IDEAL = "ideal"


class FrameInterpolation(str, Enum):
    """Frame interpolation of the finished clip: FILM (through the Deforum extension, as the reference) or the
    built-in RIFE."""

    OFF = "Off"
    FILM = "FILM"
    RIFE = "RIFE"


class PromptInterpolation(str, Enum):
    """How conditionings are blended between prompt-travel keyframes."""

    SLERP = "slerp"
    LERP = "lerp"


KINDS = ("bool", "int", "float", "choice", "formats", "model", "path", "request_id", "image", "keyframes")
CONTEXT_MAX = 64


@dataclass(frozen=True)
class FieldSpec:
    """One parameter: everything needed to validate it, show it, document it and write it."""

    name: str
    kind: str
    default: Any
    label: str
    help: str
    aliases: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    min_exclusive: bool = False
    step: float | None = None
    enum: type[Enum] | None = None
    unsupported: tuple[tuple[str, str], ...] = ()  # (value, reason) refused although in the enum
    infotext_key: str | None = None  # None: never written to infotext, never pasted
    img2img_only: bool = False
    api_only: bool = False
    group: str = "main"
    xyz: bool = True

    @property
    def choices(self) -> tuple[str, ...]:
        """Allowed string values (choice/formats), unsupported ones left out."""
        if self.enum is None:
            return ()
        refused = dict(self.unsupported)
        return tuple(str(m.value) for m in self.enum if str(m.value) not in refused)

    @property
    def short_help(self) -> str:
        """The first sentence of ``help``, shown under the control (the README has the rest)."""
        return self.help.split(". ", 1)[0].rstrip(".") + "."

    def shown(self, is_img2img: bool) -> bool:
        """Whether the WebUI tab shows a control for it (else it is a hidden state slot)."""
        return not (self.api_only or self.kind == "request_id" or (self.img2img_only and not is_img2img))

    @property
    def xyz_type(self) -> type:
        """The value type of its X/Y/Z-plot axis."""
        return {"int": int, "float": float}.get(self.kind, str)

    def xyz_choices(self) -> list[str] | None:
        """Fixed choices of its X/Y/Z-plot axis (None: free values; the model list is the host's)."""
        if self.kind == "choice":
            return list(self.choices)
        return ["True", "False"] if self.kind == "bool" else None

    def coerce(self, value: Any) -> Any:
        """Validate and normalise one raw value (str, number, list...) into the canonical type."""
        if self.kind == "bool":
            return pc.coerce_bool(self.name, value)
        if self.kind == "int":
            lo = None if self.minimum is None else int(self.minimum)
            hi = None if self.maximum is None else int(self.maximum)
            return pc.coerce_int(self.name, value, lo, hi)
        if self.kind == "float":
            return pc.coerce_float(self.name, value, self.minimum, self.maximum,
                                   self.min_exclusive)
        if self.kind == "choice":
            assert self.enum is not None
            return pc.coerce_choice(self.name, value, self.enum, dict(self.unsupported))
        if self.kind == "formats":
            assert self.enum is not None
            return pc.coerce_choice_set(self.name, value, self.enum)
        if self.kind == "model":
            return pc.coerce_model(self.name, value)
        if self.kind == "path":
            return pc.coerce_path(self.name, value)
        if self.kind == "request_id":
            return pc.coerce_request_id(self.name, value)
        if self.kind == "image":
            return pc.coerce_image(self.name, value)
        if self.kind == "keyframes":
            if value is None:
                return ""
            if not isinstance(value, str):
                raise ParameterError(self.name, f"expected text like '0: 1, 16: 0.5', got {pc.describe(value)}")
            return pc.keyframes_text(pc.parse_keyframes(value))
        raise ParameterError(self.name, f"internal error: unknown kind {self.kind!r}")

    def to_ui(self, value: Any) -> Any:
        """The value as a Gradio component holds it: enums as str, formats as list, None as ""."""
        if self.kind == "choice":
            return str(value.value)
        if self.kind == "formats":
            return [str(m.value) for m in value]
        if self.kind in ("path", "request_id"):
            return "" if value is None else value
        return value

    def to_api(self, value: Any) -> Any:
        """The value as plain JSON (base64 PNG for an image)."""
        if self.kind == "image":
            return None if value is None else pc.image_to_base64(value)
        return self.to_ui(value) if self.kind in ("choice", "formats") else value

    def to_text(self, value: Any) -> str:
        """The value as written into infotext (unquoted; the writer quotes when needed)."""
        if self.kind == "choice":
            return str(value.value)
        if self.kind == "formats":
            return "+".join(str(m.value) for m in value)
        if self.kind == "float":
            return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
        return str(value)

    def allowed_text(self) -> str:
        """Human description of the allowed values, used in the README table."""
        if self.kind == "bool":
            return "true / false"
        if self.kind in ("choice", "formats"):
            text = ", ".join(self.choices)
            return text if self.kind == "choice" else f"non-empty subset of {text}"
        if self.kind in ("int", "float"):
            op = "<" if self.min_exclusive else "<="
            lo = "" if self.minimum is None else f"{self.minimum:g} {op} "
            hi = "" if self.maximum is None else f" <= {self.maximum:g}"
            return f"{lo}x{hi}"
        return {"model": "file name relative to the model folder; \"\" = automatic",
                "path": "server path or null",
                "request_id": "1-64 of A-Z a-z 0-9 _ -; \"\"/null = none",
                "image": "base64 PNG/JPEG (data: URL allowed) or null",
                "keyframes": "\"frame: scale\" pairs (scale 0..2), e.g. \"0: 1, 16: 0.5\"; \"\" = none"}[self.kind]


def _f(name: str, kind: str, default: Any, label: str, help: str, **kw: Any) -> FieldSpec:
    return FieldSpec(name=name, kind=kind, default=default, label=label, help=help, **kw)


FIELDS: tuple[FieldSpec, ...] = (
    _f("enable", "bool", False, "Enable AnimateDiff",
       "Turn the batch into the frames of one video.", infotext_key="enable", xyz=False),
    _f("model", "model", "", "Motion module",
       "Motion-module file, relative to the model folder (sub-folders allowed). Empty: "
       "mm_sd15_v3.safetensors if present, otherwise the first file by name. Infotext records "
       "the file actually used.", infotext_key="model"),
    _f("formats", "formats", (OutputFormat.GIF, OutputFormat.PNG), "Save formats",
       "Files to write. 'Frame' (API only) also returns the frames as images; TXT writes the "
       "infotext next to the video.", aliases=("format",), enum=OutputFormat,
       infotext_key="format"),
    _f("video_length", "int", 0, "Number of frames",
       "Frames in the video; 0 = as many as the shortest ControlNet frame source (video, folder, img2img batch), "
       "else the context length.", aliases=("frames",), minimum=0,
       maximum=10000, step=1, infotext_key="video_length"),
    _f("fps", "float", 8.0, "FPS", "Playback frames per second of the saved video; 0 = the video source's "
       "exact rate (8 without a video source).", minimum=0, maximum=240, step=1, infotext_key="fps"),
    _f("loop_number", "int", 0, "Display loop number",
       "How many times GIF/WEBP play; 0 = loop forever.", minimum=0, maximum=65535, step=1,
       infotext_key="loop_number"),
    _f("context", "int", 16, "Context length",
       "Frames the motion module sees at once. Longer videos are denoised in overlapping windows "
       "of this size. Must not exceed the module's limit (24 for V1, 32 for V2/V3).",
       aliases=("batch_size", "context_length"), minimum=1, maximum=CONTEXT_MAX, step=1,
       infotext_key="context", group="context"),
    _f("stride", "int", 1, "Context stride",
       "Stride levels: level k adds windows whose frames are 2^(k-1) apart, linking distant "
       "frames. 1 = contiguous windows only. Matters only when frames > context.",
       minimum=1, maximum=16, step=1, infotext_key="stride", group="context"),
    _f("overlap", "int", -1, "Context overlap",
       "Frames shared by neighbouring windows, 0 to context-1; -1 = a quarter of the context length.",
       minimum=-1, maximum=CONTEXT_MAX - 1, step=1, infotext_key="overlap", group="context"),
    _f("closed_loop", "choice", ClosedLoop.R_MINUS_P, "Closed loop",
       "N: no loop, windows never wrap around the end. R-P: windows wrap (the end blends into "
       "the start), prompt travel does not. R+P: windows and prompt travel wrap. A: like R+P; "
       "clips no longer than the context are played forward then backward.",
       enum=ClosedLoop, infotext_key="closed_loop", group="context"),
    _f("fusion", "choice", Fusion.PYRAMID, "Window fusion",
       "How overlapping windows are combined: pyramid weights frames by distance from the "
       "window edge (smooth seams); flat averages them equally.",
       enum=Fusion, infotext_key="fusion", group="context"),
    _f("schedule", "choice", BetaSchedule.AUTO, "Beta schedule",
       "Noise schedule while the module is active. auto = the one the module family was trained "
       "with; linear / scaled_linear as named by diffusers (scaled_linear is SD's own). "
       "Infotext records the schedule actually used.", enum=BetaSchedule,
       infotext_key="schedule"),
    _f("prompt_interpolation", "choice", PromptInterpolation.SLERP, "Prompt interpolation",
       "How prompt-travel conditionings are blended between keyframes.",
       enum=PromptInterpolation, infotext_key="prompt_interpolation"),
    _f("freeinit_enable", "bool", False, "FreeInit",
       "Re-initialise the noise from the previous pass's low frequencies and sample again: "
       "steadier motion, at FreeInit iterations times the sampling time.",
       infotext_key="freeinit_enable", group="freeinit"),
    _f("freeinit_filter", "choice", FreeInitFilter.BUTTERWORTH, "FreeInit filter",
       "Low-pass filter that separates kept (low) from fresh (high) frequencies.",
       enum=FreeInitFilter, infotext_key="freeinit_filter", group="freeinit"),
    _f("freeinit_ds", "float", 0.25, "FreeInit spatial stop frequency",
       "Normalised spatial cut-off of the filter.", minimum=0, min_exclusive=True, maximum=1,
       step=0.125, infotext_key="freeinit_ds", group="freeinit"),
    _f("freeinit_dt", "float", 0.25, "FreeInit temporal stop frequency",
       "Normalised temporal cut-off of the filter.", minimum=0, min_exclusive=True, maximum=1,
       step=0.125, infotext_key="freeinit_dt", group="freeinit"),
    _f("freeinit_iters", "int", 3, "FreeInit iterations",
       "Sampling passes in total (the first one included).", minimum=2, maximum=5, step=1,
       infotext_key="freeinit_iters", group="freeinit"),
    _f("latent_power", "float", 1.0, "Latent power",
       "img2img: frame i keeps max(0, 1 - i^power / scale) of the init image's latent.",
       minimum=0.1, maximum=10, step=0.1, infotext_key="latent_power", img2img_only=True,
       group="img2img"),
    _f("latent_scale", "float", 32.0, "Latent scale",
       "img2img: frames over which the init image fades out (see Latent power).",
       minimum=1, maximum=128, step=1, infotext_key="latent_scale", img2img_only=True,
       group="img2img"),
    _f("latent_power_last", "float", 1.0, "Latent power (last frame)",
       "img2img with a last frame: the same curve, mirrored from the last frame.",
       minimum=0.1, maximum=10, step=0.1, infotext_key="latent_power_last", img2img_only=True,
       group="img2img"),
    _f("latent_scale_last", "float", 32.0, "Latent scale (last frame)",
       "img2img with a last frame: frames over which the last image fades in.",
       minimum=1, maximum=128, step=1, infotext_key="latent_scale_last", img2img_only=True,
       group="img2img"),
    _f("last_frame", "image", None, "Last frame",
       "img2img: optional image the video should end on.", img2img_only=True, group="img2img",
       xyz=False),
    _f("video_source", "path", None, "Video source",
       "Video whose frames (decoded frame-exactly; every one unless the frame selection options pick some) feed "
       "the ControlNet units that have no input of their own: a server path inside WebUI's data folder or "
       "Settings > AnimateDiff > input folders, or base64 (API); the UI uploads one.",
       group="controlnet", xyz=False),
    _f("video_path", "path", None, "Video path",
       "Server-side folder of frame images (natural order, one size) for ControlNet units that have no input; "
       "inpaint units read its image/ and mask/ sub-folders.",
       group="controlnet", xyz=False),
    _f("mask_path", "path", None, "Mask path",
       "Server-side folder of per-frame masks for ControlNet inpaint units (matched to the frames by order).",
       group="controlnet", xyz=False),
    _f("interp", "choice", FrameInterpolation.OFF, "Frame interpolation",
       "Make frames between the generated ones: RIFE (built in; its weights go into the motion-module folder) or "
       "FILM (through the Deforum extension, which must be installed). Every format, the PNG frames and the API "
       "get the interpolated frames; a failure saves the video without interpolation and says why.",
       enum=FrameInterpolation, infotext_key="interp", group="interp"),
    _f("interp_x", "int", 10, "Interpolation factor",
       "Replace each input frame with X interpolated output frames: N frames give N*X frames. Each frame is "
       "followed by X-1 frames towards the next; after the last frame, X-1 frames towards the first in closed "
       "loops (R-P, R+P, A), else the last frame is held. 0 and 1 add nothing.", minimum=0, maximum=60, step=1,
       infotext_key="interp_x", group="interp"),
    _f("request_id", "request_id", None, "Request id",
       "API: appended to output file names as -<id>; empty = none.", api_only=True,
       group="api", xyz=False),
    _f("keep_audio", "bool", True, "Keep the source's audio",
       "MP4/WEBM outputs carry the video source's audio track, trimmed to the clip, when the video plays at "
       "the source's rate (FPS 0 or that rate); at another FPS the audio is left out with a note.",
       infotext_key="keep_audio", group="controlnet", xyz=False),
    _f("window_mode", "choice", WindowMode.UNET, "Window mode",
       "unet: the whole UNet runs per context window (memory bounded by the context length). motion_module: "
       "the UNet runs once per video over every frame and only the motion modules' attention is windowed "
       "(each frame's spatial layers run once per step, in chunks of the context length: faster for long "
       "videos; the UNet's skip features of every frame stay in memory).",
       enum=WindowMode, infotext_key="window_mode", group="context"),
    _f("freenoise", "bool", False, "FreeNoise",
       "Long videos: frames past the first context window start from a shuffled copy of earlier frames' "
       "noise (FreeNoise rescheduling), for steadier long clips.", infotext_key="freenoise", group="context"),
    _f("motion_scale", "float", 1.0, "Motion scale",
       "Multiplies what each motion module adds to the UNet (its output minus its input): 1 = as trained, "
       "0 = the motion modules have no effect, above 1 = stronger motion.", minimum=0, maximum=2, step=0.05,
       infotext_key="motion_scale"),
    _f("motion_scale_keyframes", "keyframes", "", "Motion scale keyframes",
       "A motion scale per frame as 'frame: scale' pairs like '0: 1, 16: 0.4, 31: 1.2' (frames from 0), "
       "replacing Motion scale when given. Linear between keyframes, held before the first and after the last "
       "(closed loops R+P/A past one window wrap around). Empty = Motion scale for every frame.",
       infotext_key="motion_scale_keyframes", xyz=False),
    _f("interp_fps", "float", 0.0, "Interpolated FPS",
       "Playback rate of the interpolated video; 0 = FPS x Interpolation factor, so the video keeps its duration "
       "(and kept audio its sync).", minimum=0, maximum=240, step=1, infotext_key="interp_fps", group="interp"),
    _f("skip_first_frames", "int", 0, "Skip first frames",
       "Video source or frames folder: drop this many frames from the start (counted after Force rate). The "
       "clip's audio starts at the first kept frame; skipping every frame is an error.", minimum=0,
       maximum=1_000_000, step=1, infotext_key="skip_first_frames", group="controlnet"),
    _f("select_every_nth", "int", 1, "Select every nth frame",
       "Video source or frames folder: of the frames left after skipping, keep frames 0, n, 2n and so on. "
       "With FPS 0 the video plays at the source's rate / n (or Force rate / n), in step with its audio.",
       minimum=1, maximum=1000, step=1, infotext_key="select_every_nth", group="controlnet"),
    _f("frame_load_cap", "int", 0, "Frame load cap",
       "Video source or frames folder: keep at most this many frames (after skipping and every nth); 0 = no cap.",
       minimum=0, maximum=1_000_000, step=1, infotext_key="frame_load_cap", group="controlnet"),
    _f("force_rate", "float", 0.0, "Force rate",
       "Video source: resample to this many frames per second by the frames' timestamps before skipping, "
       "dropping or repeating frames (frame-exact, also for variable-frame-rate videos); 0 = off. With FPS 0 "
       "the video plays at Force rate / Select every nth frame.", minimum=0, maximum=240, step=1,
       infotext_key="force_rate", group="controlnet"),
)

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
XYZ_ATTRIBUTE = "animatediff_xyz"  # where X/Y/Z-plot axes leave their overrides on the host's processing object
XYZ_FIELDS: tuple[FieldSpec, ...] = tuple(f for f in FIELDS if f.xyz and f.kind not in ("image", "path", "formats"))
XYZ_PREFIX = "[AnimateDiff] "  # every axis is named "[AnimateDiff] <label>"
XYZ_SCRIPT_MODULES = ("xyz_grid.py", "scripts.xyz_grid")  # A1111 loads scripts/xyz_grid.py under its file name
FIELD_BY_NAME: dict[str, FieldSpec] = {f.name: f for f in FIELDS}
# Keys the reference's constructor accepted for its own internal state; ignored without error.
IGNORED_KEYS: frozenset[str] = frozenset({"is_i2i_batch", "video_default", "prompt_scheduler"})


def xyz_script_module(scripts_data: Iterable[Any]) -> Any | None:
    """The loaded X/Y/Z-plot script module among the host's script entries (``script_class``, ``module``)."""
    return next((entry.module for entry in scripts_data
                 if getattr(entry.script_class, "__module__", None) in XYZ_SCRIPT_MODULES), None)


def _xyz_setter(name: str) -> Callable[[Any, Any, Any], None]:
    def apply(p: Any, value: Any, _values: Any) -> None:  # the raw value: parsed in before_process
        setattr(p, XYZ_ATTRIBUTE, {**(getattr(p, XYZ_ATTRIBUTE, None) or {}), name: value})
    return apply


def _listed(values: list[str]) -> Callable[[], list[str]]:
    return lambda: list(values)


def add_xyz_axes(xyz: Any, model_choices: Callable[[], list[str]]) -> list[str]:
    """Append an axis per ``XYZ_FIELDS`` entry to the X/Y/Z-plot script module ``xyz`` (its ``axis_options``
    list, built with its ``AxisOption`` class); returns the labels added.

    Labels already in the list are skipped, so the host may call it from several points (at import and
    again once every script is loaded) and each axis is still there exactly once. An axis's ``apply``
    leaves ``{field: raw value}`` in ``p``'s ``XYZ_ATTRIBUTE``, which ``before_process`` parses.
    """
    present = {str(getattr(option, "label", "")) for option in xyz.axis_options}
    added = []
    for spec in XYZ_FIELDS:
        label = XYZ_PREFIX + spec.label
        if label in present:
            continue
        fixed = spec.xyz_choices()
        choices = model_choices if spec.kind == "model" else None if fixed is None else _listed(fixed)
        xyz.axis_options.append(xyz.AxisOption(label, spec.xyz_type, _xyz_setter(spec.name), choices=choices))
        added.append(label)
    return added


def _build_key_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for spec in FIELDS:
        for key in (spec.name, *spec.aliases):
            assert key.casefold() not in index, key
            index[key.casefold()] = spec.name
    return index


_KEY_INDEX = _build_key_index()


def canonical_name(key: str) -> str | None:
    """The field name for a key or alias (case-insensitive), or None when unknown."""
    return _KEY_INDEX.get(key.strip().casefold())


def known_keys_text() -> str:
    """All accepted keys, aliases in brackets, for error messages."""
    return ", ".join(f"{s.name} ({'/'.join(s.aliases)})" if s.aliases else s.name for s in FIELDS)


def fields_markdown() -> str:
    """The parameter table for the README, generated from ``FIELDS``."""
    rows = ["| # | field | aliases | type | default | allowed | meaning |",
            "|---|---|---|---|---|---|---|"]
    for i, s in enumerate(FIELDS):
        default = s.to_api(s.default)
        notes = " (img2img only)" if s.img2img_only else ""
        notes += " (API only)" if s.api_only else ""
        cells = [str(i), f"`{s.name}`", ", ".join(f"`{a}`" for a in s.aliases),
                 s.kind, f"`{json.dumps(default)}`", s.allowed_text(), s.help + notes]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)
