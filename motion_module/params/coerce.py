"""Coercion of single parameter values: the rules shared by UI args, API dicts, infotext and XYZ.

Every function takes the field name (for the error message) and the raw value, and returns the
canonical Python value or raises :class:`ParameterError` naming the field, the value received and
what is allowed. Coercion happens only where it is unambiguous: ``"16"`` -> 16, ``16.0`` -> 16,
``"8.0"`` -> 8.0, ``"true"`` -> True; ``16.5`` for an integer, ``True`` for a number or a mode, and
``"nan"`` for a float are errors.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import re
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

from PIL import Image

from motion_module.errors import ParameterError

E = TypeVar("E", bound=Enum)

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")  # the one rule for request ids (file-name safe)
_DATA_URL = re.compile(r"data:([\w/+.-]*)(?:;[\w=.+-]+)*;base64,", re.IGNORECASE)
_WINDOWS_DRIVE = re.compile(r"[A-Za-z]:[\\/]")
REQUEST_ID_MAX = 64


def describe(value: Any) -> str:
    """A short, safe description of a received value for error messages: repr (cut) and type."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def coerce_bool(name: str, value: Any) -> bool:
    """bool, the ints 0/1, or one of true/false/1/0/yes/no/on/off (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ParameterError(name, f"expected true or false, got {describe(value)}. "
                         "Send a JSON boolean (true/false).")


def _range_text(lo: float | None, hi: float | None, lo_exclusive: bool) -> str:
    if lo is None and hi is None:
        return "any value"
    if hi is None:
        return f"a value {'>' if lo_exclusive else '>='} {lo:g}"
    if lo is None:
        return f"a value <= {hi:g}"
    return f"a value {'>' if lo_exclusive else '>='} {lo:g} and <= {hi:g}"


def _check_range(name: str, value: float, lo: float | None, hi: float | None,
                 lo_exclusive: bool = False) -> None:
    too_low = lo is not None and (value <= lo if lo_exclusive else value < lo)
    too_high = hi is not None and value > hi
    if too_low or too_high:
        raise ParameterError(name, f"{value!r} is out of range: allowed is "
                             f"{_range_text(lo, hi, lo_exclusive)}. Choose a value in that range.")


def is_int(value: object) -> TypeGuard[int]:
    """True for an ``int`` that is not a ``bool`` (the one integer test of the engine's strict checks)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: object, low: int, high: int) -> None:
    """Strict: ``value`` must already be an int (not a bool) from ``low`` to ``high``; no conversion."""
    if not is_int(value) or not low <= value <= high:
        raise ParameterError(name, f"must be an integer from {low} to {high}, got {value!r}.")


def coerce_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """An integer; integral floats and numeric strings ("16", "16.0") are accepted."""
    allowed = f"a whole number ({_range_text(lo, hi, False)})"
    number: Any = value
    if isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise ParameterError(name, f"expected {allowed}, got {describe(value)}.") from None
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise ParameterError(name, f"expected {allowed}, got {describe(value)}.")
    if isinstance(number, float):
        if not math.isfinite(number) or not number.is_integer():
            raise ParameterError(name, f"expected {allowed}, got {describe(value)}, "
                                 "which is not a whole number. Round it first.")
        number = int(number)
    _check_range(name, number, lo, hi)
    return int(number)


def coerce_float(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                 lo_exclusive: bool = False) -> float:
    """A finite float; ints and numeric strings ("8", "8.0") are accepted; bools are not."""
    allowed = f"a finite number ({_range_text(lo, hi, lo_exclusive)})"
    number: Any = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ParameterError(name, f"expected {allowed}, got {describe(value)}.") from None
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise ParameterError(name, f"expected {allowed}, got {describe(value)}.")
    result = float(number)
    if not math.isfinite(result):
        raise ParameterError(name, f"expected {allowed}, got {describe(value)}.")
    _check_range(name, result, lo, hi, lo_exclusive)
    return result


def coerce_choice(name: str, value: Any, enum_cls: type[E],
                  unsupported: dict[str, str] | None = None) -> E:
    """One member of a str-valued enum, matched case-insensitively on its value.

    ``unsupported`` maps values that exist in the enum (for compatibility) but are refused to
    the reason given to the user.
    """
    allowed = [str(m.value) for m in enum_cls if str(m.value) not in (unsupported or {})]
    member = None
    if isinstance(value, enum_cls):
        member = value
    elif isinstance(value, str):
        folded = value.strip().casefold()
        member = next((m for m in enum_cls if str(m.value).casefold() == folded), None)
    if member is None:
        raise ParameterError(name, f"expected one of {', '.join(allowed)}, got {describe(value)}.")
    if unsupported and str(member.value) in unsupported:
        raise ParameterError(name, f"{member.value!r} is not supported: "
                             f"{unsupported[str(member.value)]} Allowed: {', '.join(allowed)}.")
    return member


def coerce_choice_set(name: str, value: Any, enum_cls: type[E]) -> tuple[E, ...]:
    """A non-empty set of enum members, returned de-duplicated in the enum's declaration order.

    Accepts a list/tuple/set of strings or members, or one string with items separated by
    commas, plus signs or spaces ("GIF", "gif,mp4", "GIF+PNG"), case-insensitively.
    """
    allowed = ", ".join(str(m.value) for m in enum_cls)
    items: Iterable[Any]
    if isinstance(value, (str, enum_cls)):
        items = [value]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = value
    else:
        raise ParameterError(name, f"expected a list of formats from {allowed} (or a comma-"
                             f"separated string), got {describe(value)}.")
    chosen: set[E] = set()
    for item in items:
        if isinstance(item, enum_cls):
            chosen.add(item)
            continue
        if not isinstance(item, str):
            raise ParameterError(name, f"each item must be one of {allowed}, "
                                 f"got {describe(item)}.")
        for part in re.split(r"[,+\s]+", item.strip()):
            if part:
                chosen.add(coerce_choice(name, part, enum_cls))
    if not chosen:
        raise ParameterError(name, f"choose at least one of {allowed}, got {describe(value)}.")
    return tuple(m for m in enum_cls if m in chosen)


def _reject_nul(name: str, text: str) -> None:
    if "\x00" in text:
        raise ParameterError(name, f"contains a NUL character, got {describe(text)}. "
                             "Remove it; file names cannot contain NUL.")


def coerce_model(name: str, value: Any) -> str:
    """A motion-module file name relative to the model folder; "" (or blank) means automatic."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ParameterError(name, f"expected a file name (string), got {describe(value)}.")
    if not value.strip():
        return ""
    _reject_nul(name, value)
    parts = re.split(r"[\\/]", value)
    if value.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(value) or ".." in parts:
        raise ParameterError(name, f"must be a file name relative to the motion-module folder "
                             f"without '..' or an absolute path, got {describe(value)}. "
                             "Put the file into the model folder and give its name.")
    return value


def coerce_path(name: str, value: Any) -> str | None:
    """An optional server-side path (not checked for existence); "" and None mean none."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ParameterError(name, f"expected a server-side path (string) or null, "
                             f"got {describe(value)}.")
    _reject_nul(name, value)
    return value


