"""Test-only WebUI extension (linked into the live tier's data dir, never shipped): an API route that runs
img2img's *Batch* tab code path, which A1111's HTTP API has no endpoint for.

POST /animatediff-test/img2img-batch {"input_dir": "<folder>", "payload": <an /sdapi/v1/img2img payload>} runs
the ordinary img2img API request, except that where the API would call `process_images(p)` it calls
`modules.img2img.process_batch(p, input_dir, "", "", p.script_args)`, exactly as the UI's Batch tab does
(so ControlNet's and AnimateDiff's replacements of `process_batch` run as they would for a user).
"""

from typing import Any

from fastapi import Body
from modules import img2img, script_callbacks
from modules.processing import Processed


def on_app_started(_demo: Any, app: Any) -> None:
    import modules.api.api as api_module
    from modules.api.models import StableDiffusionImg2ImgProcessingAPI

    endpoint = next(r.endpoint for r in app.routes if getattr(r, "path", "") == "/sdapi/v1/img2img")
    api = endpoint.__self__

    @app.post("/animatediff-test/img2img-batch")
    def img2img_batch(body: dict = Body(...)) -> Any:  # noqa: B008 - FastAPI's way
        request = StableDiffusionImg2ImgProcessingAPI(**body["payload"])
        original = api_module.process_images

        def via_batch_tab(p: Any) -> Any:
            processed = img2img.process_batch(p, body["input_dir"], "", "", list(p.script_args))
            return processed if processed is not None else Processed(p, [], p.seed, "")

        api_module.process_images = via_batch_tab
        try:
            return api.img2imgapi(request)
        finally:
            api_module.process_images = original


script_callbacks.on_app_started(on_app_started)
