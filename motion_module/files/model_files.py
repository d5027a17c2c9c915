"""Motion-module files in a model folder: listing, the automatic choice, and safe name resolution.

A name always comes relative to the model folder (sub-folders allowed, ``/`` separated) and must
resolve to a file inside it: ``../x``, absolute paths and links that lead out of the folder are
refused, so a name from an API request can never reach another file of the server.
"""

from __future__ import annotations

from pathlib import Path

from motion_module.errors import ParameterError

MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth")
PREFERRED = "mm_sd15_v3.safetensors"


def list_motion_modules(root: Path) -> list[str]:
    """Motion-module files under ``root`` (recursive), as ``/``-separated paths relative to it, sorted
    case-insensitively. A missing folder lists nothing."""
    if not root.is_dir():
        return []
    found = [p.relative_to(root).as_posix() for p in root.rglob("*")
             if p.is_file() and p.suffix.lower() in MODEL_EXTENSIONS]
    return sorted(found, key=str.casefold)


def default_motion_module(available: list[str]) -> str:
    """What an empty name means: ``mm_sd15_v3.safetensors`` if present, else the first file by name."""
    if PREFERRED in available:
        return PREFERRED
    return available[0] if available else ""


def resolve_motion_module(root: Path, name: str) -> tuple[Path, str]:
    """The file for ``name`` ("" = automatic) inside ``root``, and its name relative to ``root``.

    Raises ParameterError (field ``model``) when the folder holds no module, the name leaves the
    folder, or no such file exists (the message lists what is there).
    """
    root = root.expanduser().resolve()
    available = list_motion_modules(root)
    if not name:
        if not available:
            raise ParameterError("model", f"no motion module found in {root}: download one (e.g. {PREFERRED}) "
                                 "into that folder or set the folder in Settings > AnimateDiff")
        name = default_motion_module(available)
    path = (root / name).resolve()
    if root not in path.parents:
        raise ParameterError("model", f"{name!r} is outside the model folder {root}")
    if not path.is_file():
        shown = ", ".join(available[:10]) or "none"
        raise ParameterError("model", f"motion module {name!r} not found in {root}. Available: {shown}")
    return path, path.relative_to(root).as_posix()





def model_root(configured: str, default: Path) -> Path:
    """The motion-module folder: the configured one ("" = ``default``, the extension's model/ folder)."""
    return Path(configured).expanduser() if configured.strip() else default


__all__ = ["MODEL_EXTENSIONS", "default_motion_module", "list_motion_modules", "model_root", "resolve_motion_module"]
