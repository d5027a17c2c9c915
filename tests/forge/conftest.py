"""The live Forge tier: a running Stable Diffusion WebUI Forge (the pinned forge-kit build) with this extension.

Environment (nothing set: every test in tests/forge is skipped):

* ``ANIMATEDIFF_FORGE_DIR=/path/to/forge/webui``: launch Forge from there for the session (CPU, API only, a free
  127.0.0.1 port, ``--api-auth``, a temp ``--data-dir`` holding the tiny random SD1.5 checkpoint, the test-only
  model registration (tests/fixtures/forge_checkpoint.py) and this repository linked as an extension). Its
  process group is killed at the end; its log is shown under any failing test of this tier.
* ``ANIMATEDIFF_FORGE_PYTHON``: Forge's interpreter (default ``<dir>/venv/bin/python``).
* ``ANIMATEDIFF_FORGE_STARTUP_TIMEOUT``: seconds to wait for the API (default 300).
* ``ANIMATEDIFF_WEBUI_DIR`` (optional, as in tests/webui): an A1111 1.10 install; the fidelity tests launch it too
  (``a1111`` fixture, without ControlNet) to compare the same request on both hosts; unset: those tests are skipped.

``plain_forge`` launches a second Forge without this extension (only when a test asks for it), the reference for
"AnimateDiff off changes nothing".
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.motion_loras import write_test_loras
from tests.fixtures.motion_modules import build_state_dict, write_checkpoint
from tests.webui.client import WebUIClient, tiny_txt2img
from tests.webui.launcher import (
    free_port,
    launch_command,
    link_extension,
    log_tail,
    repo_root,
    resolve_python,
    start_webui,
    stop_webui,
    wait_until_ready,
)

from .launcher import LORA_FOLDER, ForgeModel, build_model, prepare_data_dir, start_forge

HERE = Path(__file__).resolve().parent
AUTH = ("animatediff", "forge-tier-secret")  # --api-auth of a launched Forge
SKIP_REASON = "live Forge tier off: set ANIMATEDIFF_FORGE_DIR=/path/to/stable-diffusion-webui-forge (launches one)"
_logs: list[Path] = []  # shown under failing tests
MEASURED: list[str] = []  # measurements printed in the terminal summary (tests/forge/test_fidelity.py)


@dataclass
class ForgeSession:
    url: str
    log_path: Path
    data_dir: Path
    startup_s: float
    startup_log_bytes: int  # the log up to the end of start-up (and the warm-up image)

    def client(self) -> WebUIClient:
        return WebUIClient(self.url, auth=AUTH)


def _in_tier(item: pytest.Item) -> bool:
    return HERE in Path(str(item.fspath)).resolve().parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    enabled = bool(os.environ.get("ANIMATEDIFF_FORGE_DIR"))
    for item in items:
        if _in_tier(item):
            item.add_marker(pytest.mark.forge)
            if not enabled:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and _in_tier(item):
        for log in _logs:
            report.sections.append((f"Forge log tail ({log})", log_tail(log)))
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in MEASURED:
        terminalreporter.write_line(line)


def forge_dir() -> Path:
    path = Path(os.environ["ANIMATEDIFF_FORGE_DIR"]).expanduser().resolve()
    if not (path / "launch.py").exists():
        pytest.fail(f"ANIMATEDIFF_FORGE_DIR={path} has no launch.py: point it at a Forge install")
    return path


@pytest.fixture(scope="session")
def forge_model(tmp_path_factory: pytest.TempPathFactory) -> ForgeModel:
    return build_model(tmp_path_factory.mktemp("forge-model"), forge_dir())


def _launch(root: Path, model: ForgeModel, with_extension: bool) -> Iterator[ForgeSession]:
    python = Path(os.environ.get("ANIMATEDIFF_FORGE_PYTHON") or resolve_python(forge_dir(), {}))
    data_dir = root / "data"
    prepare_data_dir(data_dir, model, with_extension)
    forge = start_forge(forge_dir(), python, data_dir, model, root / "forge.log", ["--api-auth", ":".join(AUTH)])
    _logs.append(forge.log_path)
    try:
        try:
            waited = wait_until_ready(forge, float(os.environ.get("ANIMATEDIFF_FORGE_STARTUP_TIMEOUT", "300")))
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(str(exc), pytrace=False)
        WebUIClient(forge.url, auth=AUTH).txt2img(**tiny_txt2img(seed=0, steps=1))  # loads the model
        session = ForgeSession(forge.url, forge.log_path, data_dir, waited, forge.log_path.stat().st_size)
        yield session
    finally:
        stop_webui(forge.process)


@pytest.fixture(scope="session")
def forge_session(tmp_path_factory: pytest.TempPathFactory, forge_model: ForgeModel) -> Iterator[ForgeSession]:
    """Forge with this extension (and the test-only model registration)."""
    yield from _launch(tmp_path_factory.mktemp("forge"), forge_model, with_extension=True)


@pytest.fixture(scope="session")
def plain_forge(tmp_path_factory: pytest.TempPathFactory, forge_model: ForgeModel) -> Iterator[ForgeSession]:
    """A second Forge without this extension: the reference a plain generation must match byte for byte."""
    yield from _launch(tmp_path_factory.mktemp("forge-plain"), forge_model, with_extension=False)


@pytest.fixture(scope="session")
def a1111_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``--data-dir`` of the ``a1111`` WebUI (tests may add checkpoints to it)."""
    return tmp_path_factory.mktemp("a1111") / "data"


