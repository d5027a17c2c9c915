"""Start and stop a Stable Diffusion WebUI Forge (CPU, API only, 127.0.0.1) for the live Forge tier.

Forge's own flags (``../shared/forge-kit/README.md``): ``--always-cpu`` instead of A1111's ``--use-cpu all``, no
precision flags. The checkpoint goes in ``<data-dir>/models/Stable-diffusion`` (Forge selects the only one there),
with the test-only model registration (tests/fixtures/forge_checkpoint.py, ``tiny_guess_ext``) so Forge can build
the tiny random model. Start, readiness and stop are the A1111 tier's (tests/webui/launcher.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures.forge_checkpoint import REPO_ENV, XL_REPO_ENV, build_forge_repo, build_forge_repo_xl
from tests.fixtures.forge_controlnet import build_forge_controlnet
from tests.fixtures.motion_loras import write_test_loras
from tests.fixtures.webui_checkpoint import build_tiny_sd15_checkpoint
from tests.webui.launcher import LaunchedWebUI, free_port, link_extension, repo_root

HERE = Path(__file__).resolve().parent
EXTENSION_NAME = "sd-webui-animatediff-engine"
GUESS_EXTENSION_NAME = "animatediff-test-tiny-guess"  # tests/forge/tiny_guess_ext
LORA_FOLDER = "animatediff-tests"  # under models/Lora (Forge's and A1111's --lora-dir default)
LAUNCH_FLAGS = (
    "--skip-prepare-environment", "--skip-torch-cuda-test", "--skip-python-version-check", "--skip-version-check",
    "--always-cpu", "--api", "--nowebui", "--no-download-sd-model",
)


@dataclass
class ForgeModel:
    """The tiny checkpoint (``.safetensors`` + ``.yaml``) and its diffusers-style folder, built once a session, and
    the folder of the tiny SDXL checkpoint (``tiny-sdxl2816``, written by the tests that use it)."""

    checkpoint: Path
    repo: Path
    xl_repo: Path


def build_model(root: Path, forge_dir: Path) -> ForgeModel:
    checkpoint = build_tiny_sd15_checkpoint(root / "checkpoint")
    clip = checkpoint.parent / "tiny-sd15-clip"  # the tiny SDXL checkpoint's CLIP-L is this one
    return ForgeModel(checkpoint, build_forge_repo(root / "forge-repo", clip),
                      build_forge_repo_xl(root / "forge-repo-xl", clip, forge_dir))


def prepare_data_dir(data_dir: Path, model: ForgeModel, with_extension: bool) -> None:
    """``--data-dir`` contents: the checkpoint, the tiny ControlNet model, the tiny motion LoRAs, the tiny-guess
    extension and (``with_extension``) ours."""
    models = data_dir / "models" / "Stable-diffusion"
    models.mkdir(parents=True, exist_ok=True)
    for path in (model.checkpoint, model.checkpoint.with_suffix(".yaml")):
        shutil.copyfile(path, models / path.name)
    link_extension(data_dir, HERE / "tiny_guess_ext", GUESS_EXTENSION_NAME)
    build_forge_controlnet(data_dir / "models" / "ControlNet")  # for Forge's built-in ControlNet
    write_test_loras(data_dir / "models" / "Lora" / LORA_FOLDER)  # tiny motion LoRAs (test_forge_lora.py)
    if with_extension:
        link_extension(data_dir, repo_root(), EXTENSION_NAME)


def launch_command(python: Path, data_dir: Path, port: int, extra: Sequence[str] = ()) -> list[str]:
    return [str(python), "launch.py", *LAUNCH_FLAGS, "--server-name", "127.0.0.1", "--port", str(port),
            "--data-dir", str(data_dir), *extra]


def start_forge(forge_dir: Path, python: Path, data_dir: Path, model: ForgeModel, log_path: Path,
                extra: Sequence[str] = ()) -> LaunchedWebUI:
    """Start Forge in its own process group (output to ``log_path``); HF_HOME in the scratch folder."""
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HOME=str(data_dir.parent / "hf-home"))
    env[REPO_ENV], env[XL_REPO_ENV] = str(model.repo), str(model.xl_repo)
    env.setdefault("OMP_NUM_THREADS", "1")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(launch_command(python, data_dir, port, extra), cwd=forge_dir, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    return LaunchedWebUI(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)


def tracebacks_from(log_path: Path, folder: str, upto: int | None = None) -> list[str]:
    """Every traceback block of the log (its first ``upto`` bytes) with a frame in a file under ``folder`` (an
    extension's name)."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    with open(log_path, "rb") as log:
        text = log.read(upto if upto is not None else -1).decode("utf-8", "replace")
    for line in text.splitlines():
        if "Traceback (most recent call last)" in line or line.startswith("*** Error"):
            current = [line]
            blocks.append(current)
        elif current is not None:
            current.append(line)
            if not line.startswith((" ", "\t")) or line.strip() == "---":
                current = None
    return ["\n".join(b) for b in blocks if any(f"/{folder}/" in line and "File " in line for line in b)]
