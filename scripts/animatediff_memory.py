"""AnimateDiff's motion-module memory actions (host registration only; the cache lives in the engine).

* In the AnimateDiff panel, next to the model list's refresh button: *move the motion modules to the CPU*
  (frees GPU memory; the next run moves its module back) and *remove the motion modules from memory*.
* Over HTTP, on the WebUI's server (also with --nowebui; behind WebUI's ``--api-auth`` credentials when given):
  ``POST /animatediff/v1/offload`` -> ``{"moved": n}``; ``POST /animatediff/v1/unload`` -> ``{"unloaded": n}``;
  ``GET /animatediff/v1/memory`` -> ``{"models": [{"file", "device", "dtype", "weights", "bytes"}, ...]}``.
Imports nothing from the other files in scripts/.
"""

import gc
import logging
from typing import Any

import gradio as gr
from fastapi import Depends, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from modules import call_queue, devices, script_callbacks, shared
from modules.ui_components import ToolButton

from motion_module.files import loading
from motion_module.video import http_auth

ROUTE = "/animatediff/v1"
logger = logging.getLogger("animatediff")
REFRESH_ID = "animatediff_refresh_models"  # the end of the refresh button's elem_id in both tabs


def unload() -> dict[str, int]:
    with call_queue.queue_lock:  # after the generation in progress, which may hold the module
        count = loading.clear_cache()
    gc.collect()
    devices.torch_gc()
    return {"unloaded": count}


def offload() -> dict[str, int]:
    with call_queue.queue_lock:  # never move a module a generation is running
        count = loading.offload_cache("cpu")
    devices.torch_gc()
    return {"moved": count}


def memory() -> dict[str, Any]:
    return {"models": loading.cache_info()}


def _guards() -> list[Any]:
    """WebUI's own --api-auth check for our routes too (A1111 guards only the routes it adds itself)."""
    credentials = http_auth.parse_credentials(getattr(shared.cmd_opts, "api_auth", None))
    if not credentials:
        return []

    def check(given: HTTPBasicCredentials = Depends(HTTPBasic())) -> None:  # noqa: B008 - FastAPI's idiom
        if not http_auth.allowed(credentials, given.username, given.password):
            raise HTTPException(status_code=401, detail="Incorrect username or password",
                                headers={"WWW-Authenticate": "Basic"})
    return [Depends(check)]


def on_app_started(_demo: Any, app: Any) -> None:
    guards = _guards()
    app.add_api_route(f"{ROUTE}/unload", unload, methods=["POST"], dependencies=guards)
    app.add_api_route(f"{ROUTE}/offload", offload, methods=["POST"], dependencies=guards)
    app.add_api_route(f"{ROUTE}/memory", memory, methods=["GET"], dependencies=guards)


def on_after_component(component: Any, **kwargs: Any) -> None:
    """Right after the panel's refresh button (same row): the two memory buttons."""
    elem_id = str(kwargs.get("elem_id") or "")
    if not elem_id.endswith(REFRESH_ID):
        return
    stem = elem_id[: -len("refresh_models")]
    to_cpu = ToolButton("\U0001f4e4", elem_id=f"{stem}offload_models",
                        tooltip="Move the motion modules to the CPU (frees GPU memory; kept for the next run)")
    remove = ToolButton("\U0001f5d1\ufe0f", elem_id=f"{stem}unload_models",
                        tooltip="Remove the motion modules from memory (the next run reads its file again)")
    to_cpu.click(fn=_clicked(offload, "AnimateDiff: {} motion module(s) moved to the CPU"), inputs=[], outputs=[])
    remove.click(fn=_clicked(unload, "AnimateDiff: {} motion module(s) removed from memory"), inputs=[], outputs=[])


def _clicked(action: Any, message: str) -> Any:
    def run() -> None:
        text = message.format(*action().values())
        logger.info(text)
        if hasattr(gr, "Info"):  # a toast in the browser (gradio >= 3.40)
            gr.Info(text)
    return run


script_callbacks.on_app_started(on_app_started)
script_callbacks.on_after_component(on_after_component)
