"""Video-to-video through the API of a live A1111 1.10 with the real sd-webui-controlnet 1.1.455 and the tiny
random ControlNet: a video source, a frames folder, a unit's own batch folder and an inpaint unit each give a
video of the right length; every context window sees exactly its frames' hints; restore; clear errors.

Server-side inputs are written into the launched WebUI's data folder (the folders AnimateDiff may read); in
URL mode those tests are skipped, and the video source goes as base64.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from motion_module.video.metadata import ffmpeg_exe
from tests.fixtures.controlnet_units import BAR_SIZE as SIZE
from tests.fixtures.controlnet_units import api_unit, bar_frame, bar_frames_folder, lossless_video, png_b64

from .client import WebUIClient, WebUIError, png_bytes, tiny_txt2img, videos
from .launcher import WebUISession


def frames_folder(folder: Path, count: int, offset: int = 0) -> Path:
    return bar_frames_folder(folder, list(range(offset, offset + count)))


def make_video(path: Path, count: int, *, rate: str = "30000/1001", audio: bool = True) -> Path:
    folder = frames_folder(path.parent / f"{path.stem}-frames", count)
    for i in range(count):
        (folder / f"{i}.png").rename(folder / f"{i:03d}.png")
    sound = ["-f", "lavfi", "-i", "sine=f=440:duration=5"] if audio else []
    cmd = [ffmpeg_exe(), "-loglevel", "error", "-y", "-framerate", rate, "-i", str(folder / "%03d.png"), *sound,
           "-frames:v", str(count), "-c:v", "libx264", "-pix_fmt", "yuv420p", *(["-c:a", "aac"] if audio else []),
           "-shortest" if audio else "-an", str(path)]
    subprocess.run(cmd, check=True, capture_output=True)
    return path


@pytest.fixture
def inputs(webui_session: WebUISession) -> Path:
    if webui_session.data_dir is None:
        pytest.skip("server-side frame folders need a WebUI this session launched (its data folder)")
    folder = webui_session.data_dir / "v2v-inputs"
    folder.mkdir(exist_ok=True)
    return folder


def unit(model: str, **extra: Any) -> dict[str, Any]:
    return api_unit(model, extra.pop("module", "none"), **extra)


def v2v(ad: dict[str, Any], *units: dict[str, Any], **extra: Any) -> dict[str, Any]:
    args = {"enable": True, "model": "tiny_v2.safetensors", "format": ["GIF"], "video_length": 0,
            "batch_size": 4, "closed_loop": "N", **ad}
    return tiny_txt2img(seed=11, alwayson_scripts={"AnimateDiff": {"args": [args]},
                                                  "ControlNet": {"args": list(units)}}, **extra)


def gif_length(data: bytes) -> int:
    return int(Image.open(io.BytesIO(data)).n_frames)


def probe(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / "probe.mp4"
    path.write_bytes(data)
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


def test_video_source_path_sets_length_rate_and_audio(api: WebUIClient, cn_model: str, inputs: Path,
                                                      tmp_path: Path) -> None:
    video = make_video(inputs / "clip.mp4", 10)
    response = api.post("/sdapi/v1/txt2img", v2v({"video_source": str(video), "fps": 0, "format": ["GIF", "MP4"]},
                                                 unit(cn_model)))
    gif, mp4 = videos(response)
    assert gif_length(gif) == 10  # video_length 0: every frame of the source
    info = probe(mp4, tmp_path)
    assert "29.97 fps" in info and "Audio:" in info, info
    infotext = json.loads(response["info"])["infotexts"][0]
    assert "video_length: 10" in infotext and "fps: 0" in infotext


def _notes(response: dict[str, Any]) -> list[str]:
    return list(json.loads(response["info"])["extra_generation_params"].get("AnimateDiff notes", []))


def test_audio_is_kept_only_when_the_video_plays_at_the_sources_speed(api: WebUIClient, cn_model: str,
                                                                       inputs: Path, tmp_path: Path) -> None:
    """A 12 fps source with sound sent with the API's default FPS (8) plays slower than the source: its MP4 comes
    without the audio and a note says why. FPS 12 or 0 plays at the source's speed and keeps the audio."""
    video = make_video(inputs / "twelve.mp4", 8, rate="12")
    slow = api.post("/sdapi/v1/txt2img", v2v({"video_source": str(video), "format": ["MP4"]}, unit(cn_model)))
    info = probe(videos(slow)[0], tmp_path)
    assert " 8 fps" in info and "Audio:" not in info, info
    assert [n for n in _notes(slow) if "audio was left out" in n and "8 fps and the source at 12 fps" in n
            and "set FPS to 0 (the source's rate) or 12" in n], _notes(slow)
    for fps in (12, 0):
        synced = api.post("/sdapi/v1/txt2img", v2v({"video_source": str(video), "format": ["MP4"], "fps": fps},
                                                   unit(cn_model)))
        info = probe(videos(synced)[0], tmp_path)
        assert " 12 fps" in info and "Audio:" in info, info
        assert not [n for n in _notes(synced) if "audio" in n], _notes(synced)


