"""Video-to-video input on real files made here with imageio-ffmpeg's ffmpeg (nothing downloaded).

Fixtures: a 25-frame VFR Matroska whose timestamps repeat (concat demuxer, 0-length and
sub-millisecond durations), a VFR MP4, a constant 30000/1001 fps MP4, an MP4 with a sine audio
track, and broken inputs. Frames are solid colours so their order can be checked.
"""

from __future__ import annotations

import base64
import itertools
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from motion_module.errors import InputError, OutputError, ParameterError
from motion_module.video import encoders
from motion_module.video.input import (
    _passthrough_args,
    count_frames,
    exact_frame_rate,
    extract_frames,
    format_rate,
    materialize_video_source,
    mux_audio,
    output_fps,
    probe_video,
    read_frame_folder,
    read_inpaint_folder,
    read_video_frames,
    resolve_video_length,
    video_summary,
)
from motion_module.video.metadata import ffmpeg_exe
from tests.fixtures.ffmpeg import audio_seconds, ffmpeg, make, packet_pts

NTSC = Fraction(30000, 1001)
COLOURS = [((i * 37) % 256, (i * 91) % 256, (250 - i * 10) % 256) for i in range(25)]


def info_text(path: Path) -> str:
    return ffmpeg("-i", str(path)).stderr


def nearest(colour: tuple[int, ...]) -> int:
    """Index of the fixture colour closest to ``colour`` (lossy codecs shift colours slightly)."""
    return int(np.argmin([sum((a - b) ** 2 for a, b in zip(c, colour, strict=True)) for c in COLOURS]))


def centre_colours(frames: list[Image.Image]) -> list[int]:
    return [nearest(frame.getpixel((16, 16))) for frame in frames]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    dups, varied = ["ffconcat version 1.0"], ["ffconcat version 1.0"]
    for i, colour in enumerate(COLOURS):
        Image.new("RGB", (32, 32), colour).save(root / f"c{i:02d}.png")
        # in each 5 frames one lasts 0 s and one 0.4 ms: both share a timestamp with a neighbour
        duration = {2: "0", 3: "0.0004"}.get(i % 5, f"0.0{4 + i % 3 * 2}")
        dups += [f"file c{i:02d}.png", f"duration {duration}"]
        varied += [f"file c{i:02d}.png", f"duration 0.{(i * 7) % 9 + 1}"]  # 0.1 s to 0.9 s
    (root / "dups.txt").write_text("\n".join(dups) + "\n")
    (root / "varied.txt").write_text("\n".join(varied) + "\n")
    files = {name: root / name for name in ("vfr.mkv", "vfr.mp4", "ntsc.mp4", "sound.mp4", "tone.m4a")}
    concat = ["-f", "concat", "-safe", "0", "-i"]
    passthrough = _passthrough_args(ffmpeg_exe())  # -fps_mode, or -vsync on ffmpeg < 5.1
    make(*concat, str(root / "dups.txt"), *passthrough, "-c:v", "ffv1", str(files["vfr.mkv"]))
    make(*concat, str(root / "varied.txt"), "-c:v", "libx264", "-bf", "0", "-crf", "10", "-pix_fmt", "yuv444p",
         str(files["vfr.mp4"]))
    make("-f", "lavfi", "-i", "color=c=0x406080:s=64x48:r=30000/1001", "-frames:v", "15", "-c:v", "libx264",
         "-pix_fmt", "yuv420p", str(files["ntsc.mp4"]))
    make("-f", "lavfi", "-i", "color=c=red:s=64x64:r=12", "-f", "lavfi", "-i", "sine=f=440:duration=3",
         "-frames:v", "24", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(files["sound.mp4"]))
    make("-f", "lavfi", "-i", "sine=f=330:duration=3", "-c:a", "aac", str(files["tone.m4a"]))
    return files


