"""How outputs are written and uploaded, as validated options: :class:`EncodeOptions` (the encoders) and
:class:`S3Options` (the upload). A leaf module, so that the settings table, the encoders and the upload can
all import it (``video_encoders`` and ``upload`` re-export these names)."""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from fractions import Fraction
from urllib.parse import urlsplit

from motion_module.errors import ParameterError
from motion_module.params.coerce import check_int, is_int

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")
X264_TUNES = ("film", "animation", "grain", "stillimage", "fastdecode", "zerolatency", "psnr",
              "ssim")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ParameterError(name, f"must be true or false, got {value!r}.")


@dataclass(frozen=True)
class EncodeOptions:
    """How each format is encoded. ``loop``: 0 = forever (GIF/WEBP); ``*_crf``: lower = better.

    ``fps``: frames per second. A ``Fraction`` (e.g. ``Fraction(30000, 1001)`` read from a source
    video) reaches MP4/WEBM exactly; a float becomes the nearest fraction with a denominator up to
    100000 (29.97 -> 2997/100, not 30000/1001).
    """

    fps: float | Fraction = 8.0
    loop: int = 0
    gif_palette: bool = False
    gif_gifsicle: bool = False
    mp4_crf: int = 23
    mp4_preset: str | None = None
    mp4_tune: str | None = None
    webm_crf: int = 32
    webp_quality: int = 80
    webp_lossless: bool = False
    keep_duration: bool = False  # GIF/WEBP above 50 fps: show every k-th frame at the exact time (see the module)

    def __post_init__(self) -> None:
        fps = self.fps
        if isinstance(fps, bool) or not isinstance(fps, numbers.Real) \
                or not math.isfinite(float(fps)) or float(fps) <= 0:
            raise ParameterError("fps", f"must be a finite number above 0, got {fps!r}.")
        check_int("loop", self.loop, 0, 65535)
        check_int("mp4_crf", self.mp4_crf, 0, 51)
        check_int("webm_crf", self.webm_crf, 0, 63)
        check_int("webp_quality", self.webp_quality, 0, 100)
        for name in ("gif_palette", "gif_gifsicle", "webp_lossless", "keep_duration"):
            _check_bool(name, getattr(self, name))
        if self.mp4_preset is not None and self.mp4_preset not in X264_PRESETS:
            raise ParameterError("mp4_preset", f"must be one of {', '.join(X264_PRESETS)} or "
                                 f"empty, got {self.mp4_preset!r}.")
        if self.mp4_tune is not None and self.mp4_tune not in X264_TUNES:
            raise ParameterError("mp4_tune", f"must be one of {', '.join(X264_TUNES)} or empty, "
                                 f"got {self.mp4_tune!r}.")


@dataclass(frozen=True)
class S3Options:
    """Where to upload. ``endpoint``: http(s)://host[:port]; ``region`` None = us-east-1;
    ``access_key``/``secret_key`` None = boto3's usual lookup (environment, ~/.aws).
    ``connect_timeout`` seconds and ``max_attempts`` (>= 1, first try included) bound the wait."""

    endpoint: str
    bucket: str
    region: str | None = None
    prefix: str = ""
    access_key: str | None = None
    secret_key: str | None = None
    connect_timeout: float = 5.0
    max_attempts: int = 2

    def __post_init__(self) -> None:
        parts = urlsplit(self.endpoint) if isinstance(self.endpoint, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ParameterError("s3_endpoint", f"{self.endpoint!r} is not an http:// or https:// "
                                 "URL; write e.g. http://127.0.0.1:9000 or https://s3.amazonaws.com.")
        if not isinstance(self.bucket, str) or not _BUCKET.fullmatch(self.bucket):
            raise ParameterError("s3_bucket", f"{self.bucket!r} is not a valid bucket name: "
                                 "use 3-63 lower-case letters, digits, '.' and '-'.")
        segments = str(self.prefix).replace("\\", "/").split("/")
        if any(seg in (".", "..") for seg in segments):
            raise ParameterError("s3_prefix", f"{self.prefix!r} may not contain '.' or '..' parts.")
        if (self.access_key is None) != (self.secret_key is None):
            raise ParameterError("s3_access_key", "set both the access key and the secret key, or "
                                 "neither (then boto3 reads the environment / ~/.aws).")
        timeout = self.connect_timeout
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise ParameterError("s3_connect_timeout", "must be a number of seconds above 0.")
        if not is_int(self.max_attempts) or not 1 <= self.max_attempts <= 10:
            raise ParameterError("s3_max_attempts", "must be an integer from 1 to 10.")

    @property
    def key_prefix(self) -> str:
        """The prefix without empty parts, ending in '/' unless empty."""
        parts = [p for p in str(self.prefix).replace("\\", "/").split("/") if p]
        return "".join(p + "/" for p in parts)



__all__ = ["X264_PRESETS", "X264_TUNES", "EncodeOptions", "S3Options"]