def test_base64_video_source_and_frames_folder_and_unit_batch(api: WebUIClient, cn_model: str,
                                                              inputs: Path) -> None:
    video = make_video(inputs / "b64.mp4", 6, audio=False)
    encoded = "data:video/mp4;base64," + base64.b64encode(video.read_bytes()).decode()
    assert gif_length(videos(api.post("/sdapi/v1/txt2img", v2v({"video_source": encoded}, unit(cn_model))))[0]) == 6
    folder = frames_folder(inputs / "frames", 7)
    by_path = api.post("/sdapi/v1/txt2img", v2v({"video_path": str(folder)}, unit(cn_model)))
    assert gif_length(videos(by_path)[0]) == 7
    own = frames_folder(inputs / "own", 5)
    by_unit = api.post("/sdapi/v1/txt2img", v2v({"video_path": str(folder)},
                                                unit(cn_model, input_mode="batch", batch_images=str(own))))
    assert gif_length(videos(by_unit)[0]) == 5  # the unit's own folder wins, and sets the (shortest) length


def test_inpaint_unit_reads_images_and_masks(api: WebUIClient, cn_model: str, inputs: Path) -> None:
    clip = inputs / "inpaint"
    frames_folder(clip / "image", 6)
    (clip / "mask").mkdir(parents=True, exist_ok=True)
    for i in range(6):
        mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
        mask[16:48, 16:48] = 255
        Image.fromarray(mask).save(clip / "mask" / f"{i}.png")
    response = api.post("/sdapi/v1/txt2img", v2v({"video_path": str(clip)}, unit(cn_model, module="inpaint_only")))
    assert gif_length(videos(response)[0]) == 6


def _frames(response: dict[str, Any]) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in png_bytes(response)]


def test_each_window_sees_exactly_its_frames_hints(api: WebUIClient, cn_model: str, inputs: Path) -> None:
    """12 frames, context 4, no overlap, N: windows 0-3, 4-7, 8-11 at every step. Two runs whose control frames
    differ only at frame 1: frames 8-11 never share a window with it and must be bit-identical."""
    base, changed = frames_folder(inputs / "k-base", 12), frames_folder(inputs / "k-changed", 12)
    bar_frame(40).save(changed / "1.png")
    ad = {"video_length": 12, "batch_size": 4, "overlap": 0, "format": ["PNG"]}
    a = _frames(api.post("/sdapi/v1/txt2img", v2v({**ad, "video_path": str(base)}, unit(cn_model))))
    b = _frames(api.post("/sdapi/v1/txt2img", v2v({**ad, "video_path": str(changed)}, unit(cn_model))))
    assert len(a) == len(b) == 12
    assert not np.array_equal(a[1], b[1])
    for k in range(8, 12):
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"frame {k} saw frame 1's control")


def test_plain_txt2img_is_unchanged_by_controlnet_and_v2v(api: WebUIClient, cn_model: str,
                                                          inputs: Path) -> None:
    before = png_bytes(api.txt2img(**tiny_txt2img(seed=99)))[0]
    api.post("/sdapi/v1/txt2img", v2v({"video_path": str(frames_folder(inputs / "restore", 6))}, unit(cn_model)))
    assert png_bytes(api.txt2img(**tiny_txt2img(seed=99)))[0] == before
    api.post("/sdapi/v1/txt2img", v2v({"video_length": 6}, unit(cn_model, image=png_b64(bar_frame(3)))))
    assert png_bytes(api.txt2img(**tiny_txt2img(seed=99)))[0] == before


def _error(api: WebUIClient, payload: dict[str, Any]) -> str:
    with pytest.raises(WebUIError) as caught:
        api.post("/sdapi/v1/txt2img", payload)
    return str(caught.value)


