"""Saving a generated clip: names, safe publication, the public output API and ``info`` command.

``save_video(frames, out_dir, seed=..., formats=..., infotext=..., options=...)`` writes every
requested format (GIF, MP4, WEBP, WEBM, PNG frame folder, TXT sidecar; see ``encoders``) with the
infotext embedded, and returns the paths.

Safety rules:
* Names are ``<seq:05>-<seed>[-<request_id>]``; ``seq`` is one more than the highest sequence number
  found in the folder (files, folders, locks and temporaries alike) and is reserved by creating
  ``.<seq:05>.lock`` with O_EXCL, so two writers never share a number.
* Each format is written under a hidden temporary name (``.<name>.*.tmp``) in the output folder.
  Only when every format succeeded are they published: files by hard link (which fails rather
  than replace an existing file; ``os.replace`` after an existence check where the filesystem has
  no hard links), the PNG folder by rename. Any error or interrupt removes the temporaries and
  the published files of this call, so there is never a partial file or a partial set.
* Every target is checked to resolve inside the output folder.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from PIL import Image

from motion_module.errors import OutputError, ParameterError
from motion_module.params.coerce import REQUEST_ID_PATTERN, is_int
from motion_module.params.fields import FILE_FORMATS
from motion_module.video.encoders import WRITERS, EncodeOptions, frame_durations, frames_array, gif_delays
from motion_module.video.metadata import read_infotext_with_format
from motion_module.video.upload import S3Options, upload_s3

__all__ = ["FORMATS", "EncodeOptions", "S3Options", "SavedVideo", "frame_durations", "gif_delays",
           "info_of", "ping_pong", "read_infotext", "save_video", "upload_s3",
           "validate_request_id"]

logger = logging.getLogger("animatediff")

FORMATS = FILE_FORMATS
_EXTENSIONS = {"GIF": ".gif", "MP4": ".mp4", "WEBP": ".webp", "WEBM": ".webm", "PNG": "",
               "TXT": ".txt"}
_SEQ = re.compile(r"\.?(\d{5,})(?=[-.])")
T = TypeVar("T")


@dataclass(frozen=True)
class SavedVideo:
    """What ``save_video`` wrote: ``files`` maps "GIF"/"MP4"/... to paths (PNG: frame folder)."""

    name: str
    directory: Path
    files: dict[str, Path] = field(default_factory=dict)


def validate_request_id(value: str | None) -> str | None:
    """``None`` means "no id"; a string must be 1-64 characters from [A-Za-z0-9_-].

    The empty string is rejected: it is an explicit value that cannot be used, not "no id".
    """
    if value is None:
        return None
    if not isinstance(value, str) or not REQUEST_ID_PATTERN.fullmatch(value):
        raise ParameterError("request_id", f"{value!r} is not allowed: use 1 to 64 characters "
                             "from A-Z, a-z, 0-9, '_' and '-', or leave it unset (None).")
    return value


def ping_pong(frames: Sequence[T]) -> list[T]:
    """Frames followed by their reverse without repeating either end: 2L-2 frames for L >= 2.

    L = 1 gives the single frame, L = 2 both frames unchanged (nothing lies between the ends).
    """
    items = list(frames)
    return items + items[-2:0:-1]


def normalize_formats(formats: Iterable[str]) -> list[str]:
    """Upper-case, de-duplicated formats in the canonical order GIF, MP4, WEBP, WEBM, PNG, TXT."""
    if isinstance(formats, str):
        formats = [formats]
    wanted = set()
    for name in formats:
        key = name.upper() if isinstance(name, str) else name
        if key not in FORMATS:
            raise ParameterError("format", f"unknown output format {name!r}; choose from "
                                 f"{', '.join(FORMATS)}.")
        wanted.add(key)
    if not wanted:
        raise ParameterError("format", "no output format selected; choose from "
                             f"{', '.join(FORMATS)}.")
    return [name for name in FORMATS if name in wanted]


# ----------------------------------------------------------------------- naming and publishing
def _prepare_dir(out_dir: Path | str) -> Path:
    try:
        folder = Path(out_dir).expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {out_dir}: {exc}; check the path "
                          "and its permissions.") from exc
    if not folder.is_dir():
        raise OutputError(f"the output path {folder} is not a folder; choose another one.")
    return folder


def _inside(folder: Path, path: Path) -> Path:
    if path.parent.resolve() != folder or path.name in ("", ".", ".."):
        raise OutputError(f"refusing to write {path}: it is outside the output folder {folder}.")
    return path


def _highest_seq(folder: Path) -> int:
    highest = -1
    with os.scandir(folder) as entries:
        for entry in entries:
            match = _SEQ.match(entry.name)
            if match:
                highest = max(highest, int(match.group(1)))
    return highest


def _reserve(folder: Path, suffix: str, exts: list[str]) -> tuple[str, Path]:
    """Reserve the next free sequence number: return (name, lock file)."""
    seq = _highest_seq(folder) + 1
    for _ in range(1000):
        lock = _inside(folder, folder / f".{seq:05d}.lock")
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            seq += 1
            continue
        name = f"{seq:05d}-{suffix}"
        if not any(os.path.lexists(folder / (name + ext)) for ext in exts):
            return name, lock
        os.unlink(lock)
        seq += 1
    raise OutputError(f"could not find a free file name in {folder}; clean up the folder.")


def _temp_target(folder: Path, name: str, fmt: str) -> Path:
    """Create a new hidden temporary file (PNG: folder) with the usual umask-derived mode."""
    for _ in range(100):
        path = _inside(folder, folder / f".{name}.{secrets.token_hex(4)}.{fmt.lower()}.tmp")
        try:
            if fmt == "PNG":
                os.mkdir(path, 0o777)
            else:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return path
        except FileExistsError:
            continue
    raise OutputError(f"could not create a temporary file in {folder}; clean up the folder.")


def _publish(temp: Path, final: Path) -> None:
    """Move a finished temporary to its final name without ever replacing an existing entry."""
    if os.path.lexists(final):
        raise OutputError(f"{final} appeared while saving; it was left untouched, save again.")
    if temp.is_dir():
        os.rename(temp, final)
        return
    try:
        os.link(temp, final)
    except FileExistsError as exc:
        raise OutputError(f"{final} appeared while saving; it was left untouched, "
                          "save again.") from exc
    except OSError:  # filesystem without hard links (FAT, some network shares)
        os.replace(temp, final)
        return
    os.unlink(temp)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            for child in path.iterdir():
                child.unlink()
            path.rmdir()
        elif os.path.lexists(path):
            path.unlink()
    except OSError as exc:  # pragma: no cover - best effort cleanup
        logger.warning("AnimateDiff: could not remove temporary %s: %s", path, exc)


def _check_seed(seed: object) -> int:
    if not is_int(seed) or seed < 0:
        raise ParameterError("seed", f"must be an integer >= 0 (the resolved seed), got {seed!r}.")
    return seed


def save_video(frames: Sequence[Image.Image], out_dir: Path | str, *, seed: int,
               formats: Iterable[str], infotext: str, options: EncodeOptions | None = None,
               request_id: str | None = None) -> SavedVideo:
    """Write one clip in every requested format; all or nothing.

    ``frames``: N >= 1 PIL images of one size (any mode; alpha is composited over black).
    ``formats``: names from ``FORMATS``, any case. ``request_id``: None or 1-64 of [A-Za-z0-9_-].
    Raises ``ParameterError`` for bad arguments and ``OutputError`` when writing fails; in both
    cases nothing is left in the output folder.
    """
    wanted = normalize_formats(formats)
    suffix = str(_check_seed(seed))
    request_id = validate_request_id(request_id)
    if request_id is not None:
        suffix += f"-{request_id}"
    if not isinstance(infotext, str):
        raise ParameterError("infotext", f"must be a string, got {type(infotext).__name__}.")
    options = EncodeOptions() if options is None else options
    if not isinstance(options, EncodeOptions):
        raise ParameterError("options", "must be an EncodeOptions instance.")
    array = frames_array(frames)
    folder = _prepare_dir(out_dir)
    name, lock = _reserve(folder, suffix, [_EXTENSIONS[f] for f in wanted])
    temps: dict[str, Path] = {}
    published: list[Path] = []
    try:
        for fmt in wanted:
            temps[fmt] = _temp_target(folder, name, fmt)
            try:
                WRITERS[fmt](array, temps[fmt], infotext, options)
            except (OutputError, ParameterError):
                raise
            except Exception as exc:
                raise OutputError(f"writing the {fmt} failed: {exc}. Nothing was saved; "
                                  f"try again without {fmt} or check the disk.") from exc
        files = {}
        for fmt in wanted:
            final = _inside(folder, folder / (name + _EXTENSIONS[fmt]))
            _publish(temps[fmt], final)
            del temps[fmt]
            published.append(final)
            files[fmt] = final
        published = []
    finally:
        for path in [*temps.values(), *published]:
            _remove(path)
        _remove(lock)
    logger.info("AnimateDiff: saved %s (%s) in %s", name, ", ".join(wanted), folder)
    return SavedVideo(name=name, directory=folder, files=files)


# ----------------------------------------------------------------------------- reading back
def read_infotext(path: Path | str) -> str | None:
    """The generation parameters embedded in an output (file, or PNG frame folder), or None."""
    return read_infotext_with_format(Path(path))[1]


_OUR_ENTRY = re.compile(r"(?:^|[\s,])AnimateDiff: ")


def info_of(path: Path) -> tuple[str, str]:
    """``(format, infotext)`` of one AnimateDiff output; OutputError (naming the file) for anything else."""
    if path.is_dir() and not any(path.glob("*.png")):
        raise OutputError(f"{path} is a folder without PNG frames; pass an output file or a PNG frame folder")
    try:
        fmt, text = read_infotext_with_format(path)
    except OSError as exc:
        raise OutputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError):
        raise OutputError(f"{path} is not a text file written by AnimateDiff") from None
    if text is None or not _OUR_ENTRY.search(text):
        what = "no generation parameters" if text is None else "no AnimateDiff parameters"
        raise OutputError(f"{path}: {what} stored; this is not an AnimateDiff output "
                          "(pass a GIF/MP4/WEBM/WEBP/PNG/TXT file this extension wrote)")
    return fmt, text