def coerce_request_id(name: str, value: Any) -> str | None:
    """None/"" (no id) or 1-64 characters from A-Z a-z 0-9 _ -; integers are turned into text."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not REQUEST_ID_PATTERN.fullmatch(value):
        raise ParameterError(name, f"expected 1-{REQUEST_ID_MAX} characters from A-Z, a-z, 0-9, "
                             f"'_' and '-' (or an empty string for none), got {describe(value)}.")
    return value


def split_data_url(text: str) -> tuple[str | None, str]:
    """``(media type, payload)`` of a ``data:<type>[;k=v...];base64,<payload>`` URL (the type lower-cased,
    "" when absent), or ``(None, text)`` when ``text`` does not start with one."""
    match = _DATA_URL.match(text)
    if match is None:
        return None, text
    return match.group(1).lower(), text[match.end():]


def decode_base64(text: str) -> bytes:
    """Standard or URL-safe base64; whitespace is ignored and padding optional. Raises ``binascii.Error``
    (a ``ValueError``) for anything else."""
    text = "".join(text.split()).replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    return base64.b64decode(text, validate=True)


def within_roots(path: str | os.PathLike[str], roots: Iterable[str | os.PathLike[str]]) -> bool:
    """Whether ``path`` is one of ``roots`` or inside one, symlinks resolved on both sides (the one
    allowed-folder check for file inputs)."""
    resolved = Path(path).resolve()
    return any(resolved == root or resolved.is_relative_to(root) for root in (Path(r).resolve() for r in roots))


def _b64_bytes(name: str, text: str) -> bytes:
    text = text.strip()
    if text.lower().startswith(("http://", "https://")):
        raise ParameterError(name, "URLs are not fetched; send the image itself as base64 "
                             "(optionally as a data: URL).")
    try:
        return decode_base64(split_data_url(text)[1])
    except (binascii.Error, ValueError):
        raise ParameterError(name, "is not valid base64. Send the image file's bytes encoded "
                             "as base64, e.g. 'data:image/png;base64,iVBOR...'.") from None


def coerce_image(name: str, value: Any) -> Image.Image | None:
    """None/"", a PIL image, raw image-file bytes, or base64 (a data: URL prefix is allowed)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, str):
        data = _b64_bytes(name, value)
    else:
        raise ParameterError(name, f"expected an image as a base64 string, got {describe(value)}.")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # Pillow raises many types for bad data; all mean "not an image"
        raise ParameterError(name, f"the decoded data ({len(data)} bytes) is not an image Pillow "
                             f"can read ({type(exc).__name__}: {exc}). Send a PNG or JPEG "
                             "file encoded as base64.") from exc
    return image