def test_clear_errors(api: WebUIClient, cn_model: str, inputs: Path, tmp_path: Path) -> None:
    short = frames_folder(inputs / "short", 5)
    body = _error(api, v2v({"video_path": str(short), "video_length": 9}, unit(cn_model)))
    assert "HTTP 422" in body and "ControlNet unit 0" in body and "5" in body and "9" in body, body
    (inputs / "empty").mkdir(exist_ok=True)
    junk = inputs / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    for field, value, reason in (("video_path", inputs / "empty", "holds no images"),
                                 ("video_path", inputs / "missing-folder", "does not exist"),
                                 ("video_source", inputs / "missing.mp4", "does not exist"),
                                 ("video_source", junk, "junk.mp4")):  # client mistakes: 422 naming the field
        body = _error(api, v2v({field: str(value)}, unit(cn_model)))
        assert "HTTP 422" in body and f"AnimateDiff parameter '{field}'" in body and reason in body, body
    outside = frames_folder(tmp_path / "outside", 4)
    body = _error(api, v2v({"video_path": str(outside)}, unit(cn_model)))
    assert "HTTP 422" in body and "outside the folders" in body, body
    assert "has no input" in _error(api, v2v({"video_length": 4}, unit(cn_model)))


def test_fps_zero_without_a_source_plays_at_eight(api: WebUIClient) -> None:
    response = api.post("/sdapi/v1/txt2img", tiny_txt2img(seed=3, alwayson_scripts={"AnimateDiff": {"args": [
        {"enable": True, "model": "tiny_v2.safetensors", "format": ["GIF"], "video_length": 4, "fps": 0}]}}))
    image = Image.open(io.BytesIO(videos(response)[0]))
    assert image.info["duration"] in (120, 130)


@pytest.mark.parametrize("batch_cond_uncond", [True, False])
def test_v2v_with_hires_fix_travel_and_either_batch_layout(api: WebUIClient, cn_model: str,
                                                           inputs: Path, batch_cond_uncond: bool) -> None:
    folder = frames_folder(inputs / "hires", 8)
    payload = v2v({"video_path": str(folder), "overlap": 2, "format": ["PNG"]}, unit(cn_model),
                  prompt="masterpiece\n0: a calm sea\n4: a storm", enable_hr=True, hr_scale=1.5,
                  hr_upscaler="Latent", hr_second_pass_steps=1, denoising_strength=0.5,
                  override_settings={"batch_cond_uncond": batch_cond_uncond})
    frames = _frames(api.post("/sdapi/v1/txt2img", payload))
    assert len(frames) == 8 and frames[0].shape == (96, 96, 3)  # the hires pass got its own (resized) hints


def test_img2img_batch_tab_makes_one_video_of_the_folder(api: WebUIClient, cn_model: str,
                                                         inputs: Path) -> None:
    """The Batch tab's input folder: its images are the init frames of ONE video (not one clip per image), and
    the frames of a ControlNet unit without an input."""
    try:
        api.post("/animatediff-test/img2img-batch", {})
    except WebUIError as exc:
        if "HTTP 404" in str(exc):
            pytest.skip("the test-only batch-tab route is not installed in this WebUI")
    folder = frames_folder(inputs / "batch-tab", 7)
    ad = {"enable": True, "model": "tiny_v2.safetensors", "format": ["GIF"], "video_length": 0, "batch_size": 4}
    payload = {"init_images": [png_b64(bar_frame(0))], "denoising_strength": 0.7, "prompt": "a bar", "steps": 2,
               "width": SIZE, "height": SIZE, "seed": 5, "sampler_name": "Euler", "cfg_scale": 7,
               "alwayson_scripts": {"AnimateDiff": {"args": [ad]}, "ControlNet": {"args": [unit(cn_model)]}}}
    response = api.post("/animatediff-test/img2img-batch", {"input_dir": str(folder), "payload": payload})
    gifs = videos(response)
    assert len(gifs) == 1 and gif_length(gifs[0]) == 7  # one video, one frame per image in the folder
    assert "video_length: 7" in json.loads(response["info"])["infotexts"][0]


# ----------------------------------------------------------------------------- frame selection
def audio_seconds(data: bytes, tmp_path: Path) -> float:
    path = tmp_path / "audio.mp4"
    path.write_bytes(data)
    out = subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-map", "0:a:0", "-f", "s16le",
                          "-ac", "1", "-ar", "48000", "-"], capture_output=True, check=True)
    return len(out.stdout) / 2 / 48000


