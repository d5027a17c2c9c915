"""Every output format decoded by independent readers: frames, size, timing, loop, codec, metadata.

Readers: Pillow for GIF/WEBP/PNG, imageio-ffmpeg's frame reader and ``ffmpeg -i`` stderr for
MP4/WEBM, piexif (A1111's own reader) for the WEBP EXIF comment when it is installed.
"""

from __future__ import annotations

import logging
import re
import shutil
import struct
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from motion_module.video import encoders
from motion_module.video.files import EncodeOptions, SavedVideo, read_infotext, save_video
from motion_module.video.metadata import parse_ffmetadata
from tests.fixtures.frames import gradient_frames

# newlines, quotes, commas, colons, a backslash, '=' ';' '#', non-ASCII (latin-1 and beyond)
INFOTEXT = ('masterpiece, a "red" fox: running; 50% #1 = yes \\ ok\n'
            "Negative prompt: blurry, Größe\n"
            'Steps: 20, Sampler: Euler a, Seed: 7, AnimateDiff: "model: mm_v2.ckpt, fps: 8", 猫')
N, W, H, FPS = 12, 64, 48, 8.0


def make_frames(n: int = N, w: int = W, h: int = H) -> list[Image.Image]:
    return gradient_frames(n, w, h, blue_step=15)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> SavedVideo:
    folder = tmp_path_factory.mktemp("out")
    return save_video(make_frames(), folder, seed=1234, formats=["GIF", "MP4", "WEBP", "WEBM",
                      "PNG", "TXT"], infotext=INFOTEXT, options=EncodeOptions(fps=FPS, loop=0),
                      request_id="job_1")


def pillow_frames(path: Path) -> tuple[int, tuple[int, int], list[int], int | None]:
    """(frame count, size, per-frame durations in ms, loop) via Pillow."""
    with Image.open(path) as im:
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            im.load()  # WEBP fills in "duration" when the frame is decoded
            durations.append(int(im.info["duration"]))
        return im.n_frames, im.size, durations, im.info.get("loop")


def ffmpeg_banner(path: Path) -> str:
    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, timeout=60, check=False)
    return proc.stderr.decode("utf-8")


def banner_comment(banner: str) -> str | None:
    """The global comment as ``ffmpeg -i`` prints it (continuation lines start with ' : ')."""
    lines = banner.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^    comment\s*: (.*)$", line, flags=re.IGNORECASE)
        if match:
            parts = [match.group(1)]
            for more in lines[i + 1:]:
                cont = re.match(r"^\s+: (.*)$", more)
                if not cont:
                    break
                parts.append(cont.group(1))
            return "\n".join(parts)
    return None


def decode_video(path: Path) -> tuple[dict, list[np.ndarray]]:
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    frames = [np.frombuffer(buf, np.uint8).reshape(h, w, 3) for buf in gen]
    return meta, frames


# ------------------------------------------------------------------------- metadata round trip
@pytest.mark.parametrize("fmt", ["GIF", "MP4", "WEBP", "WEBM", "PNG", "TXT"])
def test_infotext_round_trip(saved: SavedVideo, fmt: str) -> None:
    assert read_infotext(saved.files[fmt]) == INFOTEXT


def test_names(saved: SavedVideo) -> None:
    assert saved.name == "00000-1234-job_1"
    assert {p.name for p in saved.files.values()} == {
        "00000-1234-job_1" + ext for ext in (".gif", ".mp4", ".webp", ".webm", "", ".txt")}


# ------------------------------------------------------------------------------------- GIF
def test_gif_decodes_with_exact_timing_loop_and_comment(saved: SavedVideo) -> None:
    count, size, durations, loop = pillow_frames(saved.files["GIF"])
    assert (count, size, loop) == (N, (W, H), 0)
    assert durations[:4] == [120, 130, 120, 130]
    assert abs(sum(durations) / 1000 - N / FPS) <= 0.01
    with Image.open(saved.files["GIF"]) as im:
        assert im.info["comment"].decode("utf-8") == INFOTEXT  # what A1111 PNG Info reads
        sources = make_frames()
        for i in range(count):  # per-frame dithered palettes stay close to the source colours
            im.seek(i)
            error = np.abs(np.asarray(im.convert("RGB"), dtype=float) - np.asarray(sources[i]))
            assert error.mean() < 5.0


@pytest.mark.parametrize("fps", [8, 12, 24, 30, 7.5, 10])
def test_gif_timing_parametrised(fps: float, tmp_path: Path) -> None:
    video = save_video(make_frames(16), tmp_path, seed=1, formats=["GIF", "WEBP"], infotext="t",
                       options=EncodeOptions(fps=fps))
    for fmt, unit in (("GIF", 10), ("WEBP", 1)):
        count, _, durations, _ = pillow_frames(video.files[fmt])
        assert count == 16
        assert abs(sum(durations) / 1000 - 16 / fps) <= 0.01, fmt
        elapsed = np.cumsum(durations) / 1000
        exact = np.arange(1, 17) / fps
        assert np.max(np.abs(elapsed - exact)) <= unit / 2000 + 1e-9, fmt


