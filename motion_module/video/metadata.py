"""Generation parameters ("infotext") inside output files: how they are written and read back.

One carrier per format, chosen so that A1111's PNG Info tab reads PNG, GIF and WEBP outputs:

* PNG: a ``parameters`` text chunk (Pillow writes iTXt when the text is not latin-1).
* GIF: the comment extension, UTF-8 bytes.
* WEBP: EXIF ``UserComment`` = ``b"UNICODE\\0"`` + UTF-16-BE text, with TIFF type UNDEFINED,
  which is what ``piexif.helper.UserComment.load`` (used by A1111's ``read_info_from_image``)
  decodes. Pillow's
  own ``Exif`` writer would store the nested tag as BYTE, which piexif returns as a tuple and A1111
  then fails on, so the small EXIF block is assembled here with ``struct``.
* MP4 / WEBM: container ``comment`` tag (``ffmpeg -metadata comment=...``), read back by running
  ``ffmpeg -i FILE -f ffmetadata -`` and un-escaping its output.
* TXT: the file is the text.

Only the standard library, PIL and the ffmpeg binary of imageio-ffmpeg are used.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from PIL import Image

from motion_module.errors import OutputError

EXIF_IFD_POINTER = 0x8769
USER_COMMENT = 0x9286
_UNICODE_PREFIX = b"UNICODE\x00"
_ASCII_PREFIX = b"ASCII\x00\x00\x00"


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg (never a system ffmpeg assumption)."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - imageio[ffmpeg] is a hard dependency
        raise OutputError("imageio-ffmpeg is missing: run `pip install imageio-ffmpeg`.") from exc
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as exc:  # pragma: no cover - depends on the installation
        raise OutputError(
            f"no ffmpeg binary found ({exc}); reinstall imageio-ffmpeg or set IMAGEIO_FFMPEG_EXE."
        ) from exc


def exif_user_comment(text: str) -> bytes:
    """EXIF block (``b"Exif\\0\\0"`` + big-endian TIFF) holding only ``UserComment`` = *text*.

    Layout: TIFF header (8 bytes), IFD0 with one entry pointing to the Exif IFD (18 bytes), the Exif
    IFD with one UNDEFINED entry (18 bytes), then the comment bytes at offset 44.
    """
    data = _UNICODE_PREFIX + text.encode("utf-16-be")
    exif_ifd_offset = 8 + 2 + 12 + 4
    data_offset = exif_ifd_offset + 2 + 12 + 4
    tiff = b"MM" + struct.pack(">HI", 42, 8)
    tiff += struct.pack(">HHHII", 1, EXIF_IFD_POINTER, 4, 1, exif_ifd_offset) + struct.pack(">I", 0)
    tiff += struct.pack(">HHHII", 1, USER_COMMENT, 7, len(data), data_offset) + struct.pack(">I", 0)
    return b"Exif\x00\x00" + tiff + data


def decode_user_comment(raw: bytes | tuple[int, ...] | str) -> str | None:
    """Text of an EXIF ``UserComment`` value as Pillow returns it (8-byte charset prefix + body)."""
    if isinstance(raw, str):
        return raw
    data = bytes(raw)
    prefix, body = data[:8], data[8:]
    if prefix == _UNICODE_PREFIX:
        return body.decode("utf-16-be", errors="replace")
    if prefix == _ASCII_PREFIX:
        return body.decode("ascii", errors="replace")
    text = data.decode("utf-8", errors="ignore").strip("\x00")
    return text or None


def parse_ffmetadata(text: str) -> dict[str, str]:
    """Global section of an FFMETADATA1 document as a dict with lower-case keys.

    ffmpeg escapes ``=``, ``;``, ``#``, ``\\`` and newline with a backslash; an escaped newline is a
    newline inside the value. Parsing stops at the first ``[SECTION]`` header.
    """
    entries: list[tuple[str, str]] = []
    key: list[str] | None = None
    buf: list[str] = []
    escaped = False
    at_line_start = True
    skipping = False
    for ch in text:
        if skipping:  # inside a comment line
            skipping = ch != "\n"
            at_line_start = ch == "\n"
            continue
        if escaped:
            buf.append(ch)
            escaped, at_line_start = False, False
            continue
        if at_line_start and ch in ";#":
            skipping = True
            continue
        if at_line_start and ch == "[":
            break
        at_line_start = False
        if ch == "\\":
            escaped = True
        elif ch == "=" and key is None:
            key, buf = buf, []
        elif ch == "\n":
            if key is not None:
                entries.append(("".join(key), "".join(buf)))
            key, buf, at_line_start = None, [], True
        else:
            buf.append(ch)
    if key is not None:
        entries.append(("".join(key), "".join(buf)))
    return {k.lower(): v for k, v in entries}


def read_container_tags(path: Path, timeout: float = 60.0) -> dict[str, str]:
    """Global container tags of a video file, through ``ffmpeg -i FILE -f ffmetadata -``."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(path),
           "-f", "ffmetadata", "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OutputError(f"could not run ffmpeg to read {path}: {exc}") from exc
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip()
        raise OutputError(f"ffmpeg cannot read {path}: {message or 'unknown error'}")
    return parse_ffmetadata(proc.stdout.decode("utf-8", errors="replace"))


def sniff_media(head: bytes) -> str | None:
    """``png``/``gif``/``webp``/``mp4`` (any ISO BMFF: MP4, MOV)/``webm`` (any Matroska) from a file's first
    16 bytes, or None (the one magic-byte check for images and videos)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    return None


def sniff_format(path: Path) -> str:
    """``gif``/``png``/``webp``/``mp4``/``webm``/``txt``/``png-folder`` from the first bytes."""
    if path.is_dir():
        return "png-folder"
    with open(path, "rb") as fh:
        kind = sniff_media(fh.read(16))
    if kind is not None:
        return kind
    if path.suffix.lower() == ".txt":
        return "txt"
    raise OutputError(f"{path} is not a GIF, PNG, WEBP, MP4, WEBM or TXT file written by "
                      "AnimateDiff.")


def _read_image_infotext(path: Path, fmt: str) -> str | None:
    with Image.open(path) as im:
        if fmt == "png":
            value = im.info.get("parameters")
            return None if value is None else str(value)
        if fmt == "gif":
            comment = im.info.get("comment")
            if isinstance(comment, bytes):
                return comment.decode("utf-8", errors="replace")
            return comment
        raw = im.getexif().get_ifd(EXIF_IFD_POINTER).get(USER_COMMENT)
        return None if raw is None else decode_user_comment(raw)


def read_infotext_with_format(path: Path) -> tuple[str, str | None]:
    """``(format, infotext or None)`` of one output; a PNG folder is read via its first frame."""
    path = Path(path)
    if not path.exists():
        raise OutputError(f"{path} does not exist; pass the path of a saved output file.")
    fmt = sniff_format(path)
    if fmt == "png-folder":
        first = sorted(path.glob("*.png"))
        return fmt, (_read_image_infotext(first[0], "png") if first else None)
    if fmt == "txt":
        return fmt, path.read_text(encoding="utf-8")
    if fmt in ("png", "gif", "webp"):
        try:
            return fmt, _read_image_infotext(path, fmt)
        except (OSError, SyntaxError, ValueError) as exc:
            raise OutputError(f"{path} is a damaged {fmt.upper()} file: {exc}") from exc
    return fmt, read_container_tags(path).get("comment")
