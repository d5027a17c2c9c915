"""Video-to-video input: decode a video source frame-exactly, read frame folders, mux audio back.

Decoding runs the ffmpeg binary of imageio-ffmpeg (no ffprobe ships with it). Every frame of the
first video stream comes out in stream order: the frame-rate mode is ``passthrough`` (``-fps_mode``,
``-vsync`` on ffmpeg < 5.1) and the timestamps are renumbered (``setpts=N/TB``) before the
muxer, so frames with equal or variable timestamps are neither dropped nor duplicated and no
near-duplicate filter (``mpdecimate``) is applied. Frame rates are read from ``ffmpeg -i``'s
stream line (printed with two decimals) and made exact: ``29.97`` becomes ``30000/1001`` when
an NTSC rate or the stream time base explains it.

Frame folders hold one image per frame, ordered naturally (``2.png`` before ``10.png``); an
inpaint folder has ``image/`` and ``mask/`` sub-folders matched by order. ``video_source`` over
the API is a server path or base64 (raw or a ``data:`` URL), see ``materialize_video_source``.
"""

from __future__ import annotations

import binascii
import functools
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, NoReturn

from PIL import Image

from motion_module.errors import InputError, OutputError, ParameterError
from motion_module.params.coerce import decode_base64, is_int, split_data_url, within_roots
from motion_module.video.metadata import ffmpeg_exe, sniff_media

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
NTSC_BASES = (12, 15, 24, 30, 48, 60, 120, 240)  # rates base * 1000/1001 that ffmpeg prints rounded
MAX_VIDEO_BYTES = 512 * 1024 * 1024  # decoded size limit of a base64 video_source
_BASE64_MIN_CHARS = 1024  # longer strings of base64 characters are data, not a path
_PROBE_TIMEOUT_S = 60
_AUDIO_CODECS = {".mp4": ("mp4", ["-c:a", "aac", "-b:a", "192k", "-movflags", "+faststart"]),
                 ".webm": ("webm", ["-c:a", "libopus", "-b:a", "128k"])}


@dataclass(frozen=True)
class VideoInfo:
    """What ``ffmpeg -i`` reports about a file's first video stream.

    ``size`` is the coded (width, height) in pixels; ``fps`` the average frame rate in frames per
    second (the stream's ``r_frame_rate`` when no average is given; ``None`` when neither is);
    ``duration_s`` the container duration in seconds (centisecond precision) or ``None``.
    """

    path: Path
    size: tuple[int, int]
    fps: Fraction | None
    r_frame_rate: Fraction | None
    has_audio: bool
    duration_s: float | None


@dataclass(frozen=True)
class VideoFrames:
    """Decoded frames of a video: RGB images in memory, or PNG files when extracted to a folder.

    ``size`` is (width, height) in pixels of the decoded frames (after ffmpeg's autorotation);
    ``fps`` frames per second as an exact fraction (``None`` when the source gives none). A frame
    selection (``frame_selection.py``) sets ``indices``, the source frame index of each frame, and
    ``start``, the first frame's time in seconds from the source's first frame; ``fps`` is then the
    rate the selected frames stand for.
    """

    source: Path
    frames: tuple[Image.Image, ...]
    paths: tuple[Path, ...]
    size: tuple[int, int]
    fps: Fraction | None
    has_audio: bool
    indices: tuple[int, ...] | None = None  # None: every frame from the first, in order
    start: Fraction = Fraction(0)

    def __len__(self) -> int:
        return max(len(self.frames), len(self.paths))

    @property
    def duration(self) -> Fraction | None:
        """Clip length in seconds: frames / fps."""
        return None if self.fps is None else Fraction(len(self)) / self.fps


# --------------------------------------------------------------------------------- probing
def _check_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputError(f"{what} {path} does not exist; check the path (a file on the server).")
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder, not a video file; give a video file "
                         "(a folder of frames goes into Video path).")
    if not path.is_file():
        raise InputError(f"{what} {path} is not a regular file; give a video file.")
    return path


def _number(text: str) -> Fraction:
    """ffmpeg's printed rate or time base ("29.97", "30k", "1k") as an exact fraction."""
    return Fraction(text[:-1]) * 1000 if text.endswith("k") else Fraction(text)


