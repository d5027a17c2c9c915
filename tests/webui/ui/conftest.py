"""The browser tier: a real Chromium (Debian's ``chromium``, driven by Playwright) on the WebUI's own page.

Part of the live tier (``pytest tests/webui`` runs it, ``--ignore=tests/webui`` leaves it out) but with its own
WebUI: launched from ``ANIMATEDIFF_WEBUI_DIR`` WITH its UI (no ``--nowebui``), without ControlNet, with this
repository linked as the extension and a tiny motion module in the model folder, on a free 127.0.0.1 port, for
the tests of this folder only (the API tier's WebUI is not started for them). Skipped, with the reason, when:

* the live tier is off (no ``ANIMATEDIFF_WEBUI_DIR``), or only a running WebUI is given (``ANIMATEDIFF_WEBUI_URL``);
* the WebUI folder or the temp folder lies under a hidden folder (a name starting with a dot): Gradio 3.41 then
  answers 403 for every script and style of the page (build the kit elsewhere: ``setup.sh /work/webui-ui``);
* Playwright (the ``test`` extra) or Chromium (``ANIMATEDIFF_CHROMIUM``, else ``chromium`` on the PATH) is missing.

``ANIMATEDIFF_SCREENSHOT_DIR``: also save the tests' screenshots there (docs/ keeps the README's).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.motion_modules import build_state_dict, write_checkpoint
from tests.webui.launcher import (
    EXTENSION_NAME,
    STARTED_LOG,
    free_port,
    hidden_part,
    launch_command,
    link_extension,
    log_tail,
    repo_root,
    resolve_python,
    script_load_errors,
    start_webui,
    stop_webui,
    wait_until_ready,
)

MOTION_MODULE = "tiny_v3.safetensors"
_log: dict[str, Path | None] = {"path": None}


@dataclass
class UIWebUI:
    """The WebUI of the browser tier: its page's URL, data folder and log."""

    url: str
    data_dir: Path
    log_path: Path


def chromium_path() -> Path | None:
    """``$ANIMATEDIFF_CHROMIUM``, else ``chromium`` (Debian's package) or ``chromium-browser`` on the PATH."""
    explicit = os.environ.get("ANIMATEDIFF_CHROMIUM", "").strip()
    if explicit:
        return Path(explicit) if Path(explicit).exists() else None
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return Path(found) if found else None


def _skip_reason(webui_dir: Path, tmp_root: Path) -> str | None:
    for what, path in (("the WebUI folder", webui_dir), ("the temp folder", tmp_root)):
        hidden = hidden_part(path)
        if hidden is not None:
            return (f"browser tier: {what} {path} lies under the hidden folder {hidden!r}, and Gradio answers 403 "
                    "for every script and style there; build the WebUI kit in a folder without a dot "
                    "(bash shared/webui-kit/setup.sh /work/webui-ui) and set ANIMATEDIFF_WEBUI_DIR to its webui/")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "browser tier: Playwright is not installed (pip install -e '.[test]')"
    if chromium_path() is None:
        return ("browser tier: no Chromium (apt-get install chromium, or set ANIMATEDIFF_CHROMIUM to a Chromium "
                "binary)")
    return None


@pytest.fixture(autouse=True)
def _restore_changed_options() -> None:
    """This tier changes no WebUI setting through the API (and must not start the API tier's WebUI)."""


@pytest.fixture(scope="session")
def ui_webui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIWebUI]:
    """A WebUI with its pages, started for this tier (see the module docstring)."""
    if os.environ.get("ANIMATEDIFF_WEBUI_URL", "").strip() or not os.environ.get("ANIMATEDIFF_WEBUI_DIR"):
        pytest.skip("browser tier: needs ANIMATEDIFF_WEBUI_DIR (it launches its own WebUI with the UI)")
    from tests.fixtures.webui_checkpoint import build_tiny_sd15_checkpoint

    webui_dir = Path(os.environ["ANIMATEDIFF_WEBUI_DIR"]).expanduser().resolve()
    root = tmp_path_factory.mktemp("webui-ui")
    reason = _skip_reason(webui_dir, root)
    if reason:
        pytest.skip(reason)
    data_dir, models = root / "data", root / "data" / "models" / "AnimateDiff"
    link_extension(data_dir, repo_root(), EXTENSION_NAME)
    models.mkdir(parents=True)
    write_checkpoint(models / MOTION_MODULE, build_state_dict("v3", seed=3), "safetensors")
    (data_dir / "config.json").write_text(json.dumps({"animatediff_model_path": str(models)}))
    port = free_port()
    command = launch_command(resolve_python(webui_dir, os.environ), build_tiny_sd15_checkpoint(root / "checkpoint"),
                             data_dir, port, ui=True)
    webui = start_webui(webui_dir, command, port, root / "webui.log")
    _log["path"] = webui.log_path
    try:
        try:
            wait_until_ready(webui, float(os.environ.get("ANIMATEDIFF_WEBUI_STARTUP_TIMEOUT", "300")), STARTED_LOG)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(str(exc), pytrace=False)
        errors = script_load_errors(webui.log_path)
        if errors:
            pytest.fail(f"the WebUI could not load a script:\n{errors}", pytrace=False)
        yield UIWebUI(webui.url, data_dir, webui.log_path)
    finally:
        stop_webui(webui.process)


@pytest.fixture(scope="session")
def browser(ui_webui: UIWebUI) -> Iterator[Any]:
    """Chromium, headless, through Playwright (its own browser downloads are never used)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(chromium_path()), headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, ui_webui: UIWebUI) -> Iterator[Any]:
    """The WebUI's page, loaded, in a new 1280x1000 tab; failed requests to the WebUI and console errors of its
    scripts are collected in ``page.problems``."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    tab = context.new_page()
    problems: list[str] = []
    local = ui_webui.url + "/"

    def failed(what: str, url: str) -> None:
        if url.startswith(local):  # Gradio also asks a CDN for an iframe helper: offline, that one fails
            problems.append(f"{what} {url}")

    tab.on("console", lambda m: problems.append(f"console error: {m.text} at {m.location}")
           if m.type == "error" and local in str(m.location.get("url", local)) else None)
    tab.on("response", lambda r: failed(f"HTTP {r.status}", r.url) if r.status >= 400 else None)
    tab.on("requestfailed", lambda r: failed(f"failed ({r.failure})", r.url))
    tab.problems = problems
    started = time.monotonic()
    tab.goto(ui_webui.url, wait_until="domcontentloaded", timeout=120_000)
    tab.wait_for_selector("#txt2img_generate", state="visible", timeout=180_000)
    tab.load_s = time.monotonic() - started
    try:
        yield tab
    finally:
        context.close()


def save_screenshot(image: bytes, name: str, tmp_path: Path) -> Path:
    """Write a PNG screenshot into the test's temp folder and, with ANIMATEDIFF_SCREENSHOT_DIR, there too."""
    (tmp_path / name).write_bytes(image)
    folder = os.environ.get("ANIMATEDIFF_SCREENSHOT_DIR", "").strip()
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / name).write_bytes(image)
    return tmp_path / name


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Show the tail of this tier's WebUI log under its failing tests."""
    report = yield
    if report.failed and _log["path"] is not None:
        report.sections.append((f"WebUI (UI) log tail ({_log['path']})", log_tail(_log["path"])))
    return report