# --------------------------------------------------------------------------------- decoding
def test_vfr_fixture_really_has_duplicate_timestamps(media: dict[str, Path]) -> None:
    pts = packet_pts(media["vfr.mkv"])
    assert len(pts) == 25 and len(set(pts)) < 25
    naive = ffmpeg("-loglevel", "error", "-i", str(media["vfr.mkv"]), "-f", "framecrc", "-")
    assert 0 < len([line for line in naive.stdout.splitlines() if not line.startswith("#")]) < 25


def test_vfr_video_with_duplicate_timestamps_gives_every_frame_in_order(media: dict[str, Path]) -> None:
    video = read_video_frames(media["vfr.mkv"])
    assert len(video) == 25 and video.size == (32, 32) and not video.has_audio
    assert [frame.getpixel((5, 5)) for frame in video.frames] == COLOURS  # lossless: exact colours
    assert all(frame.mode == "RGB" for frame in video.frames)


def test_vfr_mp4_gives_every_frame_once(media: dict[str, Path]) -> None:
    pts = packet_pts(media["vfr.mp4"])
    assert len(pts) == 25 and len({b - a for a, b in itertools.pairwise(pts)}) > 3  # 25 frames, irregular
    assert centre_colours(list(read_video_frames(media["vfr.mp4"]).frames)) == list(range(25))


def test_limit_keeps_the_first_frames(media: dict[str, Path]) -> None:
    video = read_video_frames(media["vfr.mkv"], limit=7)
    assert [frame.getpixel((5, 5)) for frame in video.frames] == COLOURS[:7]
    with pytest.raises(ParameterError):
        read_video_frames(media["vfr.mkv"], limit=0)


def test_ntsc_rate_is_read_exactly(media: dict[str, Path]) -> None:
    video = read_video_frames(media["ntsc.mp4"])
    assert video.fps == NTSC and isinstance(video.fps, Fraction)
    assert len(video) == 15 and video.size == (64, 48)
    assert video.duration == Fraction(15 * 1001, 30000)
    assert probe_video(media["ntsc.mp4"]).r_frame_rate == NTSC


def test_audio_track_is_detected(media: dict[str, Path]) -> None:
    video = read_video_frames(media["sound.mp4"])
    assert video.has_audio and video.fps == 12 and len(video) == 24
    assert not read_video_frames(media["ntsc.mp4"]).has_audio


def test_extract_frames_writes_numbered_pngs_in_order(media: dict[str, Path], tmp_path: Path) -> None:
    paths = extract_frames(media["vfr.mkv"], tmp_path / "frames")
    assert [p.name for p in paths] == [f"{i:05d}.png" for i in range(25)]
    assert [Image.open(p).convert("RGB").getpixel((5, 5)) for p in paths] == COLOURS
    assert read_frame_folder(tmp_path / "frames") == paths
    with pytest.raises(OutputError, match="not empty"):
        extract_frames(media["vfr.mkv"], tmp_path / "frames")


@pytest.mark.parametrize(("printed", "tbn", "rate"), [
    ("29.97", "30k", NTSC), ("29.97", "1k", NTSC), ("23.98", None, Fraction(24000, 1001)),
    ("59.94", "90k", Fraction(60000, 1001)), ("25", "12800", Fraction(25)), ("12.5", "1k", Fraction(25, 2)),
    ("142.86", "1k", Fraction(1000, 7)), ("14.3", "90k", Fraction(143, 10)), ("1k", None, Fraction(1000)),
])
def test_exact_frame_rate(printed: str, tbn: str | None, rate: Fraction) -> None:
    assert exact_frame_rate(printed, tbn) == rate