def exact_frame_rate(printed: str, time_base_hz: str | None = None) -> Fraction:
    """Exact frame rate (frames/s) behind ffmpeg's rounded ``fps``/``tbr`` text, e.g. "29.97".

    ffmpeg prints rates with two decimals. A printed value with decimals is matched first against the
    NTSC rates base * 1000/1001 ("29.97" -> 30000/1001, so a true 2997/100 reads as 30000/1001), then
    against ``ticks / k`` (integer k, reduced denominator <= 1001) for the stream's time base
    ``time_base_hz`` in ticks per second (e.g. "1k": "142.86" -> 1000/7); otherwise the printed
    decimal is taken as is ("12.5" -> 25/2).
    """
    value = _number(printed)
    if value <= 0:
        raise ValueError(f"frame rate must be above 0, got {printed!r}")
    if value.denominator == 1:
        return value
    shown = f"{float(value):.2f}"
    for base in NTSC_BASES:
        candidate = Fraction(base * 1000, 1001)
        if f"{float(candidate):.2f}" == shown:
            return candidate
    if time_base_hz:
        ticks = _number(time_base_hz)
        k = round(ticks / value)
        if k > 0 and f"{float(ticks / k):.2f}" == shown and (ticks / k).denominator <= 1001:
            return ticks / k
    return value


_STREAM = re.compile(r"^\s*Stream #\d+:\d+\S*: (Video|Audio|Subtitle|Data|Attachment): (.*)$",
                     re.MULTILINE)
_SIZE = re.compile(r"(?<![\w/])(\d+)x(\d+)(?=[\s,\[]|$)")
_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


def _rate(details: str, unit: str) -> str | None:
    match = re.search(rf"([\d.]+k?) {unit}\b", details)
    return match.group(1) if match else None


