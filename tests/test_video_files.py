"""Output writer: timing maths, ping-pong, names, validation, no overwrite, no partial files."""

from __future__ import annotations

import json
import logging
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from motion_module.cli import cli
from motion_module.errors import OutputError, ParameterError
from motion_module.video import encoders
from motion_module.video import files as output
from motion_module.video.files import (
    EncodeOptions,
    frame_durations,
    gif_delays,
    ping_pong,
    read_infotext,
    save_video,
    validate_request_id,
)
from tests.fixtures.frames import gradient_frames

INFOTEXT = 'a "cat", sitting: here\nNegative prompt: dog\nSteps: 20, Model: Größe'


def make_frames(n: int = 8, w: int = 64, h: int = 48) -> list[Image.Image]:
    """Smooth moving gradients: (h, w, 3) uint8 frames, each different."""
    return gradient_frames(n, w, h)


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# ------------------------------------------------------------------------------------ timing
@pytest.mark.parametrize("fps", [8, 12, 24, 30, 7.5, 10, 15, 25, 29.97, 50, 1, 0.5])
def test_gif_delays_track_the_exact_clock(fps: float) -> None:
    n = 37
    delays = gif_delays(n, fps)
    assert len(delays) == n and min(delays) >= 2
    total = 0
    for k, delay in enumerate(delays, start=1):
        total += delay
        assert abs(total - 100 * k / fps) <= 0.5 + 1e-9
    assert abs(sum(delays) - 100 * n / fps) <= 0.5 + 1e-9


def test_gif_delays_alternate_at_8_fps() -> None:
    assert gif_delays(6, 8) == [12, 13, 12, 13, 12, 13]
    assert gif_delays(4, 24) == [4, 4, 4, 5]  # marks 0, 4.17, 8.33, 12.5 (half down), 16.67
    assert gif_delays(0, 8) == []


@pytest.mark.parametrize("fps", [60, 100, 240])
def test_gif_delays_above_50_fps_are_clamped_with_a_warning(fps: float, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="animatediff"):
        assert gif_delays(5, fps) == [2, 2, 2, 2, 2]
        assert frame_durations(3, fps, 1000) == [20, 20, 20]
    assert "50 fps" in caplog.text


def test_webp_durations_in_milliseconds() -> None:
    assert frame_durations(3, 24, 1000) == [42, 41, 42]
    assert sum(frame_durations(30, 7.5, 1000)) == 4000


# --------------------------------------------------------------------------------- ping pong
@pytest.mark.parametrize(("frames", "expected"), [
    ([], []), ([1], [1]), ([1, 2], [1, 2]), ([1, 2, 3], [1, 2, 3, 2]),
    ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 4, 3, 2]),
])
def test_ping_pong(frames: list[int], expected: list[int]) -> None:
    result = ping_pong(frames)
    assert result == expected
    if len(frames) >= 2:
        assert len(result) == 2 * len(frames) - 2


def test_ping_pong_keeps_objects_and_accepts_tuples() -> None:
    frames = make_frames(3)
    result = ping_pong(tuple(frames))
    assert [id(f) for f in result] == [id(frames[0]), id(frames[1]), id(frames[2]), id(frames[1])]


# -------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("good", ["abc", "A-1_b", "x" * 64, "0"])
def test_request_id_accepted(good: str) -> None:
    assert validate_request_id(good) == good


def test_request_id_none_means_no_id() -> None:
    assert validate_request_id(None) is None


@pytest.mark.parametrize("bad", ["../x", "", "x" * 65, "a\x00b", "a/b", "a b", "abc\n", "é", ".",
                                 "a\\b", 5])
def test_request_id_rejected(bad: object, tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="request_id"):
        validate_request_id(bad)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="request_id"):
        save_video(make_frames(2), tmp_path, seed=1, formats=["TXT"], infotext="x",
                   request_id=bad)  # type: ignore[arg-type]
    assert listing(tmp_path) == []


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"fps": 0}, "fps"), ({"fps": -8}, "fps"), ({"fps": math.nan}, "fps"),
    ({"fps": math.inf}, "fps"), ({"fps": True}, "fps"), ({"fps": "8"}, "fps"),
    ({"loop": -1}, "loop"), ({"mp4_crf": 52}, "mp4_crf"),
    ({"webm_crf": 64}, "webm_crf"), ({"webp_quality": 101}, "webp_quality"),
    ({"mp4_preset": "turbo"}, "mp4_preset"), ({"mp4_tune": "anime"}, "mp4_tune"),
    ({"gif_palette": 1}, "gif_palette"), ({"mp4_crf": True}, "mp4_crf"), ({"loop": 1.0}, "loop"),
])
def test_encode_options_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ParameterError) as info:
        EncodeOptions(**kwargs)
    assert info.value.field == field


