"""The live Forge tier's base: Forge starts with this extension loaded cleanly, generates, and a plain generation
(AnimateDiff off, or its arguments absent) is byte for byte what Forge without this extension gives.

Skipped unless ANIMATEDIFF_FORGE_DIR is set (see conftest.py)."""

from __future__ import annotations

import io

from PIL import Image

from tests.webui.client import WebUIClient, png_bytes, tiny_txt2img

from .conftest import ForgeSession
from .launcher import EXTENSION_NAME, tracebacks_from


def test_forge_loads_our_scripts_without_errors(forge: WebUIClient, forge_session: ForgeSession) -> None:
    for tab in ("txt2img", "img2img"):
        assert "animatediff" in forge.script_names(tab), forge.script_names(tab)
    errors = tracebacks_from(forge_session.log_path, EXTENSION_NAME, forge_session.startup_log_bytes)
    assert not errors, "tracebacks from this extension in Forge's log:\n" + "\n\n".join(errors)
    routes = forge.get("/animatediff/v1/memory")  # our API routes are registered
    assert isinstance(routes["models"], list), routes


def test_plain_txt2img_works_and_is_deterministic(forge: WebUIClient) -> None:
    first, again, other = (png_bytes(forge.txt2img(**tiny_txt2img(seed=s)))[0] for s in (1234, 1234, 4321))
    assert first == again, "same request and seed: Forge must give byte-identical PNGs"
    assert first != other, "another seed must give another image"
    image = Image.open(io.BytesIO(first))
    assert image.size == (64, 64) and image.mode == "RGB"
    levels = [i for i, count in enumerate(image.convert("L").histogram()) if count]
    assert levels[-1] - levels[0] > 10, f"flat image {levels}: the tiny model did not run"


def test_animatediff_off_is_byte_identical_to_forge_without_the_extension(
        forge: WebUIClient, plain_forge: ForgeSession) -> None:
    reference = png_bytes(plain_forge.client().txt2img(**tiny_txt2img(seed=99)))
    absent = png_bytes(forge.txt2img(**tiny_txt2img(seed=99)))
    off = png_bytes(forge.txt2img(**tiny_txt2img(seed=99, alwayson_scripts={"AnimateDiff": {"args": [
        {"enable": False, "model": "tiny_v2.safetensors", "video_length": 8}]}})))
    assert absent == reference, "AnimateDiff's arguments absent: the image differs from Forge without the extension"
    assert off == reference, "AnimateDiff off: the image differs from Forge without the extension"