@pytest.fixture(scope="session")
def a1111(a1111_data_dir: Path, forge_model: ForgeModel) -> Iterator[WebUIClient]:
    """An A1111 WebUI (``ANIMATEDIFF_WEBUI_DIR``) with this extension and the same tiny checkpoint, for comparing
    the hosts; skipped when the variable is unset. The test-only ``a1111_openclip_ext`` lets it build the tiny
    SDXL checkpoint's text tower (tests/fixtures/webui_checkpoint_xl.py)."""
    value = os.environ.get("ANIMATEDIFF_WEBUI_DIR", "").strip()
    if not value:
        pytest.skip("comparing with A1111 needs ANIMATEDIFF_WEBUI_DIR (an A1111 1.10 install) too")
    webui_dir, data_dir, port = Path(value).expanduser().resolve(), a1111_data_dir, free_port()
    root = data_dir.parent
    link_extension(data_dir, repo_root())
    link_extension(data_dir, HERE / "a1111_openclip_ext", "animatediff-test-tiny-openclip")
    write_test_loras(data_dir / "models" / "Lora" / LORA_FOLDER)  # the LoRA fidelity test
    command = launch_command(resolve_python(webui_dir, os.environ), forge_model.checkpoint, data_dir, port,
                             ["--api-auth", ":".join(AUTH)])
    webui = start_webui(webui_dir, command, port, root / "webui.log")
    _logs.append(webui.log_path)
    try:
        try:
            wait_until_ready(webui, float(os.environ.get("ANIMATEDIFF_WEBUI_STARTUP_TIMEOUT", "300")))
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(str(exc), pytrace=False)
        client = WebUIClient(webui.url, auth=AUTH)
        client.txt2img(**tiny_txt2img(seed=0, steps=1))
        yield client
    finally:
        stop_webui(webui.process)


@pytest.fixture
def forge(forge_session: ForgeSession) -> WebUIClient:
    return forge_session.client()


@pytest.fixture(scope="session")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random motion modules for the tiny checkpoint (channels 32/64/128/128), as in tests/webui."""
    folder = tmp_path_factory.mktemp("animatediff-models")
    for family in ("v1", "v2", "v3", "lightning", "sdxl"):  # the names tests/webui uses
        write_checkpoint(folder / f"tiny_{family}.safetensors", build_state_dict(family, seed=3), "safetensors")
    return folder


@pytest.fixture
def api(forge: WebUIClient, module_dir: Path) -> WebUIClient:
    """Forge with AnimateDiff's model folder set to the tiny modules."""
    forge.post("/sdapi/v1/options", {"animatediff_model_path": str(module_dir)})
    return forge
