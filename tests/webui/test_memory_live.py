"""The motion module's memory on a live A1111 1.10 (CPU): WebUI's FP8 weight option, the memory routes,
and a module file rewritten on disk.

FP8 on the CPU: A1111 stores the UNet's Conv2d/Linear weights in float8_e4m3fn (``sd_models.check_fp8``)
and runs it under CPU bf16 autocast (``devices.autocast``), with ``--no-half`` too; the motion module follows
with its Linear weights in float8 and the rest in the UNet's dtype (float32 here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.motion_modules import build_state_dict, write_checkpoint

from .client import WebUIClient, WebUIError, ad_payload, gif_frames, infotexts, png_bytes, tiny_txt2img, videos

MEMORY = "/animatediff/v1"


def _models(api: WebUIClient) -> list[dict[str, Any]]:
    return list(api.get(f"{MEMORY}/memory")["models"])


def _plain(api: WebUIClient) -> bytes:
    return png_bytes(api.txt2img(**tiny_txt2img(seed=99)))[0]


def _video(api: WebUIClient, **ad: Any) -> bytes:
    return videos(api.post("/sdapi/v1/txt2img", ad_payload({"video_length": 6, "batch_size": 6, **ad})))[0]


def test_fp8_weight_option_stores_the_module_in_fp8_and_never_reuses_it_without(api: WebUIClient) -> None:
    api.post(f"{MEMORY}/unload")
    api.post("/sdapi/v1/options", {"fp8_storage": "Disable"})
    plain = _plain(api)
    full_gif = _video(api)
    (full,) = _models(api)
    api.post("/sdapi/v1/options", {"fp8_storage": "Enable"})
    plain_fp8 = _plain(api)  # WebUI reloads its UNet in FP8 for this request
    assert plain_fp8 != plain
    fp8_gif = _video(api)
    assert len(gif_frames(fp8_gif)) == 6 and fp8_gif != full_gif
    fp8 = next(m for m in _models(api) if m["weights"] == "float8_e4m3fn")
    print(f"\nlive motion module bytes: {full['weights']} {full['bytes']:,}, FP8 (rest {fp8['dtype']}) "
          f"{fp8['bytes']:,}")
    assert (full["weights"], full["dtype"], fp8["dtype"]) == ("float32", "float32", "float32")  # --no-half
    assert fp8["bytes"] < 0.3 * full["bytes"]  # 1 byte instead of 4 per Linear weight
    assert _plain(api) == plain_fp8  # the FP8 UNet is as before after the run
    api.post("/sdapi/v1/options", {"fp8_storage": "Disable"})
    _plain(api)  # WebUI reloads its UNet in full precision (not bit-exact: pixels may differ by 1 from `plain`)
    again = _video(api)
    assert {m["weights"] for m in _models(api)} == {"float32", "float8_e4m3fn"}  # two entries, one per storage
    api.post(f"{MEMORY}/unload")
    assert _video(api) == again  # the cached full-precision module is the file's, not the FP8 one
    assert [m["weights"] for m in _models(api)] == ["float32"]


def test_fp8_by_override_settings_follows_what_webui_did(api: WebUIClient) -> None:
    """``override_settings: {"fp8_storage": "Enable"}``: A1111 1.10 applies it after the scripts' before_process
    and reloads its UNet in FP8 at the start of each batch (``process_images_inner``); the module, loaded in
    before_process, reads the override too and agrees with the UNet."""
    api.post(f"{MEMORY}/unload")
    api.post("/sdapi/v1/options", {"fp8_storage": "Disable"})
    payload = ad_payload({"video_length": 4, "batch_size": 4}, override_settings={"fp8_storage": "Enable"},
                         override_settings_restore_afterwards=True)
    response = api.post("/sdapi/v1/txt2img", payload)
    unet_fp8 = "FP8 weight: Enable" in infotexts(response)[0]
    assert [m["weights"] for m in _models(api)] == ["float8_e4m3fn" if unet_fp8 else "float32"]
    assert unet_fp8


def test_fp8_for_sdxl_only_leaves_an_sd15_module_alone(api: WebUIClient) -> None:
    api.post(f"{MEMORY}/unload")
    api.post("/sdapi/v1/options", {"fp8_storage": "Enable for SDXL"})
    _video(api)
    assert [m["weights"] for m in _models(api)] == ["float32"]


def test_unload_and_offload_routes(api: WebUIClient) -> None:
    _video(api)
    assert _models(api)
    assert api.post(f"{MEMORY}/offload") == {"moved": 0}  # on a CPU-only WebUI everything is on the CPU already
    count = len(_models(api))
    assert api.post(f"{MEMORY}/unload") == {"unloaded": count}
    assert _models(api) == [] and api.post(f"{MEMORY}/unload") == {"unloaded": 0}
    assert gif_frames(_video(api))  # loaded again on demand


def test_a_module_file_rewritten_on_disk_is_read_again(api: WebUIClient, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    path = folder / "mine.safetensors"
    write_checkpoint(path, build_state_dict("v2", seed=11))
    api.post("/sdapi/v1/options", {"animatediff_model_path": str(folder), "animatediff_keep_models": True})
    first = _video(api, model="mine.safetensors")
    write_checkpoint(path, build_state_dict("v2", seed=12))  # same size, other weights
    second = _video(api, model="mine.safetensors")
    assert second != first
    assert [m["file"] for m in _models(api)].count(str(path.resolve())) == 1  # the old version was dropped
    api.post(f"{MEMORY}/unload")
    assert _video(api, model="mine.safetensors") == second  # what a fresh read of the new file gives


def test_the_memory_routes_ask_for_webuis_api_credentials(api: WebUIClient) -> None:
    """The tier's WebUI runs with --api-auth: A1111's routes and ours refuse a request without the credentials
    or with a wrong password (HTTP 401), and answer with them."""
    if WebUIClient.auth is None:
        pytest.skip("this WebUI was not started with --api-auth")
    for auth in (None, (WebUIClient.auth[0], "wrong")):
        anonymous = WebUIClient(api.base_url)
        anonymous.auth = auth  # none, or a wrong password
        for method, path in (("GET", f"{MEMORY}/memory"), ("POST", f"{MEMORY}/unload"),
                             ("POST", f"{MEMORY}/offload"), ("GET", "/sdapi/v1/sd-models")):
            with pytest.raises(WebUIError, match="HTTP 401"):
                anonymous.request(method, path)
    assert isinstance(_models(api), list)