@pytest.mark.parametrize("loop", [0, 1, 3])
def test_loop_count_in_gif_and_webp(loop: int, tmp_path: Path) -> None:
    video = save_video(make_frames(3), tmp_path, seed=1, formats=["GIF", "WEBP"], infotext="t",
                       options=EncodeOptions(loop=loop))
    for fmt in ("GIF", "WEBP"):
        assert pillow_frames(video.files[fmt])[3] == loop, fmt


def test_gif_above_50_fps_plays_at_50(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="animatediff"):
        video = save_video(make_frames(4), tmp_path, seed=1, formats=["GIF"], infotext="t",
                           options=EncodeOptions(fps=60))
    assert pillow_frames(video.files["GIF"])[2] == [20, 20, 20, 20]
    assert "50 fps" in caplog.text


def moving_square(n: int) -> list[Image.Image]:
    """A static gradient background with a red square moving along rows 10-19."""
    y, x = np.mgrid[0:H, 0:W]
    background = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
    frames = []
    for i in range(n):
        rgb = background.copy()
        rgb[10:20, 2 + i * 5:12 + i * 5] = (250, 30, 30)
        frames.append(Image.fromarray(rgb))
    return frames


def test_palette_gif_keeps_timing_loop_comment_and_does_not_flicker(tmp_path: Path) -> None:
    frames = moving_square(10)
    video = save_video(frames, tmp_path, seed=1, formats=["GIF"], infotext=INFOTEXT,
                       options=EncodeOptions(fps=12, loop=2, gif_palette=True))
    count, size, durations, loop = pillow_frames(video.files["GIF"])
    assert (count, size, loop) == (10, (W, H), 2)
    assert abs(sum(durations) / 1000 - 10 / 12) <= 0.01
    assert read_infotext(video.files["GIF"]) == INFOTEXT
    with Image.open(video.files["GIF"]) as im:
        decoded = []
        for i in range(count):
            im.seek(i)
            decoded.append(np.asarray(im.convert("RGB")))
    source = np.stack([np.asarray(f) for f in frames])
    assert np.abs(np.stack(decoded).astype(float) - source).mean() < 6.0
    static = np.ones((H, W), dtype=bool)
    static[8:22] = False
    for frame in decoded[1:]:  # one palette, changed rectangle only: the background is stable
        assert np.array_equal(frame[static], decoded[0][static])
    has_global, local_tables = gif_colour_tables(video.files["GIF"].read_bytes())
    assert has_global and local_tables == [False] * 10


def gif_colour_tables(data: bytes) -> tuple[bool, list[bool]]:
    """(global colour table present, local colour table flag of each image) from the GIF blocks."""
    flags = data[10]
    pos = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    local = []

    def skip_sub_blocks(pos: int) -> int:
        while data[pos]:
            pos += data[pos] + 1
        return pos + 1

    while data[pos] != 0x3B:
        if data[pos] == 0x21:  # extension: label, then sub-blocks
            pos = skip_sub_blocks(pos + 2)
        elif data[pos] == 0x2C:  # image descriptor (10 bytes), optional table, LZW data
            packed = data[pos + 9]
            local.append(bool(packed & 0x80))
            pos += 10 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0)
            pos = skip_sub_blocks(pos + 1)
        else:
            raise AssertionError(f"unexpected GIF block 0x{data[pos]:02x} at {pos}")
    return bool(flags & 0x80), local


@pytest.mark.skipif(shutil.which("gifsicle") is None, reason="gifsicle binary not installed")
def test_gifsicle_keeps_comment_delays_and_loop(tmp_path: Path) -> None:
    plain = save_video(make_frames(8), tmp_path, seed=1, formats=["GIF"], infotext=INFOTEXT,
                       options=EncodeOptions(fps=8, loop=5))
    optimised = save_video(make_frames(8), tmp_path, seed=1, formats=["GIF"], infotext=INFOTEXT,
                           options=EncodeOptions(fps=8, loop=5, gif_gifsicle=True))
    assert plain.files["GIF"].read_bytes() != optimised.files["GIF"].read_bytes()
    assert pillow_frames(optimised.files["GIF"]) == pillow_frames(plain.files["GIF"])
    assert read_infotext(optimised.files["GIF"]) == INFOTEXT