def test_decoding_errors_name_the_path(media: dict[str, Path], tmp_path: Path) -> None:
    junk = tmp_path / "notes.mp4"
    junk.write_text("this is not a video\n" * 20)
    empty = tmp_path / "empty.y4m"  # a valid header and no frame
    empty.write_bytes(b"YUV4MPEG2 W64 H64 F25:1 Ip A1:1 C420jpeg\n")
    cases = [(tmp_path / "missing.mp4", "does not exist"), (tmp_path, "is a folder"),
             (junk, "cannot read"), (media["tone.m4a"], "no video stream"), (empty, "no frame could be decoded")]
    for path, message in cases:
        with pytest.raises(InputError, match=message) as info:
            read_video_frames(path)
        assert str(path) in str(info.value)


# --------------------------------------------------------------------------------- frame folders
def _image(path: Path, size: tuple[int, int] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)
    return path


def test_frame_folder_is_sorted_naturally_and_keeps_only_images(tmp_path: Path) -> None:
    names = ["f10.png", "f2.png", "f1.jpg", "F3.webp", "f100.png"]
    for name in names:
        _image(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    _image(tmp_path / ".hidden.png")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in read_frame_folder(tmp_path)] == ["f1.jpg", "f2.png", "F3.webp", "f10.png", "f100.png"]


