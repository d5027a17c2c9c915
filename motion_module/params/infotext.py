"""The "AnimateDiff" infotext entry: writing it, and reading it back for paste.

WebUI stores generation parameters as ``Key: value, Key: value`` and JSON-quotes a whole value
that contains ``,``, ``:`` or a newline. AnimateDiff writes all its parameters into one such
value, itself a ``key: value, key: value`` list::

    AnimateDiff: "enable: True, model: mm_sd15_v3.safetensors, model_hash: 1a2b3c4d, ..."

Inside it, a value is JSON-quoted whenever it is empty, has surrounding blanks or contains
``,`` ``:`` ``"`` ``\\`` or a control character, so any file name round-trips (the reference
split on ", " and ": " and gave up on such names). Reading is tolerant: the reference's
v1.13.1/master entries (``batch_size``, ``interp``, ``interp_x``, ``mm_hash``, ``version``, no
``enable``) paste, unknown keys and bad values are skipped unless ``strict=True``.

Written always: every field with an ``infotext_key`` (resolved values: overlap -1 and
video_length 0 replaced), ``model_hash`` and ``family`` (as detected) after ``model``, ``schedule_used`` (the beta
schedule actually applied, e.g. what "auto" chose) after ``schedule`` when known, ``version``
last when given. Those are informational and never pasted; ``schedule`` keeps the user's
choice, because "auto" resolves again to the same schedule for the same model, while a family's
exact schedule (e.g. AnimateDiff-XL's beta_end 0.020) may have no name of its own.
Written only when relevant: freeinit_filter/ds/dt/iters (when FreeInit is on), latent_* (img2img), interp,
interp_x and interp_fps (when interpolation is on; an older entry's ``interp: Off, interp_x: 10`` pastes),
skip_first_frames, select_every_nth, frame_load_cap and force_rate (the frame selection, when not the default).
Never written: last_frame, request_id, video_source, video_path, mask_path.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from motion_module.errors import ParameterError
from motion_module.params.fields import (
    FIELD_BY_NAME,
    FIELDS,
    BetaSchedule,
    FrameInterpolation,
    WindowMode,
    canonical_name,
)
from motion_module.params.request import AnimateDiffParams

INFOTEXT_KEY = "AnimateDiff"
PASTE_PREFIX = "AnimateDiff "
PASTE_FIELDS: tuple[str, ...] = tuple(s.name for s in FIELDS if s.infotext_key is not None)
# Keys that are recognised in old or current entries but are not pasted into a field.
SELECTION_FIELDS = frozenset({"skip_first_frames", "select_every_nth", "frame_load_cap", "force_rate"})
NOT_PASTED_KEYS = frozenset({"model_hash", "mm_hash", "family", "schedule_used", "version", "request_id"})

_KEY = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_ ]*?)\s*:\s*")
_NEXT_ENTRY = re.compile(r",\s*(?=[A-Za-z_][A-Za-z0-9_ ]*?\s*:)")
_AFTER_QUOTED = re.compile(r"\s*(?:,|\Z)")
_SPECIAL = re.compile(r'[,:"\\\x00-\x1f\x7f\x85\u2028\u2029]')
_DECODER = json.JSONDecoder()


def quote_value(text: str) -> str:
    """``text`` as is when it is safe inside the entry, else as a JSON string."""
    if text and text == text.strip() and not _SPECIAL.search(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _written(spec_name: str, params: AnimateDiffParams, img2img: bool) -> bool:
    spec = FIELD_BY_NAME[spec_name]
    if spec.infotext_key is None or (spec.img2img_only and not img2img):
        return False
    if spec_name == "keep_audio":
        return bool(params.video_source)
    if spec_name == "window_mode":  # written when not the default, so older entries stay as they were
        return params.window_mode != WindowMode.UNET
    if spec_name == "freenoise":
        return params.freenoise
    if spec_name == "motion_scale":
        return params.motion_scale != 1.0
    if spec_name == "motion_scale_keyframes":
        return bool(params.motion_scale_keyframes)
    if spec_name in SELECTION_FIELDS:  # written when not the default, so entries without a selection stay as they were
        return getattr(params, spec_name) != spec.default
    if spec.group == "interp":  # only when on, so entries without interpolation stay as they were
        return params.interp is not FrameInterpolation.OFF
    return not (spec.group == "freeinit" and spec_name != "freeinit_enable"
                and not params.freeinit_enable)


def to_infotext(params: AnimateDiffParams, *, model: str | None = None,
                model_hash: str | None = None, family: str | None = None,
                schedule_used: BetaSchedule | str | None = None,
                frames: int | None = None, context: int | None = None, img2img: bool = False,
                version: str | None = None) -> str:
    """The value of ``p.extra_generation_params["AnimateDiff"]`` for one video.

    ``model``: the file actually loaded (when ``params.model`` was "" = automatic); ``family``: as detected;
    ``schedule_used``: a label of the beta schedule actually applied (informational);
    ``frames`` / ``context``: the frame count and context length actually used, if the run
    changed them.
    """
    resolved = params.resolved(frames=frames, context=context)
    entries: list[tuple[str, str]] = []
    for spec in FIELDS:
        if not _written(spec.name, resolved, img2img):
            continue
        assert spec.infotext_key is not None
        text = spec.to_text(getattr(resolved, spec.name))
        if spec.name == "model" and model is not None:
            text = model
        entries.append((spec.infotext_key, text))
        if spec.name == "model":
            entries += [(k, v) for k, v in (("model_hash", model_hash), ("family", family)) if v]
        if spec.name == "schedule" and schedule_used is not None:
            entries.append(("schedule_used", str(getattr(schedule_used, "value", schedule_used))))
    if version:
        entries.append(("version", version))
    return ", ".join(f"{key}: {quote_value(text)}" for key, text in entries)


def _unwrap(value: str) -> str:
    text = value.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            inner = json.loads(text)
        except ValueError:
            return text
        return inner.strip() if isinstance(inner, str) else text
    return text


def _parse_error(text: str, pos: int, what: str) -> ParameterError:
    return ParameterError("infotext", f"{what} at position {pos}: {text[pos:pos + 40]!r}. "
                          "Expected 'key: value, key: value' with JSON-quoted values.")


def parse_infotext(value: str, *, strict: bool = False) -> dict[str, str]:
    """Split an AnimateDiff entry into ``{key: value}`` (strings, quotes removed).

    Lenient by default: a malformed piece is skipped up to the next comma; with ``strict`` it
    raises ``ParameterError``. A value WebUI left JSON-quoted as a whole is unwrapped first.
    """
    text = _unwrap(value)
    result: dict[str, str] = {}
    pos = 0
    while text[pos:].strip():
        match = _KEY.match(text, pos)
        error = None
        if match is None:
            error = _parse_error(text, pos, "no 'key:'")
        else:
            key, pos = match.group(1).strip(), match.end()
            if text.startswith('"', pos):
                try:
                    val, end = _DECODER.raw_decode(text, pos)
                except ValueError:
                    val, end = None, pos
                after = _AFTER_QUOTED.match(text, end)
                if isinstance(val, str) and after is not None:
                    result[key], pos = val, after.end()
                    continue
                error = _parse_error(text, pos, f"bad quoted value for {key!r}")
            else:
                nxt = _NEXT_ENTRY.search(text, pos)
                result[key] = text[pos:nxt.start() if nxt else len(text)].strip()
                pos = nxt.end() if nxt else len(text)
                continue
        if strict:
            raise error
        comma = text.find(",", pos)
        pos = len(text) if comma < 0 else comma + 1
    return result


def params_from_infotext(value: str | Mapping[str, Any] | None, *, strict: bool = False
                         ) -> dict[str, Any]:
    """``{field: typed value}`` for the pasteable fields found in an AnimateDiff entry.

    ``value`` is the entry's text, or WebUI's parsed-parameters dict (its "AnimateDiff" key is
    used). ``enable`` defaults to True when the entry exists (the reference's master omitted it).
    """
    if isinstance(value, Mapping):
        value = value.get(INFOTEXT_KEY)
    if not value or not isinstance(value, str):
        return {}
    raw = parse_infotext(value, strict=strict)
    fields: dict[str, Any] = {}
    for key, text in raw.items():
        if key.casefold() in NOT_PASTED_KEYS:
            continue
        name = canonical_name(key)
        spec = FIELD_BY_NAME.get(name) if name else None
        if spec is None or spec.infotext_key is None:
            if strict:
                raise ParameterError(key, "is not an AnimateDiff infotext key. Known: "
                                     f"{', '.join(PASTE_FIELDS)}.")
            continue
        try:
            fields[spec.name] = spec.coerce(text)
        except ParameterError:
            if strict:
                raise
    if raw:
        fields.setdefault("enable", True)
    return fields


def paste_values(value: str | Mapping[str, Any] | None, *, strict: bool = False
                 ) -> dict[str, Any]:
    """``{"AnimateDiff <field>": UI value}`` to merge into WebUI's pasted-parameters dict."""
    return {PASTE_PREFIX + name: FIELD_BY_NAME[name].to_ui(val)
            for name, val in params_from_infotext(value, strict=strict).items()}


def params_with_infotext(value: str | Mapping[str, Any] | None,
                         base: AnimateDiffParams | None = None, *, strict: bool = False
                         ) -> AnimateDiffParams:
    """``base`` (default: the defaults) with the pasteable fields of an entry applied."""
    return dataclasses.replace(base or AnimateDiffParams(),
                               **params_from_infotext(value, strict=strict))


def paste_value(params: Mapping[str, Any], name: str) -> Any:
    """The UI value of field ``name`` in WebUI's parsed-parameters dict (PNG Info paste or the API's
    ``infotext``): an expanded ``AnimateDiff <name>`` key wins; an infotext without an AnimateDiff
    entry turns ``enable`` off (None for the other fields: leave them); a damaged entry gives None."""
    key = PASTE_PREFIX + name
    if key in params:
        return params[key]
    if INFOTEXT_KEY not in params:
        return False if name == "enable" else None
    try:
        return paste_values(params).get(key)
    except (ParameterError, ValueError):  # a damaged entry must not break pasting the rest
        return None
