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
* ``ANIMATEDIFF_WEBUI_CONTROLNET``: unset: ``<dir>/extensions/sd-webui-controlnet`` is linked too when it
  exists; ``1``: it must exist (else the session fails); ``0``: no ControlNet; any other value: the path
  of a ControlNet checkout to link. With a URL, ``1``/a path means "ControlNet must be loaded there".
* ``ANIMATEDIFF_WEBUI_STARTUP_TIMEOUT``: seconds to wait for the API (default 300).
* ``ANIMATEDIFF_WEBUI_ARGS``: extra ``launch.py`` arguments (shell syntax), e.g. ``--api-log``.
* ``ANIMATEDIFF_WEBUI_AUTH``: ``user:password`` of a WebUI at a URL that was started with ``--api-auth``. A
  launched WebUI always gets ``--api-auth`` (``LIVE_AUTH``), so every test runs behind WebUI's credentials.

After each test every setting it changed is put back (``options.py``), also in a WebUI it did not start.
The terminal summary ends with one line naming the WebUI, its extensions and ControlNet's API version.
"""

from __future__ import annotations

import os
import shlex
import time
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.motion_modules import build_state_dict, write_checkpoint

from .client import WebUIClient, tiny_txt2img
from .controlnet_model import cn_model  # noqa: F401 - the tier's ControlNet fixture
from .launcher import (
    CONTROLNET_NAME,
    EXTENSION_NAME,
    WebUISession,
    controlnet_args,
    controlnet_source,
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
    webui_version,
)
from .options import config_file, restore, snapshot

HERE = Path(__file__).resolve().parent
BATCH_TAB_ROUTE_NAME = "animatediff-test-batch-tab-route"
SAMPLING_ERROR_NAME = "animatediff-test-sampling-error"  # tests/webui/sampling_error_ext
INNER_GENERATION_NAME = "animatediff-test-inner-generation"
LIVE_AUTH = ("animatediff", "live-tier-secret")  # --api-auth of a launched WebUI
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
_summary: list[str] = []  # "live tier: ..." for the terminal summary


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
    try:
        controlnet, _ = controlnet_source(webui_dir, os.environ)
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    if controlnet is not None:
        link_extension(data_dir, controlnet, CONTROLNET_NAME)
    if source is not None:  # test-only: an API route for img2img's Batch tab (tests/webui/batch_tab_route)
        link_extension(data_dir, HERE / "batch_tab_route", BATCH_TAB_ROUTE_NAME)
        link_extension(data_dir, HERE / "sampling_error_ext", SAMPLING_ERROR_NAME)
        # test-only: an always-on script that runs ADetailer's nested img2img per image (tests/webui/inner_generation)
        link_extension(data_dir, HERE / "inner_generation", INNER_GENERATION_NAME)
    mm_dir = data_dir / "models" / "AnimateDiff"
    mm_dir.mkdir(parents=True, exist_ok=True)
    motion_modules = build_motion_modules_hook(mm_dir)
    port = free_port()
    WebUIClient.auth = LIVE_AUTH  # every client of this session sends WebUI's credentials
    extra = [*(controlnet_args(data_dir) if controlnet is not None else []), "--api-auth", ":".join(LIVE_AUTH),
             *shlex.split(os.environ.get("ANIMATEDIFF_WEBUI_ARGS", ""))]
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
                           motion_modules=motion_modules, controlnet_expected=controlnet is not None,
                           version=webui_version(webui_dir), config_file=data_dir / "config.json",
                           python=python)
    finally:
        stop_webui(webui.process)


@pytest.fixture(scope="session")
def webui_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebUISession]:
    """The WebUI of this session: the one at ANIMATEDIFF_WEBUI_URL, or one launched from _DIR."""
    url = os.environ.get("ANIMATEDIFF_WEBUI_URL", "").strip().rstrip("/")
    if url:
        user, _, password = os.environ.get("ANIMATEDIFF_WEBUI_AUTH", "").partition(":")
        WebUIClient.auth = (user, password) if user else None
        if not is_ready(url, timeout=10.0):
            pytest.fail(f"ANIMATEDIFF_WEBUI_URL={url}: no A1111 API answers GET /sdapi/v1/sd-models "
                        "(start the WebUI with --api, or unset the variable)", pytrace=False)
        wanted = os.environ.get("ANIMATEDIFF_WEBUI_CONTROLNET", "").strip()
        session = WebUISession(url=url, launched=False, extension_expected=_extension_source() is not None,
                               controlnet_expected=None if wanted == "" else wanted != "0",
                               version=f"at {url}", config_file=config_file(WebUIClient(url)))
        _summary.append(_describe(session))
        yield session
        return
    for session in _launch(tmp_path_factory.mktemp("webui")):
        _summary.append(_describe(session))
        yield session


def _describe(session: WebUISession) -> str:
    """``live tier: WebUI v1.10.1 (82a973c0) with extensions: ...; ControlNet API version 3``."""
    client = WebUIClient(session.url)
    if session.data_dir is not None:  # what this session linked (not A1111's built-in extensions)
        extensions = sorted(p.name for p in (session.data_dir / "extensions").iterdir())
    else:
        try:
            extensions = [e["name"] for e in client.get("/sdapi/v1/extensions") if e.get("enabled", True)]
        except Exception as exc:  # noqa: BLE001 - a summary line must not fail the session
            extensions = [f"(GET /sdapi/v1/extensions failed: {str(exc)[:200]})"]
    try:
        controlnet = f"ControlNet API version {client.get('/controlnet/version')['version']}"
    except Exception:  # noqa: BLE001 - not loaded
        controlnet = "ControlNet not loaded"
    startup = f"; startup {session.startup_s:.0f} s" if session.launched else ""
    names = ", ".join(extensions) or "none"
    return f"live tier: WebUI {session.version} with extensions: {names}; {controlnet}{startup}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _summary:
        terminalreporter.write_line(line)


@pytest.fixture
def webui(webui_session: WebUISession) -> WebUIClient:
    """A client for the session's WebUI."""
    return WebUIClient(webui_session.url)


@pytest.fixture(autouse=True)
def _restore_changed_options(webui_session: WebUISession, webui: WebUIClient) -> Iterator[None]:
    """Put back any WebUI setting a test changed (or an override leaked), so tests stay independent and
    a WebUI this session did not start is left as it was (see options.py for what GET cannot show)."""
    webui.options_written.clear()
    before = snapshot(webui, webui_session.config_file)
    yield
    _, unknown = restore(webui, before, webui_session.config_file)
    if unknown:
        warnings.warn(f"WebUI settings {unknown} were set by a test but neither their previous value nor "
                      "a default is known: left as they are", stacklevel=1)


# tiny random motion modules matching the tiny SD1.5-shaped checkpoint (channels 32/64/128/128), selected by
# the tests through the animatediff_model_path setting (fixture ``api``)
MOTION_MODULES = {"tiny_v1.safetensors": "v1", "tiny_v2.safetensors": "v2", "tiny_v3.safetensors": "v3",
                  "tiny_lightning.safetensors": "lightning", "tiny_sdxl.safetensors": "sdxl"}


@pytest.fixture(scope="session")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("animatediff-models")
    for name, family in MOTION_MODULES.items():
        write_checkpoint(folder / name, build_state_dict(family, seed=3), "safetensors")
    return folder


@pytest.fixture
def api(webui: WebUIClient, module_dir: Path) -> WebUIClient:
    """The session's WebUI with AnimateDiff's model folder set to the tiny modules."""
    webui.post("/sdapi/v1/options", {"animatediff_model_path": str(module_dir)})
    return webui
