"""Smoke tests of the live-WebUI tier: the host works and is deterministic (before our extension runs).

Skipped unless ANIMATEDIFF_WEBUI_DIR or ANIMATEDIFF_WEBUI_URL is set (see conftest.py).
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import pytest
from PIL import Image

from .client import WebUIClient, infotexts, png_bytes, tiny_txt2img
from .launcher import WebUISession, repo_root, script_load_errors


def test_api_lists_the_model(webui: WebUIClient, webui_session: WebUISession) -> None:
    titles = [m["title"] for m in webui.get("/sdapi/v1/sd-models")]
    assert titles, "the WebUI lists no checkpoint"
    if webui_session.launched:
        assert any("tiny-sd15" in t for t in titles), titles
        assert "tiny-sd15" in str(webui.options()["sd_model_checkpoint"])


def test_txt2img_same_seed_gives_identical_png(webui: WebUIClient) -> None:
    first = webui.txt2img(**tiny_txt2img(seed=1234))
    second = webui.txt2img(**tiny_txt2img(seed=1234))
    other = webui.txt2img(**tiny_txt2img(seed=4321))
    (a,), (b,), (c,) = png_bytes(first), png_bytes(second), png_bytes(other)
    assert a == b, "same request, same seed: WebUI must return byte-identical PNGs"
    assert a != c, "a different seed must give a different image"
    image = Image.open(io.BytesIO(a))
    assert image.size == (64, 64) and image.mode == "RGB"
    levels = [i for i, count in enumerate(image.convert("L").histogram()) if count]
    assert levels[-1] - levels[0] > 10, f"flat image {levels}: NaN latents decode to one colour"
    info = infotexts(first)[0]
    assert "Steps: 2" in info and "Seed: 1234" in info and "Size: 64x64" in info, info


def test_override_settings_apply_to_one_request(webui: WebUIClient) -> None:
    """Batch cond/uncond off + Pad prompt/negative prompt on for one request (infotext shows it)."""
    plain = webui.txt2img(**tiny_txt2img(seed=77))
    padded = webui.txt2img(**tiny_txt2img(
        seed=77, override_settings={"batch_cond_uncond": False, "pad_cond_uncond": True}))
    assert "Pad conds: True" not in infotexts(plain)[0]
    # the long prompt has more 75-token chunks than the negative one, so padding really happens
    assert "Pad conds: True" in infotexts(padded)[0], infotexts(padded)[0]
    assert png_bytes(plain) != png_bytes(padded), "padding the negative prompt changes the image"


def test_interrupt_ends_a_long_job_early(webui: WebUIClient) -> None:
    result: dict[str, Any] = {}

    def generate() -> None:
        start = time.monotonic()
        try:
            result["response"] = webui.txt2img(**tiny_txt2img(steps=2000))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc
        result["seconds"] = time.monotonic() - start

    worker = threading.Thread(target=generate, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and worker.is_alive():
            state = webui.get("/sdapi/v1/progress?skip_current_image=true")["state"]
            if state["sampling_step"] >= 1 and state["sampling_steps"] == 2000:
                break
            time.sleep(0.2)
        assert worker.is_alive(), f"job ended before it could be interrupted: {result}"
        webui.interrupt()
        worker.join(timeout=60)
    finally:
        if worker.is_alive():  # do not leave a 2000-step job running for the next tests
            webui.interrupt()
            worker.join(timeout=60)
    assert not worker.is_alive(), "txt2img did not return within 60 s of /sdapi/v1/interrupt"
    assert "error" not in result, result.get("error")
    assert len(png_bytes(result["response"])) == 1  # an interrupted job still returns its image
    assert webui.get("/sdapi/v1/progress?skip_current_image=true")["state"]["interrupted"] is True


def test_animatediff_script_is_listed(webui: WebUIClient, webui_session: WebUISession) -> None:
    if not webui_session.extension_expected:
        pytest.skip("ANIMATEDIFF_EXTENSION_LINK=0: the WebUI runs without this extension")
    if not (repo_root() / "scripts" / "animatediff.py").exists():
        pytest.skip("scripts/animatediff.py is not written yet")
    names = webui.script_names("txt2img") + webui.script_names("img2img")
    errors = script_load_errors(webui_session.log_path)
    assert sum("animatediff" in n.lower() for n in names) == 2, f"AnimateDiff missing from {names}\n{errors}"


def test_controlnet_is_loaded_when_linked(webui: WebUIClient, webui_session: WebUISession) -> None:
    """sd-webui-controlnet (linked by conftest when the WebUI install has it) loads cleanly and offline."""
    if webui_session.controlnet_expected is False:
        pytest.skip("no ControlNet linked (ANIMATEDIFF_WEBUI_CONTROLNET=0, or none in the WebUI's extensions/)")
    if webui_session.controlnet_expected is None:
        pytest.skip("ANIMATEDIFF_WEBUI_URL without ANIMATEDIFF_WEBUI_CONTROLNET: not known whether it should load")
    errors = script_load_errors(webui_session.log_path)
    assert webui.get("/controlnet/version")["version"] >= 2, errors
    for tab in ("txt2img", "img2img"):
        assert "controlnet" in webui.script_names(tab), f"ControlNet missing from {tab} scripts\n{errors}"
    assert "controlnet" not in errors.lower(), errors
    if webui_session.log_path is not None:
        log = webui_session.log_path.read_text(encoding="utf-8", errors="replace")
        assert "ControlNet UI callback registered" in log, "ControlNet did not finish loading"
        assert "Downloading" not in log, "a download was attempted at start"