def test_missing_gifsicle_is_logged_and_skipped(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(encoders.shutil, "which", lambda name: None)
    with caplog.at_level(logging.WARNING, logger="animatediff"):
        video = save_video(make_frames(3), tmp_path, seed=1, formats=["GIF"], infotext="t",
                           options=EncodeOptions(gif_gifsicle=True))
    assert "gifsicle is not installed" in caplog.text
    assert pillow_frames(video.files["GIF"])[0] == 3


# ------------------------------------------------------------------------------------ WEBP
def test_webp_decodes_with_timing_loop_and_exif(saved: SavedVideo) -> None:
    count, size, durations, loop = pillow_frames(saved.files["WEBP"])
    assert (count, size, loop) == (N, (W, H), 0)
    assert durations[:2] == [125, 125] and sum(durations) == 1500
    with Image.open(saved.files["WEBP"]) as im:
        raw = im.info["exif"]
        comment = im.getexif().get_ifd(0x8769)[0x9286]
    assert raw.startswith(b"Exif\x00\x00MM")
    assert comment == b"UNICODE\x00" + INFOTEXT.encode("utf-16-be")


def test_webp_comment_reads_like_a1111_png_info(saved: SavedVideo) -> None:
    piexif = pytest.importorskip("piexif")
    helper = pytest.importorskip("piexif.helper")

    with Image.open(saved.files["WEBP"]) as im:  # A1111 modules/images.py read_info_from_image
        exif = piexif.load(im.info["exif"])
    raw = exif["Exif"][piexif.ExifIFD.UserComment]
    assert isinstance(raw, bytes)
    assert helper.UserComment.load(raw) == INFOTEXT


def test_webp_lossless_is_pixel_exact(tmp_path: Path) -> None:
    frames = make_frames(3)
    video = save_video(frames, tmp_path, seed=1, formats=["WEBP"], infotext="t",
                       options=EncodeOptions(webp_lossless=True))
    with Image.open(video.files["WEBP"]) as im:
        for i in range(3):
            im.seek(i)
            assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(frames[i]))


# ------------------------------------------------------------------------------------- PNG
def test_png_folder_frames_carry_parameters(saved: SavedVideo) -> None:
    folder = saved.files["PNG"]
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"{i:05d}.png" for i in range(N)]
    originals = make_frames()
    for i, name in enumerate(names):
        with Image.open(folder / name) as im:
            assert im.size == (W, H) and im.info["parameters"] == INFOTEXT
            assert np.array_equal(np.asarray(im), np.asarray(originals[i]))
    assert b"iTXt" in (folder / names[0]).read_bytes()  # non-latin-1 text


def test_latin1_text_uses_a_plain_text_chunk(tmp_path: Path) -> None:
    video = save_video(make_frames(1), tmp_path, seed=1, formats=["PNG"], infotext="Größe\nx: y")
    data = (video.files["PNG"] / "00000.png").read_bytes()
    assert b"tEXtparameters\x00Gr\xf6\xdfe\nx: y" in data
    assert read_infotext(video.files["PNG"]) == "Größe\nx: y"


# ------------------------------------------------------------------------------- MP4 / WEBM
@pytest.mark.parametrize(("fmt", "codec"), [("MP4", "h264"), ("WEBM", "vp9")])
def test_video_stream_properties(saved: SavedVideo, fmt: str, codec: str) -> None:
    meta, frames = decode_video(saved.files[fmt])
    assert meta["codec"] == codec
    assert meta["pix_fmt"].startswith("yuv420p")
    assert "bt709" in meta["pix_fmt"]
    assert meta["size"] == (W, H) and len(frames) == N
    assert meta["fps"] == pytest.approx(FPS)
    assert meta["duration"] == pytest.approx(N / FPS, abs=0.01)
    source = np.asarray(make_frames()[3], dtype=float)
    assert np.abs(frames[3].astype(float) - source).mean() < 8.0


@pytest.mark.parametrize("fmt", ["MP4", "WEBM"])
def test_video_comment_read_by_ffmpeg_banner(saved: SavedVideo, fmt: str) -> None:
    assert banner_comment(ffmpeg_banner(saved.files[fmt])) == INFOTEXT


def test_mp4_is_faststart(saved: SavedVideo) -> None:
    data = saved.files["MP4"].read_bytes()
    atoms, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        atoms.append(kind.decode("latin-1"))
        offset += size if size >= 8 else len(data)
    assert atoms.index("moov") < atoms.index("mdat")


@pytest.mark.parametrize(("fmt", "codec"), [("MP4", "h264"), ("WEBM", "vp9")])
def test_odd_sizes_are_padded_to_even(tmp_path: Path, fmt: str, codec: str) -> None:
    frames = make_frames(4, w=63, h=47)
    video = save_video(frames, tmp_path, seed=1, formats=[fmt], infotext="t",
                       options=EncodeOptions(fps=12, mp4_preset="veryfast", mp4_tune="animation",
                                             mp4_crf=18, webm_crf=20))
    meta, decoded = decode_video(video.files[fmt])
    assert meta["codec"] == codec and meta["size"] == (64, 48) and len(decoded) == 4
    source = np.asarray(frames[1], dtype=float)
    assert np.abs(decoded[1][:47, :63] - source).mean() < 6.0
    # the added column repeats the last one: not black
    assert np.abs(decoded[1][:47, 63].astype(float) - source[:, 62]).mean() < 12.0


def test_ffmetadata_parser_handles_escapes() -> None:
    text = ";FFMETADATA1\ntitle=a\\=b\\;c\\#d\\\\e\ncomment=line1\\\nline2\n#note\n[STREAM]\nx=y\n"
    assert parse_ffmetadata(text) == {"title": "a=b;c#d\\e", "comment": "line1\nline2"}


def test_txt_sidecar_is_exact_utf8(saved: SavedVideo) -> None:
    assert saved.files["TXT"].read_bytes() == INFOTEXT.encode("utf-8")
