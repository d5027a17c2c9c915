"""The live-WebUI tier: fixtures that give tests a running A1111 WebUI 1.10 with this extension.

Environment (nothing set: every test in tests/webui is skipped):

* ``ANIMATEDIFF_WEBUI_URL=http://127.0.0.1:7861``: use that running WebUI (started with ``--api``).
  Wins over ``ANIMATEDIFF_WEBUI_DIR``. The tests then expect the extension to be installed there
  unless ``ANIMATEDIFF_EXTENSION_LINK=0``.
* ``ANIMATEDIFF_WEBUI_DIR=/path/to/stable-diffusion-webui``: launch one for the session. The tiny
  random checkpoint (tests/fixtures/webui_checkpoint.py) is built into a temp folder, which is
  also the WebUI's ``--data-dir`` (config, outputs, ``extensions/``: the install is not modified);
  the WebUI runs CPU-only, API-only on a free 127.0.0.1 port, and its process group is killed at
  the end of the session. Its log is shown under any failing test of this tier.
* ``ANIMATEDIFF_WEBUI_PYTHON``: the WebUI's interpreter (default ``<dir>/venv/bin/python``, then
  ``<dir>/../venv/bin/python``).
* ``ANIMATEDIFF_EXTENSION_LINK``: unset or ``1``: this repository is linked as
  ``<data-dir>/extensions/sd-webui-animatediff-engine``; ``0``: no extension (a plain WebUI);
  any other value: the path of an extension checkout to link instead.
* ``ANIMATEDIFF_WEBUI_STARTUP_TIMEOUT``: seconds to wait for the API (default 300).
* ``ANIMATEDIFF_WEBUI_ARGS``: extra ``launch.py`` arguments (shell syntax), e.g. ``--api-log``.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from .client import WebUIClient, tiny_txt2img
from .launcher import (
    EXTENSION_NAME,
    WebUISession,
    free_port,
    is_ready,
    launch_command,
    link_extension,
    log_tail,
    repo_root,
    resolve_python,
    start_webui,
    stop_webui,
    wait_until_ready,
)

HERE = Path(__file__).resolve().parent
SKIP_REASON = ("live-WebUI tier off: set ANIMATEDIFF_WEBUI_DIR=/path/to/stable-diffusion-webui (launches "
               "one) or ANIMATEDIFF_WEBUI_URL=http://127.0.0.1:7861 (uses a running one)")
# A1111 1.10 restores a request's override_settings afterwards only for keys already in config.json
# (processing.py: stored_opts); a fresh --data-dir has none, so overrides would leak into later
# requests. Writing these once (with their current values) makes the per-request restore work.
PRIMED_OPTIONS = (
    "batch_cond_uncond", "pad_cond_uncond", "pad_cond_uncond_v0", "persistent_cond_cache",
    "s_min_uncond", "s_min_uncond_all", "skip_early_cond", "CLIP_stop_at_last_layers",
    "eta_noise_seed_delta", "randn_source", "token_merging_ratio", "emphasis",
)
_state: dict[str, Path | None] = {"log": None}  # the log shown under failing tests


def _in_tier(item: pytest.Item) -> bool:
    return HERE in Path(str(item.fspath)).resolve().parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    enabled = bool(os.environ.get("ANIMATEDIFF_WEBUI_URL") or os.environ.get("ANIMATEDIFF_WEBUI_DIR"))
    for item in items:
        if _in_tier(item):
            item.add_marker(pytest.mark.webui)
            if not enabled:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Show the tail of the launched WebUI's log under every failing test of this tier."""
    report = yield
    if report.failed and _state["log"] is not None and _in_tier(item):
        report.sections.append((f"WebUI log tail ({_state['log']})", log_tail(_state["log"])))
    return report


def _extension_source() -> Path | None:
    value = os.environ.get("ANIMATEDIFF_EXTENSION_LINK", "1").strip()
    if value == "0":
        return None
    return repo_root() if value in ("", "1") else Path(value).expanduser()


