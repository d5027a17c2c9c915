"""Start, wait for and stop an A1111 WebUI (API only, or with its UI for tests/webui/ui; CPU, 127.0.0.1) for the
live-WebUI test tier.

The WebUI runs in its own Python (its virtualenv: it pins old numpy/pillow/transformers), in a new
process group, with ``--data-dir`` set to a scratch folder: its config.json, outputs, cache and
``extensions/`` live there, so the WebUI install itself is never modified and an instance already
running from the same install is not disturbed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

EXTENSION_NAME = "sd-webui-animatediff-engine"
CONTROLNET_NAME = "sd-webui-controlnet"
READY_PATH = "/sdapi/v1/sd-models"
STARTED_LOG = "Startup time:"  # WebUI 1.10 prints it once its API and every app_started callback are in place
# CPU-only, offline, API-only; the flags are the WebUI 1.10 names.
LAUNCH_FLAGS = (
    "--skip-prepare-environment", "--skip-torch-cuda-test", "--skip-version-check",
    "--skip-python-version-check", "--use-cpu", "all", "--no-half", "--precision", "full",
    "--api", "--nowebui", "--no-download-sd-model",
)


def repo_root() -> Path:
    """This repository (the extension folder WebUI loads)."""
    return Path(__file__).resolve().parents[2]


def resolve_python(webui_dir: Path, env: Mapping[str, str]) -> Path:
    """The WebUI's interpreter: ``$ANIMATEDIFF_WEBUI_PYTHON``, else ``<dir>/venv`` or ``<dir>/../venv``."""
    explicit = env.get("ANIMATEDIFF_WEBUI_PYTHON")
    candidates = [Path(explicit)] if explicit else [
        webui_dir / "venv" / "bin" / "python", webui_dir.parent / "venv" / "bin" / "python"]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"no WebUI Python found at {', '.join(map(str, candidates))}: set ANIMATEDIFF_WEBUI_PYTHON to "
        "the python of the virtualenv the WebUI's requirements are installed in")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def link_extension(data_dir: Path, source: Path, name: str = EXTENSION_NAME) -> Path:
    """Symlink ``source`` as ``<data_dir>/extensions/<name>`` (WebUI loads every folder there)."""
    extensions = data_dir / "extensions"
    extensions.mkdir(parents=True, exist_ok=True)
    link = extensions / name
    if link.is_symlink() or link.exists():
        if link.resolve() != source.resolve():
            raise FileExistsError(f"{link} exists and is not a link to {source}: remove it first")
        return link
    link.symlink_to(source.resolve(), target_is_directory=True)
    return link


def controlnet_source(webui_dir: Path | None, env: Mapping[str, str]) -> tuple[Path | None, bool]:
    """The ControlNet extension to link next to ours, and whether it is required.

    ``ANIMATEDIFF_WEBUI_CONTROLNET`` unset or empty: ``<webui>/extensions/sd-webui-controlnet`` when it
    exists (not required); ``0``: none; ``1``: that folder, required; any other value: the path of a
    ControlNet checkout, required. Raises FileNotFoundError when a required one is missing.
    """
    value = env.get("ANIMATEDIFF_WEBUI_CONTROLNET", "").strip()
    if value == "0":
        return None, False
    if value in ("", "1"):
        candidate = webui_dir / "extensions" / CONTROLNET_NAME if webui_dir is not None else None
    else:
        candidate = Path(value).expanduser()
    required = value != ""
    if candidate is not None and (candidate / "scripts" / "controlnet.py").exists():
        return candidate, required
    if required:
        raise FileNotFoundError(f"ANIMATEDIFF_WEBUI_CONTROLNET={value}: no ControlNet extension at {candidate} "
                                "(no scripts/controlnet.py); set it to 0 to run without ControlNet")
    return None, False


def controlnet_args(data_dir: Path) -> list[str]:
    """ControlNet's own flag (its preload.py) for its annotator folder, which it creates at start: inside
    the data dir, not the ControlNet install. Its model folder already follows ``--data-dir``
    (``<data-dir>/models/ControlNet``). It starts offline: nothing is downloaded until a preprocessor runs."""
    return ["--controlnet-annotator-models-path", str(data_dir / "models" / "ControlNet-annotators")]


def webui_version(webui_dir: Path) -> str:
    """``v1.10.1 (82a973c0)`` from the install's CHANGELOG.md (what A1111 shows without git) and, when
    present, the ``.exported-commit`` of a source export; ``unknown`` if neither is there."""
    version = ""
    changelog = webui_dir / "CHANGELOG.md"
    if changelog.exists():
        with open(changelog, encoding="utf-8") as handle:
            first = next((line.strip() for line in handle if line.strip()), "")
        version = "v" + first.lstrip("# ").strip() if first.startswith("## ") else ""
    commit_file = webui_dir / ".exported-commit"
    commit = commit_file.read_text().strip()[:8] if commit_file.exists() else ""
    return " ".join(filter(None, [version or "unknown", f"({commit})" if commit else ""]))