def parse_probe(path: Path, stderr: str) -> VideoInfo:
    """``VideoInfo`` from the stderr of ``ffmpeg -i path`` (raises ``InputError`` if no video)."""
    if "Input #0" not in stderr:
        reason = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        raise InputError(f"ffmpeg cannot read {path} ({reason}); it is not a video file or it is "
                         "damaged: re-export it as MP4 (H.264) or WEBM.")
    streams = _STREAM.findall(stderr)
    videos = [d for kind, d in streams if kind == "Video" and "(attached pic)" not in d]
    has_audio = any(kind == "Audio" for kind, _ in streams)
    size = _SIZE.search(videos[0]) if videos else None
    if size is None or not int(size.group(1)) or not int(size.group(2)):
        found = ", ".join(kind for kind, _ in streams) or "none"
        raise InputError(f"{path} has no video stream (streams: {found}); give a video file.")
    tbn, avg, tbr = (_rate(videos[0], unit) for unit in ("tbn", "fps", "tbr"))
    r_rate = exact_frame_rate(tbr, tbn) if tbr else None
    fps = exact_frame_rate(avg, tbn) if avg else r_rate
    match = _DURATION.search(stderr)
    duration = None if match is None else \
        int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3))
    return VideoInfo(path, (int(size.group(1)), int(size.group(2))), fps, r_rate, has_audio, duration)


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Size, frame rate, audio presence and duration of a video file (``ffmpeg -i``)."""
    source = _check_file(Path(path), "video file")
    return parse_probe(source, _probe_text(source))


def _probe_text(source: Path) -> str:
    """stderr of ``ffmpeg -i source`` (stream list; ffmpeg exits 1 as no output is given)."""
    try:
        proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(source)],
                              capture_output=True, timeout=_PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise InputError(f"ffmpeg took too long to read {source}; check that it is a media file.") from exc
    return proc.stderr.decode("utf-8", "replace")


@dataclass(frozen=True)
class VideoSummary:
    """What the panel shows for an uploaded video: its exact rate (``None`` when the file gives none), the
    number of frames a video source decodes to (every frame, as ``read_video_frames`` reads them), whether
    it has sound, and its (width, height)."""

    fps: Fraction | None
    frames: int
    has_audio: bool
    size: tuple[int, int]


def count_frames(path: str | os.PathLike[str]) -> int:
    """How many frames ``read_video_frames`` gives for the video: its first video stream decoded to nothing,
    with the same stream choice and frame-rate mode (every frame, none dropped or repeated)."""
    source = _check_file(Path(path), "video file")
    exe = ffmpeg_exe()
    cmd = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(source), "-map", "0:V:0",
           *_passthrough_args(exe), "-f", "null", "-progress", "pipe:1", "-nostats", "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, check=False,
                              timeout=_PROBE_TIMEOUT_S * 10)
    except subprocess.TimeoutExpired as exc:
        raise InputError(f"ffmpeg took too long to count the frames of {source}.") from exc
    if proc.returncode != 0:
        _decode_failed(source, proc.returncode, proc.stderr)
    counts = re.findall(rb"^frame=(\d+)\s*$", proc.stdout, re.MULTILINE)
    if not counts:
        raise InputError(f"ffmpeg did not report the frames of {source}; re-export the video as MP4 (H.264).")
    return int(counts[-1])


def video_summary(path: str | os.PathLike[str]) -> VideoSummary:
    """The exact frame rate and frame count of a video file (and its sound and size), without keeping frames.

    Raises ``InputError`` for a missing file, a folder, a file ffmpeg cannot read or one without video.
    """
    info = probe_video(path)
    return VideoSummary(info.fps, count_frames(info.path), info.has_audio, info.size)


# --------------------------------------------------------------------------------- decoding
@functools.lru_cache(maxsize=4)
def _passthrough_args(exe: str) -> tuple[str, ...]:
    """``-fps_mode passthrough`` (ffmpeg >= 5.1), else the older ``-vsync passthrough``."""
    proc = subprocess.run([exe, "-hide_banner", "-h", "full"], capture_output=True, check=False,
                          timeout=_PROBE_TIMEOUT_S)
    if b"-fps_mode" in proc.stdout + proc.stderr:
        return ("-fps_mode", "passthrough")
    return ("-vsync", "passthrough")


def _decode_args(source: Path, limit: int | None) -> list[str]:
    """ffmpeg arguments up to the output: first video stream, every frame, RGB, new timestamps."""
    exe = ffmpeg_exe()
    args = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(source),
            "-map", "0:V:0", *_passthrough_args(exe), "-vf", "setpts=N/TB", "-pix_fmt", "rgb24"]
    if limit is not None:
        args += ["-frames:v", str(limit)]
    return args


def _read_ppm_stream(stream: IO[bytes]) -> Iterator[Image.Image]:
    """RGB images from ffmpeg's concatenated binary PPMs ("P6\\nW H\\n255\\n" + W*H*3 bytes)."""
    while magic := stream.readline():
        dims, maxval = stream.readline().split(), stream.readline().strip()
        if magic.strip() != b"P6" or len(dims) != 2 or maxval != b"255":
            raise InputError(f"unexpected frame header from ffmpeg: {magic!r} {dims!r} {maxval!r}")
        width, height = int(dims[0]), int(dims[1])
        data = stream.read(width * height * 3)
        if len(data) != width * height * 3:
            raise InputError("ffmpeg's frame output ended inside a frame; the video is truncated.")
        yield Image.frombytes("RGB", (width, height), data)


def _check_limit(limit: int | None) -> None:
    if limit is not None and (not is_int(limit) or limit < 1):
        raise ParameterError("video_length", f"the frame limit must be an integer >= 1, got {limit!r}.")


