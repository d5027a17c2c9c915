"""From generated frames to videos (`publish.publish_videos`): grouping, what is shown or returned, failures
reported without losing frames, and the upload through a real S3 server (moto on 127.0.0.1)."""

from __future__ import annotations

import base64
import io
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from motion_module.params.fields import FrameInterpolation, OutputFormat
from motion_module.params.request import AnimateDiffParams, selectable_script_runs
from motion_module.video.encoders import EncodeOptions
from motion_module.video.input import probe_video
from motion_module.video.publish import VideoJob, publish_videos, report, video_count, video_infotext, video_job
from motion_module.video.upload import S3Options
from tests.fixtures.ffmpeg import make
from tests.fixtures.s3 import options

F = OutputFormat


def frames(count: int, offset: int = 0) -> list[Image.Image]:
    y, x = np.mgrid[0:16, 0:16]
    return [Image.fromarray(np.stack([x * 16, y * 16, np.full_like(x, (i + offset) * 20)], -1).astype(np.uint8))
            for i in range(count)]


def container(data: bytes) -> str:
    """The container of a file by its magic bytes (what an API client does)."""
    if data[:6] == b"GIF89a":
        return "GIF"
    if data[4:8] == b"ftyp":
        return "MP4"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return "WEBM" if data[:4] == b"\x1aE\xdf\xa3" else "?"


def job(tmp_path: Path, *formats: OutputFormat, **kw: object) -> VideoJob:
    return VideoJob(frames=4, formats=formats or (F.GIF,), out_dir=tmp_path, options=EncodeOptions(fps=8),
                    **kw)  # type: ignore[arg-type]


def test_api_gets_every_video_as_base64_in_format_order(tmp_path: Path) -> None:
    images = frames(4) + frames(4, offset=4)
    out = publish_videos(images, [f"p{i}, Seed: {i}" for i in range(8)], [10] * 4 + [11] * 4, ["p"] * 8,
                         job(tmp_path, F.WEBM, F.GIF, F.PNG, F.MP4, F.WEBP), for_api=True)
    assert [container(base64.b64decode(item)) for item in out.images] == ["GIF", "MP4", "WEBP", "WEBM"] * 2
    assert out.infotexts == ["p0, Seed: 0"] * 4 + ["p4, Seed: 4"] * 4
    assert len(out.files) == 2 * 5 and not out.notes
    assert Image.open(io.BytesIO(base64.b64decode(out.images[0]))).n_frames == 4


def test_ui_gets_playable_previews_and_frames_when_asked(tmp_path: Path) -> None:
    images = frames(4)
    out = publish_videos(images, ["info"] * 4, [1] * 4, ["p"] * 4, job(tmp_path, F.GIF, F.MP4, F.FRAME),
                         for_api=False)
    preview, *rest = out.images
    assert preview.already_saved_as.endswith(".gif") and Path(preview.already_saved_as).is_file()
    assert rest == images and len(out.infotexts) == 5  # MP4 is not playable in the gallery: not shown


def test_only_images_with_a_seed_are_frames_and_partial_videos_are_not_made(tmp_path: Path) -> None:
    detected_maps = frames(2, offset=9)  # e.g. ControlNet's, appended after the frames
    assert video_count(len(frames(8)) + 2, 8, 4) == 2
    out = publish_videos(frames(4) + detected_maps, ["i"] * 6, [5] * 4, ["p"] * 4, job(tmp_path), for_api=True)
    assert len(out.images) == 1 and len(out.files) == 1
    assert video_count(7, 7, 4) == 1


def test_ping_pong_and_the_original_travel_prompt(tmp_path: Path) -> None:
    travel = "head\n0: a\n2: b"
    out = publish_videos(frames(4), ["a, x\nSteps: 2"] * 4, [3] * 4, ["a, x"] * 4,
                         job(tmp_path, F.GIF, ping_pong=True, original_prompt=travel), for_api=True)
    assert Image.open(io.BytesIO(base64.b64decode(out.images[0]))).n_frames == 6  # 2L - 2
    assert out.infotexts[0] == travel + "\nSteps: 2"
    assert video_infotext("other\nSteps: 2", "a, x", travel) == "other\nSteps: 2"


