"""``AnimateDiffParams``: the one validated parameter object, and every way of building it.

Entry points (all validate through ``FIELDS`` in ``param_fields.py``):

* ``from_script_args(args)`` - what WebUI hands ``before_process(p, *args)``: ``()``, ``(None,)``,
  ``(SomeClass,)`` (no AnimateDiff args: disabled defaults), ``(AnimateDiffParams,)``,
  ``({...},)`` (API dict in slot 0; later slots are UI defaults and are ignored),
  ``({..}, {..}, ...)`` (one-key dicts spread over slots, ADW#498: merged) or positional values.
* ``from_api(value)`` - a dict, a list of dicts (merged; a key given twice is an error), a list
  of positional values, or None.
* ``from_positional(values, names=None)`` - UI args in ``FIELD_NAMES`` order (or ``names``).
* ``params.replace_field(name, value)`` - XYZ-plot overrides, validated the same way.
* ``AnimateDiffParams(...)`` itself validates and coerces in ``__post_init__``, so
  ``dataclasses.replace`` can never build an invalid object either.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from motion_module.errors import ParameterError
from motion_module.params.coerce import describe, is_int
from motion_module.params.fields import (
    FIELD_BY_NAME,
    FIELD_NAMES,
    FIELDS,
    IGNORED_KEYS,
    BetaSchedule,
    ClosedLoop,
    FieldSpec,
    FrameInterpolation,
    FreeInitFilter,
    Fusion,
    OutputFormat,
    PromptInterpolation,
    WindowMode,
    canonical_name,
    known_keys_text,
)

__all__ = [
    "FIELDS",
    "FIELD_NAMES",
    "AnimateDiffParams",
    "BetaSchedule",
    "ClosedLoop",
    "FieldSpec",
    "FrameInterpolation",
    "FreeInitFilter",
    "Fusion",
    "OutputFormat",
    "PromptInterpolation",
    "from_api",
    "from_positional",
    "from_script_args",
    "alwayson_script",
    "script_slice",
    "selectable_script_runs",
    "merge_dicts",
]


@dataclass(frozen=True)
class AnimateDiffParams:
    """All AnimateDiff parameters of one request, validated. Field order = positional order.

    See ``param_fields.FIELDS`` for each field's meaning, range and aliases.
    """

    enable: bool = False
    model: str = ""
    formats: tuple[OutputFormat, ...] = (OutputFormat.GIF, OutputFormat.PNG)
    video_length: int = 0
    fps: float = 8.0
    loop_number: int = 0
    context: int = 16
    stride: int = 1
    overlap: int = -1
    closed_loop: ClosedLoop = ClosedLoop.R_MINUS_P
    fusion: Fusion = Fusion.PYRAMID
    schedule: BetaSchedule = BetaSchedule.AUTO
    prompt_interpolation: PromptInterpolation = PromptInterpolation.SLERP
    freeinit_enable: bool = False
    freeinit_filter: FreeInitFilter = FreeInitFilter.BUTTERWORTH
    freeinit_ds: float = 0.25
    freeinit_dt: float = 0.25
    freeinit_iters: int = 3
    latent_power: float = 1.0
    latent_scale: float = 32.0
    latent_power_last: float = 1.0
    latent_scale_last: float = 32.0
    last_frame: Image.Image | None = field(default=None, hash=False)
    video_source: str | None = None
    video_path: str | None = None
    mask_path: str | None = None
    interp: FrameInterpolation = FrameInterpolation.OFF
    interp_x: int = 10
    request_id: str | None = None
    keep_audio: bool = True
    window_mode: WindowMode = WindowMode.UNET
    freenoise: bool = False
    motion_scale: float = 1.0
    motion_scale_keyframes: str = ""
    interp_fps: float = 0.0
    skip_first_frames: int = 0
    select_every_nth: int = 1
    frame_load_cap: int = 0
    force_rate: float = 0.0

    def __post_init__(self) -> None:
        for spec in FIELDS:
            object.__setattr__(self, spec.name, spec.coerce(getattr(self, spec.name)))
        if self.overlap >= self.context:
            raise ParameterError("overlap", f"must be -1 (= context // 4) or between 0 and "
                                 f"context - 1 = {self.context - 1}, got {self.overlap}. "
                                 "Lower overlap or raise context.")

    # ----- derived values -------------------------------------------------------------------
    @property
    def frames(self) -> int:
        """Frames in the video: ``video_length``, or ``context`` when it is 0."""
        return self.frames_for(self.context)

    def frames_for(self, context: int) -> int:
        """Frames in the video when the context length is ``context`` (possibly capped)."""
        return self.video_length if self.video_length > 0 else context

    @property
    def resolved_overlap(self) -> int:
        """Overlap between windows: ``overlap``, or ``context // 4`` when it is -1."""
        return self.overlap_for(self.context)

    def overlap_for(self, context: int) -> int:
        """Overlap for a (possibly capped) context length, always within ``0..context-1``."""
        return context // 4 if self.overlap < 0 else min(self.overlap, context - 1)

    @property
    def run_context(self) -> int:
        """The context length a run uses: ``context``, at most the video's frames (``run.plan_run``)."""
        return min(self.context, self.frames)

    @property
    def batch_size(self) -> int:
        """The context length as it runs, under the reference's name (read by ControlNet)."""
        return self.run_context

    def resolved(self, *, frames: int | None = None, context: int | None = None
                 ) -> AnimateDiffParams:
        """A copy with ``video_length`` and ``overlap`` replaced by the values actually used."""
        ctx = self.context if context is None else context
        return dataclasses.replace(self, context=ctx, overlap=self.overlap_for(ctx),
                                   video_length=self.frames_for(ctx) if frames is None else frames)

    # ----- conversions -----------------------------------------------------------------------
    def replace_field(self, name: str, value: Any) -> AnimateDiffParams:
        """A copy with one field (name or alias) set from a raw value, e.g. an XYZ axis string."""
        canonical = canonical_name(name) if isinstance(name, str) else None
        if canonical is None:
            raise ParameterError(str(name), f"unknown parameter. Known: {known_keys_text()}.")
        return dataclasses.replace(self, **{canonical: value})

    def to_api_dict(self) -> dict[str, Any]:
        """Plain JSON with canonical keys; ``from_api(p.to_api_dict()) == p``."""
        return {s.name: s.to_api(getattr(self, s.name)) for s in FIELDS}

    def to_ui_args(self) -> list[Any]:
        """Values as the UI components hold them, in ``FIELD_NAMES`` order."""
        return [s.to_ui(getattr(self, s.name)) for s in FIELDS]