def _decode_in_memory(source: Path, limit: int | None) -> list[Image.Image]:
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen([*_decode_args(source, limit), "-c:v", "ppm", "-f", "image2pipe", "-"],
                                stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        try:
            frames = list(_read_ppm_stream(proc.stdout))
        finally:
            proc.stdout.close()
            returncode = proc.wait()
        if returncode != 0:
            errors.seek(0)
            _decode_failed(source, returncode, errors.read())
    return frames


def _decode_failed(source: Path, returncode: int, stderr: bytes) -> NoReturn:
    message = stderr.decode("utf-8", "replace").strip()[-1500:]
    raise InputError(f"ffmpeg failed to decode {source} (exit {returncode}): {message}; "
                     "re-export the video as MP4 (H.264) or WEBM.")


def _decode_to_folder(source: Path, dest_dir: Path, limit: int | None) -> list[Path]:
    if dest_dir.exists() and not dest_dir.is_dir():
        raise OutputError(f"frame folder {dest_dir} is a file; give an empty or new folder.")
    dest_dir.mkdir(parents=True, exist_ok=True)
    if any(dest_dir.iterdir()):
        raise OutputError(f"frame folder {dest_dir} is not empty; give an empty or new folder.")
    cmd = [*_decode_args(source, limit), "-start_number", "0", "-f", "image2", "-c:v", "png",
           str(dest_dir / "%05d.png")]
    proc = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        _decode_failed(source, proc.returncode, proc.stderr)
    return sorted(dest_dir.glob("*.png"), key=lambda p: natural_key(p.name))


def read_video_frames(path: str | os.PathLike[str], *, limit: int | None = None,
                      dest_dir: str | os.PathLike[str] | None = None) -> VideoFrames:
    """Every frame of the first video stream, in stream order, as RGB images.

    ``limit``: at most this many frames (the first ones). With ``dest_dir`` the frames are written
    there as ``00000.png``, ``00001.png``... (the folder must be empty or new) and returned as
    ``paths`` instead of images. Raises ``InputError`` for a missing file, a folder, a file ffmpeg
    cannot read, a file without a video stream, or a video that decodes to zero frames.
    """
    _check_limit(limit)
    info = probe_video(path)
    frames: list[Image.Image] = []
    paths: list[Path] = []
    if dest_dir is None:
        frames = _decode_in_memory(info.path, limit)
    else:
        paths = _decode_to_folder(info.path, Path(dest_dir), limit)
    if not frames and not paths:
        raise InputError(f"video {info.path} has a video stream but no frame could be decoded; "
                         "re-export it or choose another video.")
    if frames:
        size = frames[0].size
    else:
        with Image.open(paths[0]) as first:
            size = first.size
    return VideoFrames(info.path, tuple(frames), tuple(paths), size, info.fps, info.has_audio)


def extract_frames(path: str | os.PathLike[str], dest_dir: str | os.PathLike[str], *,
                   limit: int | None = None) -> list[Path]:
    """Write every frame of the video into ``dest_dir`` as 00000.png, 00001.png...; their paths."""
    return list(read_video_frames(path, limit=limit, dest_dir=dest_dir).paths)


# --------------------------------------------------------------------------------- frame folders
def natural_key(name: str) -> tuple[tuple[object, ...], str]:
    """Sort key ordering digit runs by value: "frame2.png" < "frame10.png" (case-insensitive)."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except OSError as exc:
        raise InputError(f"frame {path} is not a readable image ({exc}); remove or replace it.") from exc


def read_frame_folder(path: str | os.PathLike[str]) -> list[Path]:
    """Image files (``IMAGE_SUFFIXES``) of a frames folder in natural order, all of one size.

    Hidden files and other files are ignored. Raises ``InputError`` for a missing folder, a
    folder without images, an unreadable image, or frames of different sizes (naming two).
    """
    folder = Path(path)
    if not folder.is_dir():
        state = "is a file, not a folder" if folder.exists() else "does not exist"
        raise InputError(f"frames folder {folder} {state}; give a folder of frame images.")
    files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                    and p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: natural_key(p.name))
    if not files:
        raise InputError(f"frames folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                         "put the frames there or choose another folder.")
    first = _image_size(files[0])
    for other in files[1:]:
        size = _image_size(other)
        if size != first:
            raise InputError(f"frames in {folder} differ in size: {files[0].name} is "
                             f"{first[0]}x{first[1]}, {other.name} is {size[0]}x{size[1]}; "
                             "give frames of one size.")
    return files


def read_inpaint_folder(path: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """(image, mask) pairs from ``path/image`` and ``path/mask``, matched by natural order."""
    folder = Path(path)
    for sub in ("image", "mask"):
        if not (folder / sub).is_dir():
            raise InputError(f"inpaint frames folder {folder} needs the sub-folders image/ and mask/ "
                             f"({folder / sub} is missing).")
    images, masks = read_frame_folder(folder / "image"), read_frame_folder(folder / "mask")
    if len(images) != len(masks):
        raise InputError(f"inpaint frames folder {folder} has {len(images)} images but {len(masks)} "
                         "masks; give one mask per image.")
    return list(zip(images, masks, strict=True))


# --------------------------------------------------------------------------------- length
RATE_TOLERANCE = Fraction(1, 200)  # a requested rate this close to the source's is the source's (29.97 ~ 30000/1001)


def output_fps(requested: float, source: Fraction | None, default: float = 8.0) -> Fraction | float:
    """The playback rate: ``requested`` when above 0, else the source video's exact rate, else ``default``.

    A requested rate that equals the source's to the hundredth (less than 0.005 apart: 29.97 or the panel's
    29.97002997... for 30000/1001) is the source's exact rate, so the video and its audio play at its speed.
    """
    if requested > 0:
        if source is not None and abs(Fraction(requested) - source) < RATE_TOLERANCE:
            return source
        return requested
    return source if source is not None else default


def format_rate(rate: Fraction | float) -> str:
    """A frame rate for people: "12", "12.5", or "29.97 (30000/1001)" for a rate with no short decimal."""
    exact = Fraction(rate).limit_denominator(100_000)
    if exact.denominator == 1:
        return str(exact.numerator)
    shown = f"{float(exact):.2f}".rstrip("0").rstrip(".")
    return shown if Fraction(shown) == exact else f"{shown} ({exact.numerator}/{exact.denominator})"


def resolve_video_length(requested: int, sources: Mapping[str, int]) -> int:
    """Number of frames to generate. ``requested`` 0 means the shortest source.

    ``sources`` maps a name the user recognises (e.g. "unit 1 (video_source)") to its frame
    count. A source shorter than a requested length is a ``ParameterError`` naming it.
    """
    if not is_int(requested) or requested < 0:
        raise ParameterError("video_length", f"must be an integer >= 0, got {requested!r}.")
    if not sources:
        if requested == 0:
            raise ParameterError("video_length", "0 means 'as long as the shortest video source', "
                                 "but there is no video source; set the number of frames.")
        return requested
    name, count = min(sources.items(), key=lambda item: item[1])
    if count < 1:
        raise ParameterError("video_length", f"{name} has no frames; give it a video or frames.")
    if requested == 0:
        return count
    if count < requested:
        raise ParameterError("video_length", f"{name} has {count} frames, fewer than the {requested} "
                             f"requested; set the number of frames to {count} or less (0 uses the "
                             f"shortest source), or give {name} at least {requested} frames.")
    return requested


# --------------------------------------------------------------------------------- API input
_BASE64_CHARS = re.compile(r"^[A-Za-z0-9+/_=\s-]+$")
_SUFFIX_BY_TYPE = {"video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov",
                   "video/x-matroska": ".mkv", "image/gif": ".gif", "video/x-msvideo": ".avi"}


_SUFFIX_BY_KIND = {"mp4": ".mp4", "webm": ".mkv", "gif": ".gif"}


def _sniff_suffix(data: bytes) -> str:
    return _SUFFIX_BY_KIND.get(sniff_media(data[:16]) or "", ".video")


def _decode_base64(text: str, max_bytes: int) -> bytes:
    compact = re.sub(r"\s+", "", text)
    if len(compact) * 3 // 4 > max_bytes:
        raise ParameterError("video_source", f"the base64 video is larger than {max_bytes // 2**20} MiB; "
                             "send a shorter video or a server path.")
    if not _BASE64_CHARS.match(compact or "="):
        raise ParameterError("video_source", "is not valid base64 (characters outside A-Z a-z 0-9 + / - _ =); "
                             "send a server path, base64 or a data:video/...;base64, URL.")
    try:
        data = decode_base64(compact)
    except (binascii.Error, ValueError) as exc:
        raise ParameterError("video_source", f"is not valid base64 ({exc}); send a server path, "
                             "base64 or a data:video/...;base64, URL.") from exc
    if not data:
        raise ParameterError("video_source", "the base64 video is empty; send a video.")
    return data


def _checked_path(value: str, allowed_roots: Sequence[Path] | None) -> Path:
    path = Path(value).expanduser()
    if allowed_roots is not None and not within_roots(path, allowed_roots):
        roots = [Path(root).resolve() for root in allowed_roots]
        raise ParameterError("video_source", f"{value} is outside the folders videos may be read "
                             f"from ({', '.join(str(r) for r in roots) or 'none'}); move the video "
                             "there or send it as base64.")
    return _check_file(path, "video_source")


def materialize_video_source(value: str, tmp_dir: str | os.PathLike[str], *,
                             allowed_roots: Sequence[Path] | None = None,
                             max_bytes: int = MAX_VIDEO_BYTES) -> Path:
    """A readable video file for ``video_source``: a server path, or base64 written to ``tmp_dir``.

    Base64 is recognised as a ``data:...;base64,`` URL or as more than 1024 base64 characters; it
    is decoded (at most ``max_bytes`` bytes) into a new file in ``tmp_dir`` that the caller deletes.
    A path must be a regular file, inside one of ``allowed_roots`` when those are given (symlinks
    resolved). Errors: ``ParameterError`` (field ``video_source``) or ``InputError``.
    """
    if not isinstance(value, str) or not value.strip():
        raise ParameterError("video_source", "is empty; send a server path or a base64 video.")
    text = value.strip()
    mime, payload = split_data_url(text)
    if mime is None and (len(text) <= _BASE64_MIN_CHARS or not _BASE64_CHARS.match(text)):
        return _checked_path(text, allowed_roots)
    data = _decode_base64(payload, max_bytes)
    suffix = _SUFFIX_BY_TYPE.get(mime or "") or _sniff_suffix(data)
    folder = Path(tmp_dir)
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="animatediff-video-", suffix=suffix, dir=folder)
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    return Path(name)


# --------------------------------------------------------------------------------- audio
def _seconds(duration: Fraction) -> str:
    """Seconds for ffmpeg's ``-t``, rounded down to the microsecond (never longer than exact)."""
    micros = duration.numerator * 1_000_000 // duration.denominator
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def mux_audio(video_path: str | os.PathLike[str], audio_source: str | os.PathLike[str], *,
              frames: int, fps: Fraction, out_path: str | os.PathLike[str]) -> Path:
    """Write ``out_path``: the video stream of ``video_path`` as is plus the source's audio.

    The audio is encoded as AAC (``.mp4``) or Opus (``.webm``), trimmed to the clip's duration
    ``frames / fps`` seconds; the video is copied (``-c:v copy``), so its exact frame rate and
    timestamps are kept. ``out_path`` may equal ``video_path`` (replaced atomically).
    """
    dest = Path(out_path)
    if dest.suffix.lower() not in _AUDIO_CODECS:
        raise ParameterError("formats", f"audio can be added to MP4 or WEBM only, not {dest.name}.")
    if not is_int(frames) or frames < 1:
        raise ParameterError("video_length", f"must be an integer >= 1, got {frames!r}.")
    if not isinstance(fps, (int, Fraction)) or fps <= 0:
        raise ParameterError("fps", f"must be a Fraction above 0, got {fps!r}.")
    if not dest.parent.is_dir():
        raise OutputError(f"folder {dest.parent} does not exist; create it before adding audio.")
    video = _check_file(Path(video_path), "video file")
    audio = probe_video_audio(audio_source)
    muxer, codec = _AUDIO_CODECS[dest.suffix.lower()]
    handle, name = tempfile.mkstemp(prefix=".animatediff-mux-", suffix=dest.suffix, dir=dest.parent)
    os.close(handle)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(video),
           "-t", _seconds(Fraction(frames) / Fraction(fps)), "-i", str(audio),
           "-map", "0:v:0", "-map", "1:a:0", "-map_metadata", "0", "-c:v", "copy", *codec,
           "-f", muxer, "-y", name]
    try:
        proc = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, check=False,
                              timeout=_PROBE_TIMEOUT_S + frames)
        if proc.returncode != 0:
            message = proc.stderr.decode("utf-8", "replace").strip()[-1500:]
            raise OutputError(f"ffmpeg failed to add the audio of {audio} to {dest.name} "
                              f"(exit {proc.returncode}): {message}")
        os.replace(name, dest)
    except subprocess.TimeoutExpired as exc:
        raise OutputError(f"ffmpeg took too long to add the audio to {dest.name}.") from exc
    finally:
        Path(name).unlink(missing_ok=True)
    return dest


def probe_video_audio(path: str | os.PathLike[str]) -> Path:
    """``path`` if ffmpeg finds an audio stream in it, else ``InputError`` saying what to do."""
    source = _check_file(Path(path), "audio source")
    stderr = _probe_text(source)
    if "Input #0" not in stderr or not any(kind == "Audio" for kind, _ in _STREAM.findall(stderr)):
        raise InputError(f"audio source {source} has no audio stream ffmpeg can read; turn audio "
                         "off or give a video with sound.")
    return source
