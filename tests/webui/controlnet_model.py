"""The tiny random ControlNet model for the live tier: the ``cn_model`` fixture (re-exported by conftest.py).

Launched mode: built into the WebUI's ``<models>/ControlNet`` (``--models-dir`` if set, else
``<data-dir>/models``); URL mode: it must already be there (``python3 -m tests.fixtures.controlnet_checkpoint
<models>/ControlNet``), same revision (same short hash). Skipped when ControlNet is not loaded.
"""

from __future__ import annotations

import hashlib
import urllib.error
from pathlib import Path

import pytest

from tests.fixtures.controlnet_checkpoint import FILENAME, build_tiny_controlnet

from .client import WebUIClient, WebUIError
from .launcher import WebUISession


def a1111_short_hash(path: Path) -> str:
    """The 8-hex hash ControlNet puts in model names (A1111 ``sd_models.model_hash``)."""
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def _models_dir(client: WebUIClient, session: WebUISession) -> Path | None:
    flags = client.get("/sdapi/v1/cmd-flags")
    if flags.get("models_dir"):
        return Path(flags["models_dir"])
    return session.data_dir / "models" if session.data_dir is not None else None


@pytest.fixture(scope="module")
def cn_model(webui_session: WebUISession, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny ControlNet's name as GET /controlnet/model_list lists it (placed there if launched)."""
    client = WebUIClient(webui_session.url)
    try:
        client.get("/controlnet/version")
    except (WebUIError, urllib.error.URLError, OSError) as exc:
        pytest.skip(f"sd-webui-controlnet is not loaded in this WebUI (GET /controlnet/version: {exc})")
    if "controlnet" not in client.script_names("txt2img"):
        pytest.skip("sd-webui-controlnet is not loaded: 'controlnet' is not a txt2img script")
    models_dir = _models_dir(client, webui_session)
    if webui_session.launched and models_dir is not None:
        built = build_tiny_controlnet(models_dir / "ControlNet")
    else:
        built = build_tiny_controlnet(tmp_path_factory.mktemp("controlnet"))
    expected = f"{Path(FILENAME).stem} [{a1111_short_hash(built)}]"
    listed = client.get("/controlnet/model_list")["model_list"]  # update=true: re-reads the folders
    if expected not in listed:
        if webui_session.launched:
            pytest.fail(f"built {built}, but ControlNet lists {listed}, not {expected!r}")
        pytest.skip(f"URL mode: {expected!r} not among ControlNet's models {listed}; place it with "
                    "`python3 -m tests.fixtures.controlnet_checkpoint <models>/ControlNet`")
    return expected