def _duplicate_key_error(name: str, keys: list[str]) -> ParameterError:
    return ParameterError(name, f"given more than once, as {', '.join(repr(k) for k in keys)}, "
                          "with different values. Send each parameter once.")


def _from_mapping(data: Mapping[Any, Any]) -> AnimateDiffParams:
    values: dict[str, Any] = {}
    seen: dict[str, list[str]] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ParameterError(repr(key), f"parameter names must be strings. "
                                 f"Known: {known_keys_text()}.")
        if key.strip().casefold() in IGNORED_KEYS:
            continue
        name = canonical_name(key)
        if name is None:
            raise ParameterError(key, f"unknown parameter. Known: {known_keys_text()}; "
                                 f"ignored for compatibility: {', '.join(sorted(IGNORED_KEYS))}.")
        seen.setdefault(name, []).append(key)
        if name in values:
            spec = FIELD_BY_NAME[name]
            if spec.coerce(values[name]) != spec.coerce(value):
                raise _duplicate_key_error(name, seen[name])
        values[name] = value
    return AnimateDiffParams(**values)


def merge_dicts(dicts: Sequence[Mapping[Any, Any]]) -> dict[Any, Any]:
    """Merge a list of dicts (ADW#498: ``[{"enable": true}, {"model": ...}]``) into one.

    A key present in two dicts is an error, even with equal values, because the list form is
    ambiguous about which one wins.
    """
    merged: dict[Any, Any] = {}
    for part in dicts:
        for key, value in part.items():
            if key in merged:
                raise ParameterError(str(key), "appears in more than one of the dicts in the "
                                     "args list. Send one dict: {\"args\": [{...all keys...}]}.")
            merged[key] = value
    return merged


