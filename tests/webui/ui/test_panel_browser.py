"""The AnimateDiff panel in a real browser: uploading a video source sets FPS to the video's exact rate and shows
its frame count under it (scripts/animatediff_ui.py wiring ui_spec.video_source_panel).

Videos are made here with imageio-ffmpeg's ffmpeg: 18 frames at 12 fps with a sine track, and 7 frames at
30000/1001 fps without sound. The screenshot of the panel after the first upload is the README's
(docs/panel-video-source.png, written with ANIMATEDIFF_SCREENSHOT_DIR=docs).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from motion_module.video.metadata import ffmpeg_exe

from .conftest import save_screenshot

PANEL = "#script_txt2img_animatediff_enable"
FPS = "#script_txt2img_animatediff_fps input[type=number]"
VIDEO = "#script_txt2img_animatediff_video_source"
INFO = "#script_txt2img_animatediff_video_source_info"  # gradio puts an HTML's id on 2 divs


def make_clip(path: Path, frames: int, rate: str, audio: bool) -> Path:
    """A moving test pattern of ``frames`` frames at ``rate`` (an ffmpeg rate: "12", "30000/1001")."""
    sound = ["-f", "lavfi", "-i", "sine=f=440:duration=4"] if audio else []
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s=128x96:r={rate}",
                    *sound, "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    *(["-c:a", "aac", "-shortest"] if audio else ["-an"]), str(path)], check=True, capture_output=True)
    return path


def _open_video_input(page: Any) -> None:
    page.locator(f"{PANEL} .label-wrap").first.click()  # ticks AnimateDiff, which opens its accordion
    group = page.locator(PANEL).get_by_text("Video input (for ControlNet)", exact=True)
    group.scroll_into_view_if_needed()
    group.click()
    page.locator(VIDEO).wait_for(state="visible")


def _upload(page: Any, clip: Path, expect: str) -> tuple[float, str]:
    page.locator(f"{VIDEO} input[type=file]").set_input_files(str(clip))
    page.locator(INFO).filter(has_text=expect).first.wait_for(state="visible", timeout=60_000)
    return float(page.locator(FPS).input_value()), page.locator(INFO).first.inner_text()


def test_uploading_a_video_sets_fps_and_shows_its_frame_count(page: Any, tmp_path: Path) -> None:
    twelve = make_clip(tmp_path / "dance-12fps.mp4", 18, "12", audio=True)
    ntsc = make_clip(tmp_path / "clip-ntsc.mp4", 7, "30000/1001", audio=False)
    _open_video_input(page)
    assert page.locator(FPS).input_value() == "8"  # the default before any upload
    assert page.locator(INFO).first.inner_text() == ""
    fps, info = _upload(page, twelve, "18 frames")
    assert fps == 12.0
    assert info == "Video source: 18 frames at 12 fps, 128x96, with audio (kept in MP4/WEBM at this FPS); " \
                   "FPS set to its rate"
    panel = page.locator(PANEL)
    panel.scroll_into_view_if_needed()
    save_screenshot(panel.screenshot(), "panel-video-source.png", tmp_path)
    page.locator(f"{VIDEO} button[aria-label=Clear]").click()  # removing the video empties the line, keeps FPS
    page.locator(f"{VIDEO} input[type=file]").wait_for(state="attached")
    page.wait_for_function("sel => document.querySelector(sel).innerText.trim() === ''", arg=INFO, timeout=30_000)
    assert page.locator(FPS).input_value() == "12"
    fps, info = _upload(page, ntsc, "7 frames")
    assert fps == 30000 / 1001  # the exact rate as a float; the engine reads it back as 30000/1001
    assert "7 frames at 29.97 (30000/1001) fps, 128x96, no audio" in info
    assert page.problems == [], page.problems  # no failed request to the WebUI, no error in the console