def build_motion_modules_hook(dest_dir: Path) -> list[Path]:
    """Motion modules for the tiny checkpoint, if tests/fixtures/motion_modules.py offers a builder.

    Contract: ``build_tiny_motion_module_for_webui(dest_dir: Path) -> Path | list[Path]`` writes
    files matching the tiny checkpoint's UNet (channels 32/64/128/128) into ``dest_dir``.
    """
    from tests.fixtures import motion_modules

    builder = getattr(motion_modules, "build_tiny_motion_module_for_webui", None)
    if builder is None:
        return []
    result = builder(dest_dir)
    return [Path(p) for p in result] if isinstance(result, (list, tuple)) else [Path(result)]


def _prime_and_warm_up(client: WebUIClient) -> None:
    """Write PRIMED_OPTIONS to config.json, then make one 1-step image (loads the model)."""
    current = client.options()
    client.post("/sdapi/v1/options", {k: current[k] for k in PRIMED_OPTIONS if k in current})
    client.txt2img(**tiny_txt2img(seed=0, steps=1))


def _launch(tmp_root: Path) -> Iterator[WebUISession]:
    from tests.fixtures.webui_checkpoint import build_tiny_sd15_checkpoint

    webui_dir = Path(os.environ["ANIMATEDIFF_WEBUI_DIR"]).expanduser().resolve()
    if not (webui_dir / "launch.py").exists():
        pytest.fail(f"ANIMATEDIFF_WEBUI_DIR={webui_dir} has no launch.py: point it at a WebUI install")
    python = resolve_python(webui_dir, os.environ)
    data_dir = tmp_root / "data"
    checkpoint = build_tiny_sd15_checkpoint(tmp_root / "checkpoint")
    source = _extension_source()
    if source is not None:
        link_extension(data_dir, source, EXTENSION_NAME)
    mm_dir = data_dir / "models" / "AnimateDiff"
    mm_dir.mkdir(parents=True, exist_ok=True)
    motion_modules = build_motion_modules_hook(mm_dir)
    port = free_port()
    extra = shlex.split(os.environ.get("ANIMATEDIFF_WEBUI_ARGS", ""))
    command = launch_command(python, checkpoint, data_dir, port, extra)
    started = time.monotonic()
    webui = start_webui(webui_dir, command, port, tmp_root / "webui.log")
    _state["log"] = webui.log_path
    try:
        timeout = float(os.environ.get("ANIMATEDIFF_WEBUI_STARTUP_TIMEOUT", "300"))
        try:
            wait_until_ready(webui, timeout)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(str(exc), pytrace=False)
        _prime_and_warm_up(WebUIClient(webui.url))
        yield WebUISession(url=webui.url, launched=True, extension_expected=source is not None,
                           log_path=webui.log_path, data_dir=data_dir, checkpoint=checkpoint,
                           startup_s=time.monotonic() - started, motion_module_dir=mm_dir,
                           motion_modules=motion_modules)
    finally:
        stop_webui(webui.process)


@pytest.fixture(scope="session")
def webui_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebUISession]:
    """The WebUI of this session: the one at ANIMATEDIFF_WEBUI_URL, or one launched from _DIR."""
    url = os.environ.get("ANIMATEDIFF_WEBUI_URL", "").strip().rstrip("/")
    if url:
        if not is_ready(url, timeout=10.0):
            pytest.fail(f"ANIMATEDIFF_WEBUI_URL={url}: no A1111 API answers GET /sdapi/v1/sd-models "
                        "(start the WebUI with --api, or unset the variable)", pytrace=False)
        yield WebUISession(url=url, launched=False,
                           extension_expected=_extension_source() is not None)
        return
    yield from _launch(tmp_path_factory.mktemp("webui"))


@pytest.fixture
def webui(webui_session: WebUISession) -> WebUIClient:
    """A client for the session's WebUI."""
    return WebUIClient(webui_session.url)


@pytest.fixture(autouse=True)
def _restore_changed_options(webui_session: WebUISession) -> Iterator[None]:
    """Put back any WebUI setting a test changed (or an override leaked), so tests stay independent."""
    client = WebUIClient(webui_session.url)
    before = client.options()
    yield
    after = client.options()
    changed = {k: v for k, v in before.items() if after.get(k) != v}
    if changed:
        client.post("/sdapi/v1/options", changed)