def from_positional(values: Sequence[Any], names: Sequence[str] | None = None
                    ) -> AnimateDiffParams:
    """Build from positional values in ``FIELD_NAMES`` order (or ``names``); missing = default."""
    order = tuple(FIELD_NAMES if names is None else names)
    if len(values) > len(order):
        raise ParameterError("args", f"got {len(values)} positional values but at most "
                             f"{len(order)} are accepted, in this order: {', '.join(order)}. "
                             "Send one dict with named keys instead.")
    unknown = [n for n in order if n not in FIELD_BY_NAME]
    if unknown:
        raise ParameterError(unknown[0], f"unknown parameter. Known: {known_keys_text()}.")
    return AnimateDiffParams(**dict(zip(order, values, strict=False)))


def from_api(value: Any) -> AnimateDiffParams:
    """Build from what an API client sent as the AnimateDiff arg (or args)."""
    if value is None:
        return AnimateDiffParams()
    if isinstance(value, AnimateDiffParams):
        return value
    if isinstance(value, Mapping):
        return _from_mapping(value)
    if isinstance(value, (list, tuple)):
        dicts = [v for v in value if isinstance(v, Mapping)]
        if dicts and len(dicts) == len(value):
            return _from_mapping(merge_dicts(dicts))
        if dicts:
            raise ParameterError("args", "mixes dicts and positional values. Send one dict: "
                                 "{\"args\": [{\"enable\": true, \"model\": ...}]}.")
        return from_positional(value)
    raise ParameterError("args", f"expected a dict of named parameters, got {describe(value)}. "
                         "Send {\"args\": [{\"enable\": true, ...}]}.")


def _json_object(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            return json.loads(value)
        except ValueError:
            raise ParameterError("args", "looks like JSON but cannot be parsed. Send a JSON "
                                 "object, not a string holding one.") from None
    return value


def from_script_args(args: Sequence[Any] | None) -> AnimateDiffParams:
    """Normalise what WebUI passes to ``before_process(p, *args)`` for this script."""
    if not args:
        return AnimateDiffParams()
    first = _json_object(args[0])
    if first is None or isinstance(first, type):
        return AnimateDiffParams()  # no AnimateDiff args in the request: a placeholder default
    if isinstance(first, AnimateDiffParams):
        return first
    if isinstance(first, Mapping):
        leading: list[Mapping[Any, Any]] = []
        for item in (first, *args[1:]):  # one-key dicts spread over slots (ADW#498);
            if not isinstance(item, Mapping):  # the slots after them hold UI defaults
                break
            leading.append(item)
        return from_api(leading[0] if len(leading) == 1 else leading)
    if isinstance(first, (list, tuple)):
        return from_api(first)
    return from_positional(list(args))


def selectable_script_runs(script_args: Sequence[Any] | None) -> bool:
    """True while a selectable script (X/Y/Z plot, prompt matrix, ...) runs the request: WebUI's first script
    argument is then its 1-based index (0 or none: no script). Such a script draws with the images it gets."""
    first = script_args[0] if script_args else 0
    return is_int(first) and first > 0


def alwayson_script(runner: Any, title: str) -> Any | None:
    """The always-on script titled ``title`` (case-insensitive) in a host's script runner (A1111: ``p.scripts``),
    or None when the runner has no such script."""
    return next((script for script in getattr(runner, "alwayson_scripts", None) or []
                 if str(script.title()).lower() == title.lower()), None)


def script_slice(runner: Any, script_args: Sequence[Any] | None, title: str) -> tuple[Any, ...] | None:
    """The arguments of the always-on script titled ``title`` (case-insensitive) in a host's script runner
    (A1111: ``p.scripts`` and ``p.script_args``), or None when the runner has no such script."""
    script = alwayson_script(runner, title)
    return None if script is None else tuple((script_args or ())[script.args_from:script.args_to])