@pytest.mark.parametrize(("frames", "match"), [
    ([], "no frames"),
    ([Image.new("RGB", (8, 8)), Image.new("RGB", (8, 10))], "one size"),
    ([Image.new("RGB", (8, 8)), np.zeros((8, 8, 3))], "not a PIL image"),
])
def test_bad_frames_rejected(frames: list, match: str, tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match=match):
        save_video(frames, tmp_path, seed=1, formats=["GIF"], infotext="x")
    assert listing(tmp_path) == []


def test_frames_must_be_a_sequence(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="list of PIL images"):
        save_video(iter(make_frames(2)), tmp_path, seed=1, formats=["GIF"], infotext="x")  # type: ignore[arg-type]


def test_huge_infotext_is_kept_out_of_video_metadata_only(tmp_path: Path, caplog) -> None:
    huge = "x" * 120_000 + "\nend"
    with caplog.at_level(logging.WARNING, logger="animatediff"):
        saved = save_video(make_frames(2, 16, 16), tmp_path, seed=1, formats=["MP4", "TXT", "GIF"],
                           infotext=huge)
    assert "not embedded in the MP4" in caplog.text
    assert read_infotext(saved.files["MP4"]) is None
    assert read_infotext(saved.files["TXT"]) == huge
    assert read_infotext(saved.files["GIF"]) == huge


@pytest.mark.parametrize("formats", [["GIF", "AVI"], [], ["Frame"]])
def test_bad_formats_rejected(formats: list[str], tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="format"):
        save_video(make_frames(2), tmp_path, seed=1, formats=formats, infotext="x")


@pytest.mark.parametrize("seed", [-1, 1.5, True, "7"])
def test_bad_seed_rejected(seed: object, tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="seed"):
        save_video(make_frames(2), tmp_path, seed=seed, formats=["TXT"], infotext="x")  # type: ignore[arg-type]


# ------------------------------------------------------------------------ names and overwrite
def test_names_count_up_and_formats_are_case_insensitive(tmp_path: Path) -> None:
    frames = make_frames(2)
    a = save_video(frames, tmp_path, seed=5, formats=["txt", "Gif", "GIF"], infotext="a")
    b = save_video(frames, tmp_path, seed=6, formats=["TXT"], infotext="b", request_id="req-1")
    assert a.name == "00000-5" and set(a.files) == {"GIF", "TXT"}
    assert b.name == "00001-6-req-1"
    assert listing(tmp_path) == ["00000-5.gif", "00000-5.txt", "00001-6-req-1.txt"]
    assert (tmp_path / "00001-6-req-1.txt").read_text(encoding="utf-8") == "b"


def test_next_number_follows_the_highest_existing_one(tmp_path: Path) -> None:
    (tmp_path / "00041-9.png").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("unrelated")
    saved = save_video(make_frames(2), tmp_path, seed=9, formats=["TXT"], infotext="new")
    assert saved.name == "00042-9"
    assert (tmp_path / "00041-9.png").read_bytes() == b"old"


def test_existing_file_is_never_overwritten(tmp_path: Path, monkeypatch) -> None:
    # Pretend the folder scan missed the existing file: the reservation must still skip it.
    (tmp_path / "00000-9.txt").write_text("precious", encoding="utf-8")
    (tmp_path / "00001-9").mkdir()
    monkeypatch.setattr(output, "_highest_seq", lambda folder: -1)
    saved = save_video(make_frames(2), tmp_path, seed=9, formats=["TXT", "PNG"], infotext="new")
    assert saved.name == "00002-9"
    assert (tmp_path / "00000-9.txt").read_text(encoding="utf-8") == "precious"
    assert list((tmp_path / "00001-9").iterdir()) == []


def test_publish_refuses_an_existing_target(tmp_path: Path) -> None:
    temp, final = tmp_path / ".t.tmp", tmp_path / "final.gif"
    temp.write_bytes(b"new")
    final.write_bytes(b"old")
    with pytest.raises(OutputError, match="left untouched"):
        output._publish(temp, final)
    assert final.read_bytes() == b"old"


def test_writes_stay_inside_the_output_folder(tmp_path: Path) -> None:
    nested = tmp_path / "a" / ".." / "out"
    saved = save_video(make_frames(2), nested, seed=3, formats=["GIF", "PNG", "TXT"], infotext="x")
    root = (tmp_path / "out").resolve()
    assert saved.directory == root
    for path in saved.files.values():
        assert path.resolve().parent == root
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(OutputError, match="outside"):
        output._inside(root, root / ".." / "escape.gif")


def test_output_path_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(OutputError, match=r"cannot create|not a folder"):
        save_video(make_frames(2), target, seed=1, formats=["TXT"], infotext="x")