def launch_command(python: Path, checkpoint: Path, data_dir: Path, port: int,
                   extra_args: Sequence[str] = (), *, ui: bool = False) -> list[str]:
    """The ``launch.py`` command line (run it with the WebUI folder as working directory); ``ui``: with the
    WebUI's pages too (no ``--nowebui``), for the browser tests (tests/webui/ui)."""
    flags = [flag for flag in LAUNCH_FLAGS if not (ui and flag == "--nowebui")]
    return [str(python), "launch.py", *flags, "--server-name", "127.0.0.1", "--port", str(port),
            "--ckpt", str(checkpoint), "--data-dir", str(data_dir), *extra_args]


def hidden_part(path: Path) -> str | None:
    """The first folder or file name of ``path`` (made absolute) that starts with a dot, or None. Gradio 3.41
    answers 403 for any file under such a folder: a WebUI or data dir there serves a page without its scripts."""
    return next((part for part in path.absolute().parts if part.startswith(".")), None)


@dataclass
class WebUISession:
    """The WebUI the tier talks to. Paths are None when this session did not launch it."""

    url: str
    launched: bool
    extension_expected: bool  # our scripts should be loaded (ANIMATEDIFF_EXTENSION_LINK != "0")
    log_path: Path | None = None
    data_dir: Path | None = None
    checkpoint: Path | None = None
    startup_s: float = 0.0  # launch until the API answered and a 1-step warm-up image came back
    motion_module_dir: Path | None = None  # <data-dir>/models/AnimateDiff (see conftest's hook)
    motion_modules: list[Path] = field(default_factory=list)
    # ControlNet linked next to ours (launched) or named by ANIMATEDIFF_WEBUI_CONTROLNET (URL mode);
    # None: not known (URL mode without that variable)
    controlnet_expected: bool | None = False
    version: str = "unknown"  # the WebUI's version, when this session can tell
    config_file: Path | None = None  # its config.json, when this machine can read it
    python: Path | None = None  # its interpreter, when this session launched it

    def has_package(self, module: str) -> bool | None:
        """Whether the WebUI's Python can import ``module`` (an optional package); None when not known."""
        if self.python is None:
            return None
        return subprocess.run([str(self.python), "-c", f"import {module}"], capture_output=True,
                              timeout=120).returncode == 0


@dataclass
class LaunchedWebUI:
    """A WebUI this test session started: its base URL, process (a group leader) and log file."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    startup_s: float = 0.0


def start_webui(webui_dir: Path, command: Sequence[str], port: int, log_path: Path) -> LaunchedWebUI:
    """Start ``command`` in ``webui_dir`` in a new session (own process group), output to ``log_path``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny models: extra threads only spin on a shared CPU
    with open(log_path, "wb") as log:
        process = subprocess.Popen(list(command), cwd=webui_dir, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    return LaunchedWebUI(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)


def is_ready(url: str, timeout: float = 2.0) -> bool:
    """True once the API answers ``GET /sdapi/v1/sd-models`` with 200 (or 401: it asks for --api-auth's
    credentials, so it is up)."""
    try:
        with urllib.request.urlopen(f"{url}{READY_PATH}", timeout=timeout) as resp:
            return int(resp.status) == 200
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def wait_until_ready(webui: LaunchedWebUI, timeout: float, after_log: str | None = None) -> float:
    """Poll until the API answers; returns the seconds waited. Raises with the log's tail on failure.

    ``after_log``: no request is sent before this text is in the log. A WebUI with its UI listens before it adds
    its API, and a request in between makes Starlette build the app, after which adding the API's middleware
    fails ("Cannot add middleware after an application has started"): wait for ``STARTED_LOG`` there."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if webui.process.poll() is not None:
            raise RuntimeError(f"WebUI exited with code {webui.process.returncode} before its API came "
                               f"up; log {webui.log_path}:\n{log_tail(webui.log_path)}")
        if after_log is not None and after_log not in webui.log_path.read_text(errors="replace"):
            time.sleep(0.5)
            continue
        if is_ready(webui.url):
            webui.startup_s = time.monotonic() - start
            return webui.startup_s
        time.sleep(0.5)
    raise TimeoutError(f"WebUI API not up after {timeout:.0f} s (raise ANIMATEDIFF_WEBUI_STARTUP_TIMEOUT "
                       f"if the machine is slow); log {webui.log_path}:\n{log_tail(webui.log_path)}")


def stop_webui(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM the WebUI's process group, then SIGKILL it if it is still there after ``grace_s``."""
    if process.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def log_tail(log_path: Path | None, chars: int = 6000) -> str:
    """The last ``chars`` characters of the WebUI log (progress-bar carriage returns made newlines)."""
    if log_path is None or not log_path.exists():
        return "(no log)"
    with open(log_path, "rb") as log:
        log.seek(max(0, log_path.stat().st_size - chars))
        return log.read().decode("utf-8", "replace").replace("\r", "\n")


def script_load_errors(log_path: Path | None) -> str:
    """WebUI's "*** Error loading script" blocks from the log (they scroll out of the tail early)."""
    if log_path is None or not log_path.exists():
        return ""
    blocks, current = [], None
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("*** Error loading script"):
            current = [line]
        elif current is not None:
            current.append(line)
            if line.strip() == "---":
                blocks.append("\n".join(current))
                current = None
    return "\n".join(blocks)