def test_frame_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_frame_folder(tmp_path / "nope")
    with pytest.raises(InputError, match="is a file"):
        read_frame_folder(_image(tmp_path / "a.png"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="holds no images"):
        read_frame_folder(tmp_path / "empty")
    _image(tmp_path / "mixed" / "1.png", (8, 8))
    _image(tmp_path / "mixed" / "2.png", (8, 8))
    _image(tmp_path / "mixed" / "10.png", (16, 8))
    with pytest.raises(InputError, match=r"1\.png is 8x8, 10\.png is 16x8"):
        read_frame_folder(tmp_path / "mixed")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "0.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="not a readable image"):
        read_frame_folder(tmp_path / "bad")


def test_inpaint_folder_pairs_by_order(tmp_path: Path) -> None:
    for i in (1, 2, 10):
        _image(tmp_path / "image" / f"{i}.png")
        _image(tmp_path / "mask" / f"m{i:03d}.png")
    pairs = read_inpaint_folder(tmp_path)
    assert [(a.name, b.name) for a, b in pairs] == [("1.png", "m001.png"), ("2.png", "m002.png"),
                                                    ("10.png", "m010.png")]
    _image(tmp_path / "mask" / "m011.png")
    with pytest.raises(InputError, match="3 images but 4 masks"):
        read_inpaint_folder(tmp_path)
    with pytest.raises(InputError, match="image/ and mask/"):
        read_inpaint_folder(tmp_path / "image")


# --------------------------------------------------------------------------------- length
def test_resolve_video_length() -> None:
    sources = {"unit 0 (batch folder)": 40, "unit 1 (video_source)": 24}
    assert resolve_video_length(0, sources) == 24
    assert resolve_video_length(16, sources) == 16
    assert resolve_video_length(24, sources) == 24
    assert resolve_video_length(16, {}) == 16
    with pytest.raises(ParameterError, match=r"unit 1 \(video_source\) has 24 frames, fewer than the 32") as info:
        resolve_video_length(32, sources)
    assert info.value.field == "video_length"
    for requested, bad in ((0, {}), (-1, sources), (True, sources), (8, {"unit 2": 0})):
        with pytest.raises(ParameterError):
            resolve_video_length(requested, bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------- API input
def test_base64_video_source_is_written_to_a_temp_file(media: dict[str, Path], tmp_path: Path) -> None:
    data = media["ntsc.mp4"].read_bytes()
    encoded = base64.b64encode(data).decode()
    for value in (f"data:video/mp4;base64,{encoded}", encoded, "\n".join(re.findall(".{1,76}", encoded))):
        path = materialize_video_source(value, tmp_path / "tmp")
        assert path.parent == tmp_path / "tmp" and path.suffix == ".mp4" and path.read_bytes() == data
        assert read_video_frames(path).fps == NTSC
    webm = materialize_video_source("data:video/webm;base64," + base64.urlsafe_b64encode(b"\x1aE\xdf\xa3" * 9).decode(),
                                    tmp_path)
    assert webm.suffix == ".webm"


def test_base64_errors(media: dict[str, Path], tmp_path: Path) -> None:
    encoded = base64.b64encode(media["ntsc.mp4"].read_bytes()).decode()
    bad = [("data:video/mp4;base64,@@@@", "valid base64"), ("data:video/mp4;base64,QUJD=A", "valid base64"),
           ("data:video/mp4;base64,", "empty"), ("", "empty")]
    for value, message in bad:
        with pytest.raises(ParameterError, match=message) as info:
            materialize_video_source(value, tmp_path)
        assert info.value.field == "video_source"
    with pytest.raises(ParameterError, match="larger than"):
        materialize_video_source(encoded, tmp_path, max_bytes=1000)
    assert not list(tmp_path.iterdir())


def test_path_video_source(media: dict[str, Path], tmp_path: Path) -> None:
    root = media["ntsc.mp4"].parent
    assert materialize_video_source(str(media["ntsc.mp4"]), tmp_path) == media["ntsc.mp4"]
    assert materialize_video_source(str(media["ntsc.mp4"]), tmp_path, allowed_roots=[root]) == media["ntsc.mp4"]
    with pytest.raises(ParameterError, match="outside the folders"):
        materialize_video_source(str(media["ntsc.mp4"]), tmp_path, allowed_roots=[tmp_path])
    link = tmp_path / "link.mp4"
    link.symlink_to(media["ntsc.mp4"])
    with pytest.raises(ParameterError, match="outside the folders"):
        materialize_video_source(str(link), tmp_path, allowed_roots=[tmp_path])
    with pytest.raises(ParameterError, match="outside the folders"):
        materialize_video_source(f"{tmp_path}/../{root.name}/ntsc.mp4", tmp_path, allowed_roots=[tmp_path])
    with pytest.raises(InputError, match="does not exist"):
        materialize_video_source(str(tmp_path / "missing.mp4"), tmp_path)
    with pytest.raises(InputError, match="is a folder"):
        materialize_video_source(str(root), tmp_path)


# --------------------------------------------------------------------------------- audio
def _stream_line(path: Path, kind: str) -> str:
    return next(line for line in info_text(path).splitlines() if f": {kind}:" in line)


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_mux_audio_trims_to_the_clip_and_keeps_the_video(media: dict[str, Path], tmp_path: Path,
                                                          suffix: str) -> None:
    clip = tmp_path / f"clip{suffix}"
    codec = ["-c:v", "libx264"] if suffix == ".mp4" else ["-c:v", "libvpx-vp9", "-deadline", "realtime"]
    make("-f", "lavfi", "-i", "color=c=blue:s=64x64:r=30000/1001", "-frames:v", "20", *codec,
         "-pix_fmt", "yuv420p", str(clip))
    before = packet_pts(clip)
    out = mux_audio(clip, media["sound.mp4"], frames=20, fps=NTSC, out_path=tmp_path / f"out{suffix}")
    assert ("aac" if suffix == ".mp4" else "opus") in _stream_line(out, "Audio")
    assert 0.6 < audio_seconds(out) <= 20 / NTSC
    assert packet_pts(out) == before and probe_video(out).fps == NTSC
    if suffix == ".mp4":
        assert "29.97 tbr, 30k tbn" in _stream_line(out, "Video")
    same = mux_audio(clip, media["tone.m4a"], frames=20, fps=NTSC, out_path=clip)  # in place
    assert same == clip and read_video_frames(clip).has_audio and len(read_video_frames(clip)) == 20


def test_mux_audio_errors(media: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no audio stream"):
        mux_audio(media["ntsc.mp4"], media["ntsc.mp4"], frames=15, fps=NTSC, out_path=tmp_path / "a.mp4")
    with pytest.raises(ParameterError, match="MP4 or WEBM"):
        mux_audio(media["ntsc.mp4"], media["sound.mp4"], frames=15, fps=NTSC, out_path=tmp_path / "a.gif")
    with pytest.raises(InputError, match="does not exist"):
        mux_audio(tmp_path / "no.mp4", media["sound.mp4"], frames=15, fps=NTSC, out_path=tmp_path / "a.mp4")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------- encoders
def test_fraction_fps_survives_into_mp4_and_webm(media: dict[str, Path], tmp_path: Path) -> None:
    source = read_video_frames(media["ntsc.mp4"])
    frames = np.stack([np.asarray(frame) for frame in source.frames])
    options = encoders.EncodeOptions(fps=source.fps)
    encoders.WRITERS["MP4"](frames, tmp_path / "v.mp4", "", options)
    assert "29.97 fps, 29.97 tbr, 30k tbn" in _stream_line(tmp_path / "v.mp4", "Video")
    pts = packet_pts(tmp_path / "v.mp4")
    assert sorted(pts) == [1001 * i for i in range(15)]  # 1/30000 time base, 1001 ticks a frame
    encoders.WRITERS["WEBM"](frames, tmp_path / "v.webm", "", options)
    assert probe_video(tmp_path / "v.webm").fps == NTSC and len(read_video_frames(tmp_path / "v.webm")) == 15
    encoders.WRITERS["MP4"](frames, tmp_path / "f.mp4", "", encoders.EncodeOptions(fps=29.97))
    assert "30k tbn" not in _stream_line(tmp_path / "f.mp4", "Video")  # a float is 2997/100, not NTSC


# --------------------------------------------------------------------------------- what the panel reads
@pytest.mark.parametrize(("name", "fps", "frames", "audio", "size"), [
    ("sound.mp4", Fraction(12), 24, True, (64, 64)), ("ntsc.mp4", NTSC, 15, False, (64, 48)),
    ("vfr.mkv", None, 25, False, (32, 32)), ("vfr.mp4", None, 25, False, (32, 32)),
])
def test_video_summary_gives_the_exact_rate_and_every_frame(media: dict[str, Path], name: str,
                                                            fps: Fraction | None, frames: int, audio: bool,
                                                            size: tuple[int, int]) -> None:
    found = video_summary(media[name])
    if fps is not None:
        assert found.fps == fps and isinstance(found.fps, Fraction)
    assert found.fps == probe_video(media[name]).fps  # VFR files: whatever average ffmpeg states
    assert (found.frames, found.has_audio, found.size) == (frames, audio, size)
    assert count_frames(media[name]) == len(read_video_frames(media[name]))  # what a video source decodes to


def test_video_summary_errors(media: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        video_summary(tmp_path / "missing.mp4")
    with pytest.raises(InputError, match="no video stream"):
        video_summary(media["tone.m4a"])
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(InputError, match="not a video file"):
        video_summary(tmp_path / "text.mp4")


def test_output_fps_snaps_a_rate_within_a_hundredth_to_the_sources() -> None:
    assert output_fps(29.97, NTSC) == NTSC and output_fps(float(NTSC), NTSC) == NTSC
    assert output_fps(12.004, Fraction(12)) == Fraction(12)
    assert output_fps(30, NTSC) == 30 and output_fps(29.96, NTSC) == 29.96 and output_fps(8, Fraction(12)) == 8
    assert output_fps(29.97, None) == 29.97 and output_fps(0, None) == 8.0


@pytest.mark.parametrize(("rate", "text"), [(Fraction(12), "12"), (8.0, "8"), (Fraction(25, 2), "12.5"),
                                            (NTSC, "29.97 (30000/1001)"), (float(NTSC), "29.97 (30000/1001)"),
                                            (Fraction(1000, 7), "142.86 (1000/7)")])
def test_format_rate(rate: Fraction | float, text: str) -> None:
    assert format_rate(rate) == text
