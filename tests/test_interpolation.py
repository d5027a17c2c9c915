"""Frame interpolation's engine (motion_module.rife / interpolation): the IFNet at tiny sizes with random weights,
its warp, the frame-count rule for every loop mode, the output rate and duration, and the weight files."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from motion_module.cli.tools import main_inspect
from motion_module.errors import InterpolationError
from motion_module.params.fields import ClosedLoop, FrameInterpolation
from motion_module.params.request import AnimateDiffParams
from motion_module.video.encoders import animated_timing
from motion_module.video.files import ping_pong
from motion_module.video.input import probe_video
from motion_module.video.interpolation import (
    InterpHost,
    find_rife_weights,
    interpolate,
    interpolated_count,
    interpolated_fps,
    interpolation_for,
    links,
    load_rife,
    rife_frames,
)
from motion_module.video.publish import Published, publish_videos, video_job
from motion_module.video.rife import IFNet, ifnet_config, warp
from tests.fixtures.ffmpeg import packet_pts
from tests.fixtures.frames import gradient_frames
from tests.fixtures.rife import TINY, tiny_ifnet, write_weights


def solid(colours: list[int], w: int = 20, h: int = 12) -> list[Image.Image]:
    return [Image.new("RGB", (w, h), (c, 255 - c, c // 2)) for c in colours]


def disc(w: int, h: int, cx: int, cy: int, r: int = 5) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (((x - cx) ** 2 + (y - cy) ** 2) <= r * r).float().expand(1, 3, h, w).clone()


# --------------------------------------------------------------------------------------------- the network
def test_shapes_at_tiny_sizes() -> None:
    net = tiny_ifnet()
    a, b = torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48)
    out = net(a, b, torch.tensor([0.25, 0.5]))
    assert out.shape == (2, 3, 32, 48) and torch.isfinite(out).all()
    frames = rife_frames(gradient_frames(3, 30, 20), 3, False, net)  # odd size: padded to 32x32, cropped back
    assert len(frames) == 9 and {f.size for f in frames} == {(30, 20)} and {f.mode for f in frames} == {"RGB"}


def test_the_default_shape_is_practical_rifes_v4_25_layout() -> None:
    state = IFNet().state_dict()
    assert tuple(state["encode.cnn0.weight"].shape) == (16, 3, 3, 3)
    assert tuple(state["encode.cnn3.weight"].shape) == (16, 4, 4, 4)  # transposed convolution: (in, out, k, k)
    assert tuple(state["block0.conv0.0.0.weight"].shape) == (96, 15, 3, 3)
    assert tuple(state["block1.conv0.0.0.weight"].shape) == (64, 28, 3, 3)
    assert tuple(state["block4.convblock.7.beta"].shape) == (1, 32, 1, 1)
    assert tuple(state["block4.lastconv.0.weight"].shape) == (32, 52, 4, 4)
    assert "block5.conv0.0.0.weight" not in state
    assert ifnet_config(state) == IFNet().config and ifnet_config(tiny_ifnet().state_dict()) == TINY


def test_two_identical_frames_give_that_frame() -> None:
    frame = gradient_frames(1, 32, 16)[0]
    pixels = torch.from_numpy(np.array(frame)).permute(2, 0, 1)[None].float() / 255
    # the network itself, blocks outputting no flow and an even mask: the warped inputs, averaged
    still = tiny_ifnet(still=True)(pixels, pixels.clone(), torch.tensor([0.3]))
    torch.testing.assert_close(still, pixels, atol=1e-5, rtol=0)
    # any random network on a flat frame: warping a flat frame leaves it flat, and the blend of equals is it
    flat = torch.full((1, 3, 32, 32), 0.4)
    torch.testing.assert_close(tiny_ifnet(3)(flat, flat.clone(), torch.tensor([0.5])), flat, atol=1e-5, rtol=0)
    # the runner: a pair of equal frames is not sent to the network; its frames are copies
    out = rife_frames([frame, frame.copy()], 4, False, tiny_ifnet(5))
    assert len(out) == 8 and all(np.array_equal(np.asarray(f), np.asarray(frame)) for f in out)


@pytest.mark.parametrize("dx, dy", [(3, 0), (0, -4), (5, 2), (-6, -3)])
def test_the_warp_moves_a_disc_by_exactly_the_flow(dx: int, dy: int) -> None:
    w, h = 40, 30
    image = disc(w, h, 20, 15)
    flow = torch.tensor([float(dx), float(dy)]).view(1, 2, 1, 1).expand(1, 2, h, w)
    moved = warp(image, flow)  # backward warp: the content moves against the flow
    torch.testing.assert_close(moved, disc(w, h, 20 - dx, 15 - dy), atol=1e-5, rtol=0)
    torch.testing.assert_close(warp(image, torch.zeros(1, 2, h, w)), image, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------- the frame rule
def test_links_in_order() -> None:
    assert links(4, False) == [(0, 1), (1, 2), (2, 3)]
    assert links(4, True) == [(0, 1), (1, 2), (2, 3), (3, 0)]
    assert links(1, True) == [] and links(0, False) == []


@pytest.mark.parametrize("loop", [False, True])
def test_frame_order_and_count(loop: bool) -> None:
    colours = [0, 60, 120, 240]
    net = tiny_ifnet(still=True)  # made frames = the average of the pair: each one tells which pair made it
    out = rife_frames(solid(colours), 3, loop, net)
    assert len(out) == 4 * 3 == interpolated_count(4, 3)
    got = [int(np.asarray(f)[0, 0, 0]) for f in out]
    last = [(240 + 0) // 2] * 2 if loop else [240, 240]  # closed loop: towards the first frame; else held
    assert got == [0, 30, 30, 60, 90, 90, 120, 180, 180, 240, *last]


@pytest.mark.parametrize("mode, frames, context, loop", [
    (ClosedLoop.N, 6, 16, False), (ClosedLoop.R_MINUS_P, 6, 16, True), (ClosedLoop.R_PLUS_P, 20, 16, True),
    (ClosedLoop.A, 20, 16, True), (ClosedLoop.A, 6, 16, True)])
def test_frame_counts_for_each_loop_mode(mode: ClosedLoop, frames: int, context: int, loop: bool) -> None:
    params = AnimateDiffParams(closed_loop=mode, interp=FrameInterpolation.RIFE, interp_x=3, video_length=frames)
    pingpong = mode is ClosedLoop.A and frames <= context  # A on a short clip: forward then backward
    job = interpolation_for(params, 8.0, ping_pong=pingpong)
    assert job is not None and job.loop is loop and job.factor == 3
    clip = solid([i * 10 for i in range(frames)], 16, 16)
    clip = ping_pong(clip) if pingpong else clip
    out = rife_frames(clip, job.factor, job.loop, tiny_ifnet(still=True))
    assert len(out) == interpolated_count(len(clip), 3) == len(clip) * 3
    assert [out[i * 3] for i in range(len(clip))] == clip  # the generated frames, unchanged, every X frames
    tail = int(np.asarray(out[-1])[0, 0, 0])
    assert tail == ((clip[-1].getpixel((0, 0))[0] + clip[0].getpixel((0, 0))[0]) // 2 if loop
                    else clip[-1].getpixel((0, 0))[0])


def test_off_or_factor_one_adds_nothing() -> None:
    assert interpolation_for(AnimateDiffParams(), 8.0) is None
    assert interpolation_for(AnimateDiffParams(interp=FrameInterpolation.RIFE, interp_x=1), 8.0) is None
    assert rife_frames(solid([0, 9]), 1, True, tiny_ifnet()) == solid([0, 9])


# --------------------------------------------------------------------------------------- rate and duration
@pytest.mark.parametrize("fps, factor, expected", [
    (8.0, 4, Fraction(32)), (12.0, 10, Fraction(120)), (Fraction(30000, 1001), 3, Fraction(90000, 1001)),
    (29.97, 2, Fraction(5994, 100)), (7.5, 2, Fraction(15))])
def test_the_rate_is_multiplied_and_the_duration_kept(fps: float | Fraction, factor: int, expected: Fraction) -> None:
    rate = interpolated_fps(fps, factor)
    assert rate == expected
    for frames in (1, 16, 17):
        assert Fraction(interpolated_count(frames, factor)) / rate == Fraction(frames) / Fraction(fps) \
            .limit_denominator(100_000)


def test_an_explicit_output_rate_wins() -> None:
    assert interpolated_fps(8.0, 4, explicit=24.0) == 24.0
    params = AnimateDiffParams(interp=FrameInterpolation.RIFE, interp_x=4, interp_fps=30)
    job = interpolation_for(params, 8.0)
    assert job is not None and job.fps == 30
    job = interpolation_for(params.replace_field("interp_fps", 0), Fraction(30000, 1001))
    assert job is not None and job.fps == Fraction(120000, 1001)


# --------------------------------------------------------------------------------------------- weight files
@pytest.mark.parametrize("name", ["flownet.pkl", "rife-v4.26.safetensors", "RIFE_4.25.pth"])
def test_weight_files_load_safely_and_run_like_the_network(tmp_path: Path, name: str) -> None:
    net = tiny_ifnet(7)
    write_weights(tmp_path / name, net)
    (tmp_path / "mm_sd15_v3.safetensors").write_bytes(b"")  # motion modules in the same folder are not taken
    assert find_rife_weights(tmp_path).name == name
    loaded = load_rife(find_rife_weights(tmp_path))
    a, b = torch.rand(1, 3, 16, 32), torch.rand(1, 3, 16, 32)
    torch.testing.assert_close(loaded(a, b, torch.tensor([0.5])), net(a, b, torch.tensor([0.5])))
    job = interpolation_for(AnimateDiffParams(interp=FrameInterpolation.RIFE, interp_x=2, closed_loop=ClosedLoop.N),
                            8.0, host=InterpHost(device="cpu", model_root=tmp_path))
    assert job is not None and len(interpolate(gradient_frames(3, 16, 16), job)) == 6


def test_missing_weights_say_what_to_download(tmp_path: Path) -> None:
    with pytest.raises(InterpolationError, match="Practical-RIFE.*flownet.pkl"):
        find_rife_weights(tmp_path)


def test_inspect_recognises_rife_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_weights(tmp_path / "flownet.pkl", tiny_ifnet())
    assert main_inspect([str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"].startswith("RIFE") and info["blocks"] == 3 and info["widths"] == [8, 8, 8]
    assert main_inspect([str(path)]) == 0
    assert "RIFE frame-interpolation weights (IFNet v4.x), 3 flow blocks" in capsys.readouterr().out
    state = {k: v for k, v in tiny_ifnet().state_dict().items() if not k.startswith("block1.")}
    torch.save(state, tmp_path / "rife-broken.pkl")
    assert main_inspect([str(tmp_path / "rife-broken.pkl")]) == 2
    assert "rife-broken.pkl: not RIFE IFNet v4.x weights" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ publishing (stage 2)
def _publish(tmp_path: Path, params: AnimateDiffParams, clip: list[Image.Image], weights: Path | None,
             progress: list[tuple[int, int]] | None = None, **kw: object) -> Published:
    settings = {"animatediff_interp_path": str(weights) if weights else str(tmp_path / "empty")}
    host = InterpHost(device="cpu", progress=None if progress is None else lambda d, t: progress.append((d, t)))
    job = video_job(len(clip), params, tmp_path / "out", lambda key, default: settings.get(key, default), host=host,
                    **kw)  # type: ignore[arg-type]
    n = len(clip)
    return publish_videos(clip, ["p, Seed: 3"] * n, [3] * n, ["p"] * n, job, for_api=True)


def _files(out: Published, suffix: str) -> Path:
    return next(Path(f) for f in out.files if f.endswith(suffix))


def _animation(path: Path) -> tuple[int, int]:
    """(frames, total duration in ms) of a GIF (Pillow) or an animated WEBP (its ANMF chunks, read directly)."""
    data = path.read_bytes()
    if data[:4] == b"RIFF":
        durations, pos = [], 12
        while pos + 8 <= len(data):
            tag, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
            if tag == b"ANMF":
                durations.append(int.from_bytes(data[pos + 20:pos + 23], "little"))
            pos += 8 + size + (size & 1)
        return len(durations), sum(durations)
    with Image.open(path) as image:
        durations = []
        for i in range(image.n_frames):
            image.seek(i)
            durations.append(int(image.info["duration"]))
    return len(durations), sum(durations)


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    folder = tmp_path / "rife"
    folder.mkdir()
    write_weights(folder / "flownet.pkl", tiny_ifnet(11))
    return folder


def test_every_format_and_the_api_get_the_interpolated_frames(tmp_path: Path, weights: Path) -> None:
    clip = gradient_frames(4, 32, 24)
    params = AnimateDiffParams(enable=True, interp=FrameInterpolation.RIFE, interp_x=3, closed_loop=ClosedLoop.N,
                               fps=8, formats=("GIF", "MP4", "WEBP", "PNG", "Frame"))
    progress: list[tuple[int, int]] = []
    out = _publish(tmp_path, params, clip, weights, progress)
    assert not out.notes
    # GIF/WEBP: their encoders merge neighbours that encode alike (the held last frame; random-weight frames
    # differing by 1/255) into one longer frame, so the time is what is exact: 4 frames at 8 fps
    assert _animation(_files(out, ".gif"))[1] == 500 and _animation(_files(out, ".webp"))[1] == 500
    mp4 = _files(out, ".mp4")
    assert len(packet_pts(mp4)) == 12 and probe_video(mp4).fps == 24
    png = next(Path(f) for f in out.files if Path(f).is_dir())
    assert len(list(png.glob("*.png"))) == 12
    returned = out.images[3:]  # GIF, MP4, WEBP as base64, then the frames
    assert len(returned) == 12 and all(isinstance(f, Image.Image) for f in returned)
    assert all(np.array_equal(np.asarray(returned[i * 3]), np.asarray(clip[i])) for i in range(4))
    assert progress[-1] == (6, 6)  # 3 pairs x 2 frames each, in batches of 4: (4, 6), (6, 6)
    assert progress == [(4, 6), (6, 6)]


def test_above_50_fps_gif_and_webp_keep_the_duration_and_an_explicit_rate_wins(tmp_path: Path,
                                                                              weights: Path) -> None:
    params = AnimateDiffParams(enable=True, interp=FrameInterpolation.RIFE, interp_x=10, closed_loop=ClosedLoop.A,
                               fps=8, formats=("GIF", "WEBP", "MP4"), context=16)
    out = _publish(tmp_path, params, gradient_frames(5, 16, 16), weights)
    # 5 frames x 10 at 80 fps: GIF/WEBP show every 2nd frame, 25 frames over 0.625 s (GIF to half a centisecond)
    assert _animation(_files(out, ".gif"))[1] == 620 and _animation(_files(out, ".webp"))[1] == 625
    assert len(packet_pts(_files(out, ".mp4"))) == 50 and probe_video(_files(out, ".mp4")).fps == 80
    fixed = _publish(tmp_path / "fixed", params.replace_field("interp_fps", 20), gradient_frames(5, 16, 16), weights)
    assert probe_video(_files(fixed, ".mp4")).fps == 20 and _animation(_files(fixed, ".webp"))[1] == 2500


def test_a_failure_saves_the_frames_without_interpolation_and_says_why(tmp_path: Path) -> None:
    params = AnimateDiffParams(enable=True, interp=FrameInterpolation.RIFE, interp_x=3, fps=8,
                               formats=("GIF", "PNG"))
    out = _publish(tmp_path, params, gradient_frames(4, 16, 16), None)
    assert len(out.notes) == 1
    assert out.notes[0].startswith("AnimateDiff: frame interpolation (RIFE x3; the video is saved without it) "
                                   "failed: no RIFE weights in")
    assert _animation(_files(out, ".gif")) == (4, 500)  # 8 fps, not 24
    assert len(list(next(Path(f) for f in out.files if Path(f).is_dir()).glob("*.png"))) == 4


def test_kept_audio_stays_in_sync(tmp_path: Path, weights: Path) -> None:
    from tests.fixtures.ffmpeg import audio_seconds, make

    source = tmp_path / "source.m4a"
    make("-f", "lavfi", "-i", "sine=f=440:duration=3", "-c:a", "aac", str(source))
    params = AnimateDiffParams(enable=True, interp=FrameInterpolation.RIFE, interp_x=4, fps=8, formats=("MP4",))
    out = _publish(tmp_path, params, gradient_frames(4, 16, 16), weights, audio=source)
    mp4 = _files(out, ".mp4")
    assert not out.notes and len(packet_pts(mp4)) == 16 and probe_video(mp4).fps == 32
    assert Fraction(1, 2) - Fraction(3, 100) <= audio_seconds(mp4) <= Fraction(1, 2) + Fraction(1, 100)


@pytest.mark.parametrize("count, fps", [(40, Fraction(80)), (160, Fraction(120)), (33, Fraction(90000, 1001)),
                                        (16, Fraction(32))])
def test_animated_timing_is_exact(count: int, fps: Fraction) -> None:
    for ticks in (100, 1000):
        shown, durations = animated_timing(count, fps, ticks, keep_duration=True)
        assert len(shown) == len(durations) and shown[0] == 0
        assert abs(sum(durations) - count * ticks / fps) <= Fraction(1, 2)
        assert min(durations) >= ticks // 50  # browsers stretch shorter GIF delays
        for i, start in enumerate(shown):  # every frame shown starts within half a tick of its exact time
            assert abs(sum(durations[:i]) - start * ticks / fps) <= Fraction(1, 2)


# ------------------------------------------------------------------------------------ FILM through Deforum
FILM_STAND_IN = '''"""Test stand-in of Deforum's FILM entry point: its signature and file contract, linear blends."""
import json, os
from glob import glob

