"""``python -m motion_module demo``: the whole pipeline on the toy UNet, its files, the toy UNet.

The toy UNet stands in for ldm's inside the engine package (which must not import ldm); here it is
checked against Stability-AI's real ``UNetModel``: same block layout, same injection sites.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from motion_module.cli.demo import DemoConfig, main_demo, random_motion_module, run_demo
from motion_module.cli.demo_unet import toy_unet
from motion_module.core.injection import injected
from motion_module.params.infotext import params_from_infotext
from motion_module.video.files import read_infotext
from tests.fixtures.unets import assert_same_fingerprint, tiny_unet, unet_fingerprint

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--frames", "20", "--context", "8", "--overlap", "2", "--steps", "2",
         "--formats", "gif,png,txt,mp4"]
QUIET = {"log": lambda line: None}


def _layout(unet: torch.nn.Module) -> list[list[tuple[str, object]]]:
    blocks = [*unet.input_blocks, unet.middle_block, *unet.output_blocks]
    return [[(type(layer).__name__, getattr(layer, "out_channels", None)) for layer in block]
            for block in blocks]


def _png_frames(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(path).convert("RGB")) for path in sorted(folder.glob("*.png"))]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo")
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        assert main_demo(["--out", str(out), *SMALL]) == 0
        assert torch.get_num_threads() == 3  # the demo runs on 1 thread, then puts the count back
    finally:
        torch.set_num_threads(threads)
    return out, "00000-1"


def test_demo_writes_every_requested_format(small_run: tuple[Path, str]) -> None:
    out, name = small_run
    assert sorted(p.name for p in out.iterdir()) == [name, f"{name}.gif", f"{name}.mp4",
                                                      f"{name}.txt"]
    gif = Image.open(out / f"{name}.gif")
    assert gif.n_frames == 20 and gif.size == (64, 64)
    assert len(_png_frames(out / name)) == 20
    assert (out / f"{name}.mp4").stat().st_size > 0


def test_demo_infotext_round_trips(small_run: tuple[Path, str]) -> None:
    out, name = small_run
    text = read_infotext(out / f"{name}.gif")
    assert text is not None
    assert text == read_infotext(out / f"{name}.txt") == read_infotext(out / name)
    lines = text.splitlines()
    assert lines[:3] == ["a lighthouse on a cliff, waves", "0: a calm sea", "10: a storm"]
    assert lines[-1].startswith("Steps: 2, Sampler: Euler, CFG scale: 5, Seed: 1, Size: 64x64")
    fields = params_from_infotext(lines[-1].split("AnimateDiff: ", 1)[1], strict=True)
    assert fields["video_length"] == 20 and fields["context"] == 8 and fields["overlap"] == 2
    assert fields["model"] == "demo-random-v2.safetensors"
    assert [f.value for f in fields["formats"]] == ["GIF", "MP4", "PNG", "TXT"]


def test_demo_is_deterministic_and_the_motion_module_acts(small_run: tuple[Path, str],
                                                          tmp_path: Path) -> None:
    out, name = small_run
    config = DemoConfig(out=tmp_path, frames=20, context=8, overlap=2, steps=2, formats=("TXT",))
    same = run_demo(config, **QUIET)
    saved = _png_frames(out / name)
    assert all(np.array_equal(np.asarray(a), b) for a, b in zip(same.frames, saved, strict=True))
    assert len(same.sites) == 21 and same.spec.family == "v2"
    assert same.windows == [[*range(8)], [*range(6, 14)], [*range(12, 20)]]
    assert same.evaluations == [1.2, 1.2]  # 24 frame-evaluations per 20 frames and group, per step
    other = run_demo(dataclasses.replace(config, mm_seed=1), **QUIET)
    assert torch.isfinite(other.latents).all()
    assert (other.latents - same.latents).abs().max() > 1e-2  # other module weights, other video
    changed = [not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(same.frames, other.frames, strict=True)]
    assert sum(changed) >= 10


def test_closed_loop_a_short_clip_is_ping_pong(tmp_path: Path) -> None:
    config = DemoConfig(out=tmp_path, frames=6, context=8, steps=1, closed_loop="A", family="v3",
                        formats=("GIF",))
    result = run_demo(config, **QUIET)
    assert len(result.sites) == 20 and result.spec.family == "v3"
    gif = Image.open(result.saved.files["GIF"])
    assert gif.n_frames == 10  # 6 forward, 4 back (ends not repeated)
    back = [np.asarray(f).tobytes() for f in result.frames[4:0:-1]]
    assert [np.asarray(f).tobytes() for f in result.frames[6:]] == back


@pytest.fixture(scope="module")
def unets() -> tuple[torch.nn.Module, torch.nn.Module]:
    return toy_unet(), tiny_unet("sd15")


@pytest.mark.parametrize("family, count", [("v2", 21), ("v3", 20), ("v1", 20)])
def test_toy_unet_takes_the_real_injection_like_ldm(unets: tuple[torch.nn.Module, torch.nn.Module],
                                                    family: str, count: int) -> None:
    toy, ldm = unets
    assert _layout(toy) == _layout(ldm)
    mm = random_motion_module(family, 0)
    x = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.full((8,), 500.0)
    ctx = torch.randn(8, 77, 32, generator=torch.Generator().manual_seed(1))
    before = unet_fingerprint(toy)
    with torch.no_grad():
        plain = toy(x, t, ctx)
        with injected(ldm, mm, 4) as reference:
            expected_sites = reference.sites
        with injected(toy, mm, 4) as handle:
            assert handle.sites == expected_sites and len(handle.sites) == count
            norms = [m for m in toy.modules() if type(m).__name__ == "GroupNorm32"]
            # V1 only: the UNet's GroupNorm32 instances pool statistics over the frames
            assert all(("forward" in m.__dict__) == (family == "v1") for m in norms)
            moved = toy(x, t, ctx)
        after = toy(x, t, ctx)
    assert torch.isfinite(moved).all() and 0.05 < plain.std() < 10
    assert (moved - plain).abs().max() > 1e-3
    assert torch.equal(after, plain)
    assert_same_fingerprint(before, unet_fingerprint(toy))


@pytest.mark.parametrize("args, message", [
    (["--size", "100"], "multiple of 64"),
    (["--family", "v1", "--context", "32"], "24-frame limit"),
    (["--context", "8", "--overlap", "8"], "overlap"),
    (["--formats", "gif,avi"], "AVI"),
    (["--frames", "0"], "at least 1"),
])
def test_bad_arguments_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main_demo(["--out", str(tmp_path), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_out_inside_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        with pytest.raises(SystemExit) as exit_info:
            main_demo(["--out", str(out)])
        assert exit_info.value.code == 2
        assert "not a folder" in capsys.readouterr().err
    assert blocker.read_text() == "x"


def test_help_says_the_weights_are_random(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main_demo(["--help"])
    assert exit_info.value.code == 0
    assert "RANDOM" in capsys.readouterr().out


def test_command_line_entry(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "motion_module", "demo", "--out", str(tmp_path),
               "--frames", "8", "--formats", "gif", "--steps", "1"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "RANDOM" in result.stdout and "windows of step 0: [0-7]" in result.stdout
    assert Image.open(tmp_path / "00000-1.gif").n_frames == 8


def test_demo_motion_is_visible_and_smooth(small_run: tuple[Path, str]) -> None:
    """Prompt travel (keyframes 0 and 10 of 20) moves the subject: frame 0 and frame 10 differ more than
    any two neighbouring frames do, and after the last keyframe the picture moves less than before."""
    out, name = small_run
    frames = [f.astype(np.float32) for f in _png_frames(out / name)]
    step = [float(np.abs(b - a).mean()) for a, b in zip(frames, frames[1:])]
    travel = float(np.abs(frames[10] - frames[0]).mean())
    assert travel > 8 and max(step) < travel / 1.5
    assert np.mean(step[10:]) < np.mean(step[:10])


def test_demo_leaves_no_temporary_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    config = DemoConfig(out=tmp_path / "out", frames=4, context=4, overlap=0, steps=1, formats=("GIF",))
    result = run_demo(config, **QUIET)
    assert list(scratch.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00000-1.gif"]  # no locks, no temporaries
    assert result.saved.files["GIF"].is_absolute()