def test_files_get_normal_permissions(tmp_path: Path) -> None:
    saved = save_video(make_frames(2), tmp_path, seed=1, formats=["TXT", "GIF"], infotext="x")
    umask = os.umask(0)
    os.umask(umask)
    for path in saved.files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


# ---------------------------------------------------------------------- interrupted writes
def _half_writer(exc: BaseException):
    def writer(frames, dest, infotext, options):
        dest.write_bytes(b"RIFF\x00\x00half a file")
        raise exc
    return writer


@pytest.mark.parametrize("exc", [RuntimeError("encoder crashed"), KeyboardInterrupt()])
def test_failure_mid_write_leaves_nothing(exc: BaseException, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(encoders.WRITERS, "WEBP", _half_writer(exc))
    expected = OutputError if isinstance(exc, Exception) else KeyboardInterrupt
    with pytest.raises(expected) as info:
        save_video(make_frames(3), tmp_path, seed=4, formats=["GIF", "PNG", "WEBP", "TXT"],
                   infotext="x")
    if expected is OutputError:
        assert "WEBP" in str(info.value) and "Nothing was saved" in str(info.value)
    assert listing(tmp_path) == []  # no GIF, no half WEBP, no temporaries, no lock
    again = save_video(make_frames(3), tmp_path, seed=4, formats=["TXT"], infotext="x")
    assert again.name == "00000-4"


def test_ffmpeg_dying_mid_write_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path.parent / f"{tmp_path.name}-fake-ffmpeg"
    fake.write_text('#!/bin/sh\nfor last; do :; done\nhead -c 100 > /dev/null\n'
                    'printf "partial" > "$last"\necho "boom: killed" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setattr(encoders, "ffmpeg_exe", lambda: str(fake))
    with pytest.raises(OutputError, match=r"ffmpeg failed to write the MP4.*boom"):
        save_video(make_frames(3), tmp_path, seed=4, formats=["TXT", "MP4"], infotext="x")
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------- modes and sizes
def test_alpha_and_grey_frames_are_converted(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (16, 12), (255, 0, 0, 0))
    grey = Image.new("L", (16, 12), 200)
    saved = save_video([rgba, grey], tmp_path, seed=1, formats=["PNG"], infotext="x")
    first, second = sorted(saved.files["PNG"].iterdir())
    with Image.open(first) as im:
        assert im.mode == "RGB" and im.getpixel((0, 0)) == (0, 0, 0)  # transparent -> black
    with Image.open(second) as im:
        assert im.getpixel((3, 3)) == (200, 200, 200)


def test_odd_sizes_are_padded_by_repeating_the_edge() -> None:
    frames = np.random.default_rng(0).integers(0, 255, (2, 5, 7, 3), dtype=np.uint8)
    even = encoders._even(frames)
    assert even.shape == (2, 6, 8, 3)
    assert np.array_equal(even[:, :5, :7], frames)
    assert np.array_equal(even[:, 5, :7], frames[:, 4])
    assert np.array_equal(even[:, :5, 7], frames[:, :, 6])


# ------------------------------------------------------------------------------- info command
OUR_INFOTEXT = INFOTEXT + ', AnimateDiff: "enable: True, video_length: 2"'


def test_info_command_text_and_json(tmp_path: Path, capsys) -> None:
    saved = save_video(make_frames(2), tmp_path, seed=1, formats=["GIF"], infotext=OUR_INFOTEXT)
    assert cli.main_info([str(saved.files["GIF"])]) == 0
    assert capsys.readouterr().out == OUR_INFOTEXT + "\n"
    assert cli.main_info([str(saved.files["GIF"]), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record == {"file": str(saved.files["GIF"]), "format": "gif", "parameters": OUR_INFOTEXT}


def test_info_command_errors(tmp_path: Path, capsys) -> None:
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    assert cli.main_info([str(plain)]) == 2
    assert "no generation parameters" in capsys.readouterr().err
    still = save_video(make_frames(2), tmp_path, seed=2, formats=["PNG"], infotext=INFOTEXT).files["PNG"]
    assert cli.main_info([str(still)]) == 2  # a WebUI still's parameters: not an AnimateDiff output
    assert "not an AnimateDiff output" in capsys.readouterr().err
    assert cli.main_info([str(tmp_path / "missing.gif")]) == 2
    assert "does not exist" in capsys.readouterr().err
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 32)
    with pytest.raises(OutputError, match="not a GIF"):
        read_infotext(junk)


def test_info_command_runs_as_a_module(tmp_path: Path) -> None:
    saved = save_video(make_frames(2), tmp_path, seed=1, formats=["TXT"], infotext=OUR_INFOTEXT)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "motion_module", "info", "--json",
                           str(saved.files["TXT"])], capture_output=True, cwd=root,
                          timeout=60, check=False,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["parameters"] == OUR_INFOTEXT