import numpy as np
from PIL import Image


def run_film_interp_infer(model_path=None, input_folder=None, save_folder=None, inter_frames=None):
    paths = sorted(glob(os.path.join(input_folder, "*.png")))
    with open(os.environ["FILM_STAND_IN_LOG"], "a") as log:
        log.write(json.dumps({"model_path": model_path, "inputs": len(paths), "inter_frames": inter_frames}) + "\\n")
    os.makedirs(save_folder, exist_ok=True)
    frames = [np.asarray(Image.open(p).convert("RGB")).astype(np.float64) for p in paths]
    number = 0
    for i in range(len(frames) - 1):
        for k in range(inter_frames + 1 + (i == len(frames) - 2)):
            t = k / (inter_frames + 1)
            made = np.round(frames[i] * (1 - t) + frames[i + 1] * t).astype(np.uint8)
            Image.fromarray(made).save(os.path.join(save_folder, f"frame_{number:09d}.png"))
            number += 1
'''
HELPERS_STAND_IN = '''def check_and_download_film_model(model_name, model_dest_folder):
    import os
    os.makedirs(model_dest_folder, exist_ok=True)
    open(os.path.join(model_dest_folder, model_name), "a").close()
'''


@pytest.fixture
def deforum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder laid out like Deforum's import roots, on sys.path, with the stand-ins; returns the call log."""
    root = tmp_path / "deforum-src"
    for package, source in (("film_interpolation", ("film_inference", FILM_STAND_IN)),
                            ("deforum_helpers", ("frame_interpolation", HELPERS_STAND_IN))):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        (root / package / f"{source[0]}.py").write_text(source[1])
    monkeypatch.syspath_prepend(str(root))
    names = ("film_interpolation", "film_interpolation.film_inference", "deforum_helpers",
             "deforum_helpers.frame_interpolation")
    log = tmp_path / "film-calls.jsonl"
    monkeypatch.setenv("FILM_STAND_IN_LOG", str(log))
    yield log
    for name in names:  # the stand-ins leave with their folder
        sys.modules.pop(name, None)


@pytest.mark.parametrize("mode, loop", [(ClosedLoop.R_MINUS_P, True), (ClosedLoop.N, False)])
def test_film_goes_through_deforums_entry_point(tmp_path: Path, deforum: Path, mode: ClosedLoop, loop: bool) -> None:
    colours = [0, 60, 120, 240]
    params = AnimateDiffParams(enable=True, interp=FrameInterpolation.FILM, interp_x=3, closed_loop=mode, fps=8,
                               formats=("MP4", "PNG", "Frame"))
    settings: dict[str, str] = {}
    job = video_job(4, params, tmp_path / "out", lambda key, default: settings.get(key, default),
                    host=InterpHost(models_path=tmp_path / "models"))
    out = publish_videos(solid(colours, 16, 16), ["p"] * 4, [1] * 4, ["p"] * 4, job, for_api=True)
    assert not out.notes
    call = json.loads(deforum.read_text())
    model = tmp_path / "models" / "Deforum" / "film_interpolation" / "film_net_fp16.pt"
    assert call == {"model_path": str(model), "inputs": 5 if loop else 4, "inter_frames": 2} and model.is_file()
    frames = out.images[1:]
    assert len(frames) == 12 and len(packet_pts(_files(out, ".mp4"))) == 12
    assert probe_video(_files(out, ".mp4")).fps == 24
    tail = [160, 80] if loop else [240, 240]  # towards the first frame (240 -> 0), or the last frame held
    assert [int(np.asarray(f)[0, 0, 0]) for f in frames] == [0, 20, 40, 60, 80, 100, 120, 160, 200, 240, *tail]


def test_film_without_deforum_says_what_to_install(tmp_path: Path) -> None:
    params = AnimateDiffParams(enable=True, interp=FrameInterpolation.FILM, interp_x=2, formats=("PNG",))
    job = video_job(3, params, tmp_path / "out", lambda key, default: default, host=InterpHost(models_path=tmp_path))
    out = publish_videos(solid([0, 50, 100]), ["p"] * 3, [1] * 3, ["p"] * 3, job, for_api=True)
    assert len(out.notes) == 1 and "sd-webui-deforum" in out.notes[0] and "choose interp RIFE" in out.notes[0]
    assert len(list(Path(out.files[0]).glob("*.png"))) == 3  # saved without interpolation