def test_frame_selection_feeds_the_unit_exactly_the_selected_frames(api: WebUIClient, cn_model: str,
                                                                    inputs: Path, tmp_path: Path) -> None:
    """skip 2, every 3rd, at most 4 of a 12 fps lossless video: the unit gets source frames 2, 5, 8, 11, so the
    result equals (bit for bit) the one from a folder holding just those four frames, and differs from the
    first four frames'. FPS 0 plays at 12 / 3 = 4 fps and the MP4's audio lasts 4 frames / 4 fps = 1 s."""
    video = lossless_video(inputs / "select.mkv", 20, "12", audio=True)  # its audio ends with its last frame
    ad = {"fps": 0, "format": ["MP4", "Frame"], "video_length": 0, "batch_size": 4}
    response = api.post("/sdapi/v1/txt2img", v2v({**ad, "video_source": str(video), "skip_first_frames": 2,
                                                  "select_every_nth": 3, "frame_load_cap": 4}, unit(cn_model)))
    mp4, selected = videos(response)[0], [np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
                                          for png in png_bytes(response)[1:]]
    assert len(selected) == 4
    info = probe(mp4, tmp_path)
    assert "4 fps" in info and "Audio:" in info, info
    assert abs(audio_seconds(mp4, tmp_path) - 1.0) < 0.05
    infotext = json.loads(response["info"])["infotexts"][0]
    assert "skip_first_frames: 2, select_every_nth: 3, frame_load_cap: 4" in infotext, infotext
    same = _frames(api.post("/sdapi/v1/txt2img", v2v({**ad, "format": ["PNG"], "video_path": str(
        bar_frames_folder(inputs / "picked", [2, 5, 8, 11]))}, unit(cn_model))))
    first = _frames(api.post("/sdapi/v1/txt2img", v2v({**ad, "format": ["PNG"], "video_path": str(
        bar_frames_folder(inputs / "first-four", [0, 1, 2, 3]))}, unit(cn_model))))
    for k in range(4):
        np.testing.assert_array_equal(selected[k], same[k], err_msg=f"frame {k} did not get source frame {2 + 3 * k}")
    assert any(not np.array_equal(a, b) for a, b in zip(selected, first, strict=True))


def test_force_rate_resamples_by_timestamps_and_sets_the_rate(api: WebUIClient, cn_model: str, inputs: Path) -> None:
    """A 12 fps video forced to 8 fps: output frame k shows source frame floor(k * 12 / 8) = 0, 1, 3, 4, 6, 7;
    with FPS 0 the GIF plays at 8 fps (120-130 ms a frame, GIF's centisecond steps)."""
    video = lossless_video(inputs / "rate.mkv", 9, "12")  # 0.75 s: 6 frames at 8 fps
    ad = {"fps": 0, "format": ["GIF", "Frame"], "video_length": 0, "batch_size": 4, "force_rate": 8}
    response = api.post("/sdapi/v1/txt2img", v2v({**ad, "video_source": str(video)}, unit(cn_model)))
    gif = Image.open(io.BytesIO(videos(response)[0]))
    assert gif.n_frames == 6 and gif.info["duration"] in (120, 130)
    resampled = [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in png_bytes(response)[1:]]
    expected = _frames(api.post("/sdapi/v1/txt2img", v2v({"format": ["PNG"], "batch_size": 4, "video_path": str(
        bar_frames_folder(inputs / "rate-picked", [0, 1, 3, 4, 6, 7]))}, unit(cn_model))))
    assert len(resampled) == len(expected) == 6
    for k in range(6):
        np.testing.assert_array_equal(resampled[k], expected[k], err_msg=f"frame {k}")


def test_frame_selection_errors_are_422_naming_the_field(api: WebUIClient, cn_model: str, inputs: Path) -> None:
    video = lossless_video(inputs / "errors.mkv", 6, "12")
    folder = frames_folder(inputs / "selection-errors", 5)
    for ad, field, reason in (({"video_source": str(video), "skip_first_frames": 6}, "skip_first_frames",
                               "only 6 frames"),
                              ({"video_source": str(video), "force_rate": 4, "skip_first_frames": 2},
                               "skip_first_frames", "only 2 frames at force_rate 4"),
                              ({"video_path": str(folder), "force_rate": 8}, "force_rate", "without timestamps"),
                              ({"video_path": str(folder), "select_every_nth": 0}, "select_every_nth", ">= 1"),
                              ({"video_source": str(video), "force_rate": -1}, "force_rate", ">= 0"),
                              ({"video_source": str(video), "frame_load_cap": -1}, "frame_load_cap", ">= 0")):
        body = _error(api, v2v(ad, unit(cn_model)))
        assert "HTTP 422" in body and f"AnimateDiff parameter '{field}'" in body and reason in body, (ad, body)
