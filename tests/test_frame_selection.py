"""Frame selection (skip_first_frames, select_every_nth, frame_load_cap, force_rate) on real small videos made
here with imageio-ffmpeg's ffmpeg: each frame carries its own index as ten black/white stripes (bit b of the
index in stripe b), so the test reads back which source frame every selected frame is.

Fixtures: a constant 30 fps H.264 MP4 with an audio track whose loudness rises linearly with time (its loudness
says where in the source a piece of audio comes from), a variable-frame-rate lossless Matroska with hand-set
timestamps (steps of 40, 100, 200 and 10 ms, and two frames on one timestamp), and an NTSC 30000/1001 MP4.
Every expected frame list below is worked out by hand from those timestamps.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from motion_module.control.controlnet import VideoToVideo, prepare
from motion_module.errors import ParameterError
from motion_module.params.request import AnimateDiffParams, from_api
from motion_module.video.frame_selection import (
    FrameSelection,
    FrameTimes,
    parse_showinfo,
    plan_selection,
    read_frame_times,
    read_selected_frames,
    select_items,
)
from motion_module.video.input import VideoFrames, mux_audio, probe_video
from motion_module.video.metadata import ffmpeg_exe
from tests.fixtures.controlnet_units import Unit

SIZE = 80
VFR_MS = [0, 40, 80, 120, 160, 200, 300, 400, 400, 500, 700, 900, 1000, 1010, 1020, 1100, 1300, 1500, 1600, 1700]
VFR_END_MS = 1800  # the last frame lasts 100 ms (the input's frame period)
RAMP = 0.2  # the test tone's amplitude rises by 0.2 per second


def index_frame(i: int, size: int = SIZE) -> Image.Image:
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    for bit in range(10):
        if i >> bit & 1:
            pixels[:, bit * 8:(bit + 1) * 8] = 255
    return Image.fromarray(pixels)


def frame_index(image: Image.Image) -> int:
    pixels = np.asarray(image.convert("L"), dtype=np.float32)
    return sum(1 << bit for bit in range(10) if pixels[8:-8, bit * 8 + 2:bit * 8 + 6].mean() > 128)


def indices_of(paths: list[Path] | tuple[Path, ...]) -> list[int]:
    result = []
    for path in paths:
        with Image.open(path) as image:
            result.append(frame_index(image))
    return result


def make(*args: str) -> None:
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def audio_samples(path: Path) -> np.ndarray:
    out = subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-map", "0:a:0", "-f", "s16le",
                          "-ac", "1", "-ar", "48000", "-"], capture_output=True, check=True)
    return np.frombuffer(out.stdout, dtype=np.int16).astype(np.float64) / 32768


def loudness_time(samples: np.ndarray, at: float) -> float:
    """The source time a piece of the ramp tone comes from: RMS over 20 ms from ``at`` s, / (RAMP / sqrt 2)."""
    window = samples[int(at * 48000):int(at * 48000) + 960]
    return float(np.sqrt(np.mean(window ** 2)) / (RAMP / np.sqrt(2)))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("selection")
    for i in range(60):
        index_frame(i).save(root / f"f{i:03d}.png")
    files = {name: root / name for name in ("cfr.mp4", "vfr.mkv", "ntsc.mp4")}
    make("-framerate", "30", "-i", str(root / "f%03d.png"), "-f", "lavfi", "-i",
         f"aevalsrc={RAMP}*t*sin(2*PI*1000*t):s=48000:d=2.5", "-frames:v", "60", "-c:v", "libx264", "-crf", "12",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "192k", str(files["cfr.mp4"]))
    expression = "0"
    for i, ms in reversed(list(enumerate(VFR_MS))):  # pts of frame N in ms: a nested if over the table
        expression = f"if(eq(N\\,{i})\\,{ms}\\,{expression})"
    make("-framerate", "10", "-i", str(root / "f%03d.png"), "-frames:v", str(len(VFR_MS)), "-vf",
         f"settb=1/1000,setpts={expression}", "-fps_mode", "passthrough", "-enc_time_base:v", "1/1000",
         "-c:v", "ffv1", str(files["vfr.mkv"]))
    make("-framerate", "30000/1001", "-i", str(root / "f%03d.png"), "-frames:v", "45", "-c:v", "libx264",
         "-crf", "12", "-pix_fmt", "yuv420p", str(files["ntsc.mp4"]))
    return files


def selected(path: Path, dest: Path, limit: int | None = None, **options: object) -> tuple[list[int], VideoFrames]:
    video = read_selected_frames(path, dest, FrameSelection(**options), limit=limit)
    assert [p.name for p in video.paths] == [f"{i:05d}.png" for i in range(len(video))]
    assert video.indices is not None and indices_of(video.paths) == list(video.indices)  # the right pictures
    return list(video.indices), video


# --------------------------------------------------------------------------------- the fixtures are what we say
def test_the_vfr_fixture_has_the_hand_set_timestamps(media: dict[str, Path]) -> None:
    times = read_frame_times(media["vfr.mkv"], None)
    assert times.times == tuple(Fraction(ms, 1000) for ms in VFR_MS)  # exact, the duplicate at 400 ms kept
    assert times.end == Fraction(VFR_END_MS, 1000)
    assert indices_of(read_selected_frames(media["vfr.mkv"], media["vfr.mkv"].parent / "all",
                                           FrameSelection(frame_load_cap=20)).paths) == list(range(20))


# --------------------------------------------------------------------------------- skip, every nth, cap
@pytest.mark.parametrize(("options", "expected"), [
    ({"skip_first_frames": 5}, list(range(5, 60))),
    ({"select_every_nth": 4}, list(range(0, 60, 4))),
    ({"frame_load_cap": 7}, list(range(7))),
    ({"skip_first_frames": 3, "select_every_nth": 5, "frame_load_cap": 6}, [3, 8, 13, 18, 23, 28]),
    ({"skip_first_frames": 59, "select_every_nth": 3}, [59]),  # skip counts before every-nth: frame 59 is kept
])
def test_skip_nth_cap_on_a_constant_rate_video(media: dict[str, Path], tmp_path: Path, options: dict,
                                               expected: list[int]) -> None:
    indices, video = selected(media["cfr.mp4"], tmp_path / "out", **options)
    assert indices == expected
    nth = options.get("select_every_nth", 1)
    assert video.fps == Fraction(30, nth)  # the rate the kept frames stand for
    assert video.start == Fraction(expected[0], 30)


def test_video_length_caps_after_the_selection(media: dict[str, Path], tmp_path: Path) -> None:
    indices, _ = selected(media["cfr.mp4"], tmp_path / "out", limit=4, skip_first_frames=10, select_every_nth=2,
                          frame_load_cap=9)
    assert indices == [10, 12, 14, 16]


def test_skip_nth_on_the_variable_rate_video(media: dict[str, Path], tmp_path: Path) -> None:
    indices, video = selected(media["vfr.mkv"], tmp_path / "out", skip_first_frames=2, select_every_nth=3,
                              frame_load_cap=4)
    assert indices == [2, 5, 8, 11]
    assert video.start == Fraction(80, 1000)  # frame 2's own timestamp


# --------------------------------------------------------------------------------- force_rate
def test_force_rate_up_and_down_on_the_variable_rate_video(media: dict[str, Path], tmp_path: Path) -> None:
    # 10 fps: t = 0, 0.1 ... 1.7 s, each the frame on screen then; frame 7 lasts 0 s (frame 8 shares its time)
    indices, video = selected(media["vfr.mkv"], tmp_path / "ten", force_rate=Fraction(10))
    assert indices == [0, 2, 5, 6, 8, 9, 9, 10, 10, 11, 12, 15, 15, 16, 16, 17, 18, 19]
    assert video.fps == 10 and video.start == 0
    indices, _ = selected(media["vfr.mkv"], tmp_path / "four", force_rate=Fraction(4))  # t = 0, 0.25 ... 1.75
    assert indices == [0, 5, 9, 10, 12, 15, 17, 19]
    indices, video = selected(media["vfr.mkv"], tmp_path / "four-skip", force_rate=Fraction(4), skip_first_frames=1)
    assert indices == [5, 9, 10, 12, 15, 17, 19]
    assert video.start == Fraction(1, 4)  # the time the kept frame stands for, not frame 5's own 0.2 s
    paths = sorted((tmp_path / "ten").iterdir())
    assert paths[5].stat().st_ino == paths[6].stat().st_ino or paths[5].read_bytes() == paths[6].read_bytes()


def test_force_rate_applies_before_skip_then_nth_then_cap(media: dict[str, Path], tmp_path: Path) -> None:
    # the 10 fps frames above, from the 4th on (skip 3), every 2nd, at most 5
    indices, video = selected(media["vfr.mkv"], tmp_path / "out", force_rate=Fraction(10), skip_first_frames=3,
                              select_every_nth=2, frame_load_cap=5)
    assert indices == [6, 9, 10, 11, 15]
    assert video.fps == 5 and video.start == Fraction(3, 10)


def test_force_rate_on_a_constant_rate_video(media: dict[str, Path], tmp_path: Path) -> None:
    down, video = selected(media["cfr.mp4"], tmp_path / "down", force_rate=Fraction(8), frame_load_cap=11)
    assert down == [0, 3, 7, 11, 15, 18, 22, 26, 30, 33, 37]  # floor(k * 30 / 8)
    up, _ = selected(media["cfr.mp4"], tmp_path / "up", force_rate=Fraction(60), frame_load_cap=8)
    assert up == [0, 0, 1, 1, 2, 2, 3, 3]
    assert len(selected(media["cfr.mp4"], tmp_path / "all", force_rate=Fraction(8))[0]) == 16  # 2 s * 8 fps


def test_an_ntsc_force_rate_is_exact(media: dict[str, Path], tmp_path: Path) -> None:
    """29.97 means 30000/1001: on a 30000/1001 video it keeps every frame once (a float grid drifts)."""
    params = AnimateDiffParams(force_rate=29.97)
    assert FrameSelection.of(params).force_rate == Fraction(30000, 1001)
    indices, video = selected(media["ntsc.mp4"], tmp_path / "out", force_rate=Fraction(30000, 1001))
    assert indices == list(range(45)) and video.fps == Fraction(30000, 1001)


def test_timestamps_without_a_time_base_missing_or_going_back() -> None:
    lines = ["n:   0 pts:      0 pts_time:0", "n:   1 pts:  NOPTS pts_time:NOPTS",
             "n:   2 pts:      5 pts_time:0.05", "n:   3 pts:      9 pts_time:0.09"]
    times = parse_showinfo(iter(lines), Fraction(25))
    assert times.times == (0, Fraction(1, 25), Fraction(1, 20), Fraction(9, 100))
    assert times.end == Fraction(9, 100) + Fraction(4, 100)  # the last interval
    back = parse_showinfo(iter(["config in time_base: 1/100", "n: 0 pts: 10 pts_time:0.1 duration: 5",
                                "n: 1 pts: 30 pts_time:0.3 duration: 5", "n: 2 pts: 20 pts_time:0.2 duration: 5"]),
                          None)
    assert back.times == (0, Fraction(1, 5), Fraction(1, 5)) and back.end == Fraction(1, 4)
    plan = plan_selection(FrameTimes(back.times, back.end), FrameSelection(force_rate=Fraction(10)))
    assert plan.indices == (0, 0, 2)  # frame 1 shares its time with frame 2: never shown


# --------------------------------------------------------------------------------- errors and folders
def test_every_bad_value_is_a_422_naming_its_field(media: dict[str, Path], tmp_path: Path) -> None:
    for field, value in (("skip_first_frames", -1), ("select_every_nth", 0), ("frame_load_cap", -2),
                         ("force_rate", -1), ("force_rate", "nan"), ("select_every_nth", 1.5)):
        with pytest.raises(ParameterError) as caught:
            from_api({field: value})
        assert caught.value.field == field and caught.value.status_code == 422
    for value in (60, 500):
        with pytest.raises(ParameterError, match="skips .* but the video has only 60 frames") as caught:
            read_selected_frames(media["cfr.mp4"], tmp_path / f"past{value}", FrameSelection(skip_first_frames=value))
        assert caught.value.field == "skip_first_frames"
    with pytest.raises(ParameterError, match="only 16 frames at force_rate 8") as caught:
        read_selected_frames(media["cfr.mp4"], tmp_path / "past", FrameSelection(16, force_rate=Fraction(8)))
    with pytest.raises(ParameterError) as caught:
        FrameSelection(select_every_nth=0)
    assert caught.value.field == "select_every_nth"
    with pytest.raises(ParameterError) as caught:
        FrameSelection(force_rate=Fraction(0))
    assert caught.value.field == "force_rate"


def test_a_frames_folder_takes_skip_nth_cap_but_not_force_rate() -> None:
    items = [f"{i}.png" for i in range(10)]
    assert select_items(items, FrameSelection(2, 3, 2), "video_path x") == ["2.png", "5.png"]
    with pytest.raises(ParameterError, match="video_path x has only 10 frames") as caught:
        select_items(items, FrameSelection(10), "video_path x")
    assert caught.value.field == "skip_first_frames"
    with pytest.raises(ParameterError, match="without timestamps") as caught:
        select_items(items, FrameSelection(force_rate=Fraction(8)), "video_path x")
    assert caught.value.field == "force_rate"


# --------------------------------------------------------------------------------- one request (prepare)
def run_prepare(params: AnimateDiffParams, root: Path, unit: Unit | None = None) -> VideoToVideo:
    return prepare(params, [(0, unit or Unit())], work_dir=lambda: Path(tempfile.mkdtemp(dir=root)),
                   allowed_roots=[root], batch_mode="BATCH")


def staged(v2v: VideoToVideo, what: str = "batch_images") -> list[int]:
    return indices_of(sorted(Path(getattr(v2v.units[0], what)).iterdir()))


def test_prepare_gives_the_unit_the_selected_frames_and_rate(media: dict[str, Path], tmp_path: Path) -> None:
    params = AnimateDiffParams(enable=True, video_source=str(media["cfr.mp4"]), fps=0, skip_first_frames=6,
                               select_every_nth=3, frame_load_cap=5, formats=("MP4",))
    v2v = run_prepare(params, media["cfr.mp4"].parent)
    assert v2v.frames == 5 and staged(v2v) == [6, 9, 12, 15, 18]
    assert v2v.source_fps == 10  # fps 0 plays at 30 / 3, so the clip lasts as long as its source span
    rated = run_prepare(params.replace_field("force_rate", 12).replace_field("select_every_nth", 1),
                        media["cfr.mp4"].parent)
    assert staged(rated) == [15, 17, 20, 22, 25] and rated.source_fps == 12  # floor(k * 30 / 12), k = 6..10


def test_the_audio_follows_the_selection(media: dict[str, Path], tmp_path: Path) -> None:
    """Skip 1 s of a 30 fps source and keep 15 frames at 30 fps: the audio starts 1 s into the source and
    lasts 0.5 s, in the cut and in the MP4 it is muxed into."""
    params = AnimateDiffParams(enable=True, video_source=str(media["cfr.mp4"]), fps=0, skip_first_frames=30,
                               frame_load_cap=15, formats=("MP4",))
    v2v = run_prepare(params, media["cfr.mp4"].parent)
    assert v2v.audio is not None and v2v.audio.suffix == ".flac" and v2v.source_fps == 30
    cut = audio_samples(v2v.audio)
    assert abs(len(cut) / 48000 - 0.5) < 0.002
    assert loudness_time(cut, 0.0) == pytest.approx(1.0, abs=0.04)
    assert loudness_time(cut, 0.45) == pytest.approx(1.45, abs=0.04)
    clip = tmp_path / "clip.mp4"
    make("-framerate", "30", "-i", str(media["cfr.mp4"].parent / "f%03d.png"), "-frames:v", "15", "-c:v", "libx264",
         "-pix_fmt", "yuv420p", str(clip))
    mux_audio(clip, v2v.audio, frames=15, fps=Fraction(30), out_path=clip)
    muxed = audio_samples(clip)
    assert abs(len(muxed) / 48000 - 0.5) < 0.03 and loudness_time(muxed, 0.1) == pytest.approx(1.1, abs=0.05)
    whole = run_prepare(params.replace_field("skip_first_frames", 0), media["cfr.mp4"].parent)
    assert whole.audio == media["cfr.mp4"].resolve()  # starting at frame 0: the source itself, trimmed at muxing
    silent = run_prepare(params.replace_field("formats", "GIF"), media["cfr.mp4"].parent)
    assert silent.audio is None  # no output carries audio: nothing is cut


def test_a_frames_folder_and_its_masks_follow_the_selection(tmp_path: Path) -> None:
    images, masks = tmp_path / "frames", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i in range(12):
        index_frame(i).save(images / f"{i}.png")  # unpadded: natural order
        index_frame(100 + i).save(masks / f"m{i}.png")
    params = AnimateDiffParams(enable=True, video_path=str(images), mask_path=str(masks), skip_first_frames=1,
                               select_every_nth=4)
    v2v = run_prepare(params, tmp_path, Unit(module="inpaint_only"))
    assert staged(v2v) == [1, 5, 9] and staged(v2v, "batch_mask_dir") == [101, 105, 109]
    with pytest.raises(ParameterError, match="force_rate applies to a video source only") as caught:
        run_prepare(params.replace_field("force_rate", 8), tmp_path)
    assert caught.value.field == "force_rate"
    with pytest.raises(ParameterError, match="only 12 frames") as caught:
        run_prepare(params.replace_field("skip_first_frames", 12), tmp_path)
    assert caught.value.field == "skip_first_frames"


def test_masks_of_a_selected_video_source_are_those_of_the_kept_source_frames(media: dict[str, Path]) -> None:
    root = media["cfr.mp4"].parent
    masks = root / "vmasks"
    masks.mkdir(exist_ok=True)
    for i in range(60):
        index_frame(200 + i).save(masks / f"{i}.png")
    params = AnimateDiffParams(enable=True, video_source=str(media["cfr.mp4"]), mask_path=str(masks),
                               skip_first_frames=4, select_every_nth=10, formats=("GIF",))
    v2v = prepare(params, [(0, Unit(module="inpaint_only"))], work_dir=lambda: root / "work-masks",
                  allowed_roots=[root], batch_mode="BATCH")
    assert staged(v2v) == [4, 14, 24, 34, 44, 54] and staged(v2v, "batch_mask_dir") == [204, 214, 224, 234, 244, 254]


def test_a_selection_without_a_video_source_or_path_is_noted(tmp_path: Path) -> None:
    v2v = prepare(AnimateDiffParams(enable=True, video_length=4, select_every_nth=2), [(0, Unit(image="own"))],
                  work_dir=lambda: tmp_path, allowed_roots=[tmp_path], batch_mode="BATCH")
    assert any("select_every_nth=2" in note and "was not used" in note for note in v2v.notes)


# --------------------------------------------------------------------------------- streaming
def test_decoding_a_selection_keeps_one_frame_in_memory(tmp_path: Path) -> None:
    """400 frames of 256x256 (75 MiB as RGB) decoded in a fresh interpreter: its peak memory grows by far less
    than the frames would take if they were held."""
    video = tmp_path / "long.mp4"
    make("-f", "lavfi", "-i", "testsrc2=s=256x256:r=25", "-frames:v", "400", "-c:v", "libx264", "-preset",
         "ultrafast", "-pix_fmt", "yuv420p", str(video))
    script = textwrap.dedent(f"""
        from pathlib import Path
        from motion_module.video.frame_selection import FrameSelection, read_selected_frames

        def peak_kib():  # this process's own high-water mark (ru_maxrss would carry the parent's over exec)
            return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1])

        read_selected_frames(Path({str(video)!r}), Path({str(tmp_path / 'warm')!r}), FrameSelection(frame_load_cap=2))
        before = peak_kib()
        video = read_selected_frames(Path({str(video)!r}), Path({str(tmp_path / 'all')!r}),
                                     FrameSelection(skip_first_frames=1))
        assert len(video) == 399, len(video)
        print((peak_kib() - before) / 1024)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.strip()) < 20, f"peak memory grew by {proc.stdout.strip()} MiB"
    assert probe_video(video).size == (256, 256)