def image_to_base64(image: Image.Image) -> str:
    """PNG-encode an image as plain base64 (no data: prefix), the form the API sends back."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# ----------------------------------------------------------------- motion-scale keyframes (text form)
# ``frame: scale`` pairs, e.g. ``0: 1, 16: 0.4``; motion_scale.py interpolates them (see its docstring).
_KEYFRAMES_FIELD = "motion_scale_keyframes"
MOTION_SCALE_MAX = 2.0
_PAIR = re.compile(r"^\s*(\d+)\s*:\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")

Keyframes = tuple[tuple[int, float], ...]


def parse_keyframes(text: str) -> Keyframes:
    """``"0: 1, 16: 0.5"`` -> ``((0, 1.0), (16, 0.5))``, sorted by frame; ``""`` -> ``()``."""
    keys: dict[int, float] = {}
    for item in (part for part in re.split(r"[,;\n]", text) if part.strip()):
        match = _PAIR.match(item)
        if match is None:
            raise ParameterError(_KEYFRAMES_FIELD, f"{item.strip()!r} is not 'frame: scale' (e.g. '0: 1, 16: 0.5')")
        frame, scale = int(match.group(1)), float(match.group(2))
        if not 0.0 <= scale <= MOTION_SCALE_MAX:
            raise ParameterError(_KEYFRAMES_FIELD,
                                 f"scale {scale:g} at frame {frame} is outside 0..{MOTION_SCALE_MAX:g}")
        if frame in keys:
            raise ParameterError(_KEYFRAMES_FIELD, f"frame {frame} has two keyframes")
        keys[frame] = scale
    return tuple(sorted(keys.items()))


def keyframes_text(keys: Keyframes) -> str:
    """The canonical text of ``keys`` (what infotext and the UI show)."""
    return ", ".join(f"{frame}: {scale:g}" for frame, scale in keys)
