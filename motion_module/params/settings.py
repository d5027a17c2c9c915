"""The extension's settings (Settings > AnimateDiff in WebUI) as data, and what they turn into.

``SETTINGS`` is the one table: the adapter registers each row with the host, tests read the defaults
from it, and :func:`encode_options` / :func:`s3_options` / :func:`max_rows` read values through a
``get(key, default)`` callable (WebUI: ``shared.opts.data.get``), so nothing here knows WebUI.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from motion_module.video.output_options import X264_PRESETS, X264_TUNES, EncodeOptions, S3Options

Get = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Setting:
    """One setting. ``kind``: text, password, bool, slider (``minimum``/``maximum``), choice, number."""

    key: str
    default: Any
    label: str
    kind: str = "text"
    minimum: int = 0
    maximum: int = 0
    choices: tuple[str, ...] = field(default_factory=tuple)


SETTINGS: tuple[Setting, ...] = (
    Setting("animatediff_model_path", "", "Motion-module folder (empty: the extension's model/ folder)"),
    Setting("animatediff_input_folders", "", "Folders video_source / video_path / mask_path may be read from, "
            "besides WebUI's data folder and uploads (one per line)"),
    Setting("animatediff_gif_palette", False, "GIF: optimise a global palette with ffmpeg", "bool"),
    Setting("animatediff_gif_gifsicle", False, "GIF: optimise with gifsicle when installed", "bool"),
    Setting("animatediff_mp4_crf", 23, "MP4 CRF (0 best - 51 worst)", "slider", 0, 51),
    Setting("animatediff_mp4_preset", "", "MP4 preset", "choice", choices=("", *X264_PRESETS)),
    Setting("animatediff_mp4_tune", "", "MP4 tune", "choice", choices=("", *X264_TUNES)),
    Setting("animatediff_webm_crf", 32, "WEBM (VP9) CRF (0 best - 63 worst)", "slider", 0, 63),
    Setting("animatediff_webp_quality", 80, "WEBP quality", "slider", 1, 100),
    Setting("animatediff_webp_lossless", False, "WEBP lossless", "bool"),
    Setting("animatediff_keep_models", True, "Keep motion modules in memory between requests (off: each request "
            "loads its module and frees it afterwards; a changed file is always re-read)", "bool"),
    Setting("animatediff_interp_path", "", "Frame interpolation: folder of the RIFE weights (empty: the motion-module "
            "folder)"),
    Setting("animatediff_interp_batch", 4, "Frame interpolation: frames made per RIFE call (more: faster, more "
            "memory)", "slider", 1, 32),
    Setting("animatediff_max_rows", 0, "Frames per UNet call across windows (0: one window per call)", "number"),
    Setting("animatediff_s3_enable", False, "Upload videos to S3-compatible storage", "bool"),
    Setting("animatediff_s3_endpoint", "", "S3 endpoint URL (http:// or https://)"),
    Setting("animatediff_s3_region", "", "S3 region"),
    Setting("animatediff_s3_bucket", "", "S3 bucket (created if missing)"),
    Setting("animatediff_s3_prefix", "animatediff/", "S3 key prefix"),
    Setting("animatediff_s3_access_key", "", "S3 access key"),
    Setting("animatediff_s3_secret_key", "", "S3 secret key", "password"),
)
DEFAULTS: dict[str, Any] = {s.key: s.default for s in SETTINGS}


def _value(get: Get, key: str) -> Any:
    return get(key, DEFAULTS[key])


def encode_options(get: Get, *, fps: float | Fraction, loop: int) -> EncodeOptions:
    """The encoder settings, for a video of ``fps`` frames per second played ``loop`` times (0: forever)."""
    return EncodeOptions(
        fps=fps, loop=loop,
        gif_palette=bool(_value(get, "animatediff_gif_palette")),
        gif_gifsicle=bool(_value(get, "animatediff_gif_gifsicle")),
        mp4_crf=int(_value(get, "animatediff_mp4_crf")),
        mp4_preset=_value(get, "animatediff_mp4_preset") or None,
        mp4_tune=_value(get, "animatediff_mp4_tune") or None,
        webm_crf=int(_value(get, "animatediff_webm_crf")),
        webp_quality=int(_value(get, "animatediff_webp_quality")),
        webp_lossless=bool(_value(get, "animatediff_webp_lossless")))


def s3_options(get: Get) -> S3Options | None:
    """Where to upload videos, or None when uploading is off."""
    if not _value(get, "animatediff_s3_enable"):
        return None
    return S3Options(
        endpoint=str(_value(get, "animatediff_s3_endpoint")), bucket=str(_value(get, "animatediff_s3_bucket")),
        region=_value(get, "animatediff_s3_region") or None, prefix=str(_value(get, "animatediff_s3_prefix")),
        access_key=_value(get, "animatediff_s3_access_key") or None,
        secret_key=_value(get, "animatediff_s3_secret_key") or None)


def max_rows(get: Get) -> int | None:
    """Frames per UNet call across windows, or None for one window per call."""
    return int(_value(get, "animatediff_max_rows") or 0) or None


def interp_folder(get: Get) -> Path | None:
    """The configured folder of the RIFE weights, or None for the motion-module folder."""
    text = str(_value(get, "animatediff_interp_path") or "").strip()
    return Path(text).expanduser() if text else None


def interp_batch(get: Get) -> int:
    """Frames RIFE makes per network call (at least 1)."""
    return max(1, int(_value(get, "animatediff_interp_batch") or 1))


def input_folders(get: Get) -> list[Path]:
    """The configured extra folders that AnimateDiff's file inputs may come from."""
    return [Path(line.strip()).expanduser() for line in str(_value(get, "animatediff_input_folders") or "").splitlines()
            if line.strip()]


def input_roots(get: Get, data_folder: Path) -> list[Path]:
    """Where file inputs from a request may come from: the host's data folder, its upload folder (gradio's
    temporary folder, or the host's ``temp_dir`` setting when set) and the configured input folders."""
    uploads = [Path(tempfile.gettempdir()) / "gradio"]
    if str(get("temp_dir", "") or "").strip():
        uploads.append(Path(str(get("temp_dir", ""))).expanduser())
    return [data_folder, *uploads, *input_folders(get)]


def model_folder(get: Get) -> str:
    """The configured motion-module folder ("" = the extension's own model/ folder)."""
    return str(_value(get, "animatediff_model_path") or "").strip()


__all__ = ["DEFAULTS", "SETTINGS", "Setting", "encode_options", "input_folders", "input_roots", "interp_batch",
           "interp_folder", "max_rows", "model_folder", "s3_options"]