def test_an_encoder_failure_is_reported_and_the_frames_come_back(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    images = frames(4)
    out = publish_videos(images, ["i"] * 4, [1] * 4, ["p"] * 4, job(blocker, F.GIF), for_api=True)
    assert out.images == images and out.files == []
    assert len(out.notes) == 1 and out.notes[0].startswith("AnimateDiff: writing the video failed:")


def test_upload_success_and_failure(tmp_path: Path, server: dict[str, str]) -> None:
    ok = publish_videos(frames(4), ["i"] * 4, [1] * 4, ["p"] * 4,
                        job(tmp_path, F.GIF, F.TXT, s3=options(server, bucket="publish")), for_api=True)
    assert len(ok.uploaded) == 1 and ok.uploaded[0].endswith(".gif") and not ok.notes
    closed = S3Options(endpoint="http://127.0.0.1:9", bucket="publish", connect_timeout=0.5, max_attempts=1)
    bad = publish_videos(frames(4), ["i"] * 4, [1] * 4, ["p"] * 4, job(tmp_path, F.GIF, s3=closed), for_api=True)
    assert bad.uploaded == [] and len(bad.images) == 1 and all(Path(f).is_file() for f in bad.files)
    assert len(bad.notes) == 1 and "uploading (files kept locally) failed" in bad.notes[0]


@pytest.mark.parametrize("count", [0, 3])
def test_fewer_frames_than_a_video_publish_nothing(tmp_path: Path, count: int) -> None:
    out = publish_videos(frames(count), ["i"] * count, [1] * count, ["p"] * count, job(tmp_path), for_api=True)
    assert out.images == [] and out.files == []


def test_mp4_and_webm_carry_the_sources_audio_trimmed_to_the_clip(tmp_path: Path) -> None:
    from fractions import Fraction

    from tests.fixtures.ffmpeg import audio_seconds, make

    source = tmp_path / "source.m4a"
    make("-f", "lavfi", "-i", "sine=f=440:duration=3", "-c:a", "aac", str(source))
    rate = Fraction(30000, 1001)
    job = VideoJob(frames=4, formats=(F.MP4, F.WEBM, F.GIF), out_dir=tmp_path / "out",
                   options=EncodeOptions(fps=rate), audio=source)
    out = publish_videos(frames(4), ["i"] * 4, [1] * 4, ["p"] * 4, job, for_api=False)
    assert not out.notes
    for suffix in (".mp4", ".webm"):
        path = next(Path(f) for f in out.files if f.endswith(suffix))
        assert 0 < audio_seconds(path) <= Fraction(4) / rate + Fraction(1, 100)
    bad = VideoJob(frames=4, formats=(F.MP4,), out_dir=tmp_path / "out", options=EncodeOptions(fps=8),
                   audio=tmp_path / "missing.m4a")
    kept = publish_videos(frames(4), ["i"] * 4, [1] * 4, ["p"] * 4, bad, for_api=True)
    assert len(kept.images) == 1 and "adding the source's audio to the MP4" in kept.notes[0]


class Result:
    """The fields of A1111's ``Processed`` that :func:`report` writes; ``params`` is the request's own dict."""

    def __init__(self, params: dict[str, object]) -> None:
        self.images, self.infotexts, self.index_of_first_image = ["a", "b"], ["ia", "ib"], 1
        self.prompt, self.comments, self.extra_generation_params = "shown", "", params


def test_report_hands_over_videos_and_notes_without_touching_the_requests_own_params(tmp_path: Path) -> None:
    shared = {"Model": "tiny"}  # the X/Y/Z plot's cells are copies of one request: they share this dict
    out = publish_videos(frames(4), ["p, Seed: 1"] * 4, [1] * 4, ["p"] * 4, job(tmp_path), for_api=True)
    first = Result(shared)
    report(first, out, ["a note"], "0: travel")
    assert first.images == out.images and first.index_of_first_image == 0 and first.prompt == "0: travel"
    assert first.extra_generation_params["AnimateDiff files"] == tuple(out.files)
    assert first.extra_generation_params["AnimateDiff notes"] == ("a note",) and first.comments == "a note\n"
    assert shared == {"Model": "tiny"}  # the next cell starts from the request's params, not the last cell's
    failed = Result(shared)
    report(failed, None, ["making the videos failed"], None)  # the frames stay
    assert failed.images == ["a", "b"] and failed.index_of_first_image == 1 and failed.prompt == "shown"
    assert "AnimateDiff files" not in failed.extra_generation_params and shared == {"Model": "tiny"}


@pytest.mark.parametrize(("script_args", "runs"), [((0, True), False), ((), False), (None, False),
                                                   ((3, "x"), True), ((True, 1), False)])
def test_a_selectable_script_is_seen_from_the_first_script_argument(script_args: tuple | None, runs: bool) -> None:
    assert selectable_script_runs(script_args) is runs


# --------------------------------------------------------------------------------- the source's audio and FPS
NTSC = Fraction(30000, 1001)


def _audio_job(tmp_path: Path, fps: float, source_fps: Fraction | None, **params: Any) -> VideoJob:
    source = tmp_path / "source.m4a"
    if not source.exists():
        make("-f", "lavfi", "-i", "sine=f=440:duration=3", "-c:a", "aac", str(source))
    return video_job(4, AnimateDiffParams(enable=True, fps=fps, formats=("MP4",), **params), tmp_path / "out",
                     lambda key, default: default, source_fps=source_fps, audio=source)


@pytest.mark.parametrize(("fps", "source_fps", "plays_at"), [
    (0, Fraction(12), Fraction(12)), (12.0, Fraction(12), Fraction(12)), (0, NTSC, NTSC), (29.97, NTSC, NTSC),
    (float(NTSC), NTSC, NTSC), (8, None, Fraction(8)),  # an unknown source rate: the audio is trusted
])
def test_audio_is_kept_when_the_video_plays_at_the_sources_speed(tmp_path: Path, fps: float,
                                                                 source_fps: Fraction | None,
                                                                 plays_at: Fraction) -> None:
    job = _audio_job(tmp_path, fps, source_fps)
    assert job.audio is not None and job.notes == ()
    assert job.options.fps == plays_at  # 29.97 (the panel's float) for 30000/1001 plays at exactly that rate


@pytest.mark.parametrize(("fps", "source_fps", "says"), [
    (8, Fraction(12), "the video plays at 8 fps and the source at 12 fps"),  # the API's default FPS, a 12 fps source
    (30, NTSC, "the video plays at 30 fps and the source at 29.97 (30000/1001) fps"),
    (24, Fraction(25, 2), "set FPS to 0 (the source's rate) or 12.5 to keep it"),
])
def test_audio_is_left_out_with_a_note_at_another_speed(tmp_path: Path, fps: float, source_fps: Fraction,
                                                        says: str) -> None:
    job = _audio_job(tmp_path, fps, source_fps)
    assert job.audio is None and len(job.notes) == 1
    assert job.notes[0].startswith("AnimateDiff: the video source's audio was left out: ") and says in job.notes[0]
    assert job.options.fps == fps  # the requested FPS is played as asked


def test_interpolation_keeps_the_audio_only_when_it_keeps_the_duration(tmp_path: Path) -> None:
    rife = {"interp": FrameInterpolation.RIFE, "interp_x": 2}
    assert _audio_job(tmp_path, 0, Fraction(12), **rife).audio is not None  # 24 fps: the same duration
    assert _audio_job(tmp_path, 0, Fraction(12), interp_fps=24, **rife).audio is not None
    off = _audio_job(tmp_path, 0, Fraction(12), interp_fps=30, **rife)
    assert off.audio is None and "plays at 30 fps, not FPS x 2 = 24" in off.notes[0]


def test_the_published_video_has_sound_only_in_sync(tmp_path: Path) -> None:
    from tests.fixtures.ffmpeg import audio_seconds

    slow = publish_videos(frames(4), ["i"] * 4, [1] * 4, ["p"] * 4, _audio_job(tmp_path, 8, Fraction(12)),
                          for_api=False)
    mp4 = next(Path(f) for f in slow.files if f.endswith(".mp4"))
    assert not probe_video(mp4).has_audio and probe_video(mp4).fps == 8
    assert len(slow.notes) == 1 and "audio was left out" in slow.notes[0]
    synced = publish_videos(frames(4), ["i"] * 4, [2] * 4, ["p"] * 4, _audio_job(tmp_path, 0, Fraction(12)),
                            for_api=False)
    mp4 = next(Path(f) for f in synced.files if f.endswith(".mp4"))
    assert not synced.notes and probe_video(mp4).fps == 12
    assert 0 < audio_seconds(mp4) <= Fraction(4, 12) + Fraction(1, 100)
