"""Command-line tools: ``python -m motion_module inspect FILE... [--json] [--hash]`` and
``python -m motion_module convert IN OUT [--force]``.

``inspect`` reads only the header of a safetensors file (shapes and dtypes, no weights), so it is instant on
real 1-2 GB modules. A bad file is reported as one line on stderr (no traceback) and makes the exit status 2;
the other files are still reported. ``convert`` writes fp16 safetensors in the original AnimateDiff layout
(what every AnimateDiff implementation reads) from any supported file, and checks that the result re-reads
to the same spec.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from motion_module.cli.cli import convert_parser, inspect_parser, one_line, print_error, target_problem
from motion_module.core.schedules import FAMILY_SCHEDULES
from motion_module.errors import InterpolationError, MotionModuleError, OutputError
from motion_module.files.convert import detect_layout, to_original_layout
from motion_module.files.loading import check_state_dict, file_hash, named_errors, read_state_dict, write_safetensors
from motion_module.files.lora import describe_lora
from motion_module.files.spec import MotionModuleSpec, detect_spec, with_family
from motion_module.video.rife import describe_ifnet

EXIT_BAD_FILE = 2


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def inspect_file(path: str | os.PathLike[str], *, with_hash: bool = False) -> dict[str, Any]:
    """What ``inspect`` reports for one file (JSON-ready). Raises MotionModuleError naming the file."""
    state_dict = read_state_dict(path, meta=True)
    try:
        rife = describe_ifnet(state_dict)
    except InterpolationError as exc:  # IFNet-like keys in an unsupported layout
        raise MotionModuleError(f"{Path(path).name}: {exc}") from None
    if rife is not None:  # frame-interpolation weights, not a motion module
        return {"file": str(path), **rife}
    lora = describe_lora(state_dict)
    if lora is not None:  # a LoRA in AnimateDiff's layouts: where it goes instead
        return {"file": str(path), **lora, "use": f"put it in WebUI's models/Lora folder and write "
                f"<lora:{Path(path).stem}:0.8> in the prompt" + (" (with a motion module it fits: the official "
                "v2_lora_* files need V2)" if lora["kind"] == "motion LoRA" else "")}
    with named_errors(path):
        layout = detect_layout(state_dict)
        original = to_original_layout(state_dict)
        spec = detect_spec(state_dict)  # from the file's own layout: what was assumed depends on it
        check_state_dict(spec, original)
    info: dict[str, Any] = {
        "file": str(path),
        "family": spec.family,
        "base": spec.base,
        "channels": list(spec.channels),
        "max_frames": spec.max_frames,
        "mid_block": spec.mid_block,
        "dtype": _dtype_name(spec.dtype),
        "params": spec.params,
        "beta_schedule": spec.beta_schedule,
        "beta": FAMILY_SCHEDULES[spec.family].label,
        "layout": layout,
        "pe_stored": spec.pe_stored,
        "cross_frame_groupnorm": spec.cross_frame_groupnorm,
        "motion_norm": spec.motion_norm,
        "assumption": spec.assumption,
    }
    if with_hash:
        info["sha256"] = file_hash(path)
        info["short_hash"] = info["sha256"][:8]
    return info


def _describe(info: dict[str, Any]) -> str:
    if "blocks" in info:  # RIFE weights
        return f"{info['file']}: {info['kind']}, {info['blocks']} flow blocks of widths " \
               f"{'/'.join(map(str, info['widths']))}, {info['params']:,} parameters, {info['dtype']}; {info['use']}"
    if "kind" in info:
        shape = (f", for modules with channels {'/'.join(map(str, info['channels']))} and "
                 f"{'a' if info['mid_block'] else 'no'} mid block" if "channels" in info else "")
        return f"{info['file']}: {info['kind']}, {info['layers']} layers of rank {info['rank']}, {info['dtype']}" \
               f"{shape}; {info['use']}"
    mid = "with" if info["mid_block"] else "no"
    text = (
        f"{info['file']}: {info['family']} ({info['base']}, channels {'/'.join(map(str, info['channels']))}, "
        f"{mid} mid block, up to {info['max_frames']} frames, {info['dtype']}), {info['params']:,} parameters, "
        f"beta schedule {info['beta']}, {info['layout']} layout"
    )
    if not info["pe_stored"]:
        text += ", positional table computed"
    if "short_hash" in info:
        text += f", hash {info['short_hash']}"
    if info.get("assumption"):
        text += f"; {info['assumption']}"
    return text


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # the parser already printed the usage / the one error line
        return int(exc.code or 0)


def _report_error(path: object, exc: BaseException) -> None:
    message = one_line(exc)
    if not message.startswith(Path(str(path)).name):
        message = f"{path}: {message}"
    print_error(message)


def main_inspect(argv: list[str]) -> int:
    """``inspect FILE... [--json] [--hash]``: one line (or JSON object) per file; 2 if any file is bad."""
    parser = inspect_parser()
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    status = 0
    for name in args.files:
        try:
            info = inspect_file(name, with_hash=args.hash)
        except (MotionModuleError, OSError) as exc:
            _report_error(name, exc)
            status = EXIT_BAD_FILE
            continue
        print(json.dumps(info) if args.json else _describe(info), flush=True)
    return status


def _fp16_tensors(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Float tensors as contiguous fp16, each with its own storage (safetensors refuses shared memory)."""
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for key, tensor in state_dict.items():
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float16)
        tensor = tensor.contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        out[key] = tensor
    return out


def convert_file(source: Path, target: Path, family: str | None = None) -> MotionModuleSpec:
    """Write ``source`` as fp16 original-layout safetensors at ``target`` (atomically); return the re-read spec.

    ``family``: re-label as a family with the same shapes (``spec.with_family``: a diffusers V1 adapter saved
    with max_seq_length 32, detected as V3, becomes V1 with ``family="v1"``). Reading errors are
    MotionModuleErrors naming ``source``; writing errors are OutputErrors naming ``target``.
    """
    state_dict = read_state_dict(source)
    with named_errors(source):
        layout = detect_layout(state_dict)
        original = to_original_layout(state_dict) if family is None else with_family(state_dict, family)
        spec = detect_spec(original)
        check_state_dict(spec, original)
    metadata = {"format": "pt", "animatediff_family": spec.family, "converted_from": f"{source.name} ({layout})"}
    write_safetensors(target, _fp16_tensors(original), metadata)
    written = detect_spec(read_state_dict(target, meta=True))
    for field in ("family", "base", "channels", "max_frames", "mid_block", "params"):
        if getattr(written, field) != getattr(spec, field):
            raise MotionModuleError(f"{target.name}: conversion changed {field}; please report this as a bug")
    return written


def main_convert(argv: list[str]) -> int:
    """``convert IN OUT [--force]``: fp16 safetensors in the original AnimateDiff layout."""
    parser = convert_parser()
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    source, target = Path(args.source), Path(args.target)
    problem = target_problem(target, args.force)
    if problem:
        print_error(problem)
        return EXIT_BAD_FILE
    try:
        spec = convert_file(source, target, args.family)
    except OutputError as exc:  # writing: the output path is to blame
        print_error(exc)
        return EXIT_BAD_FILE
    except (MotionModuleError, OSError) as exc:
        _report_error(source, exc)
        return EXIT_BAD_FILE
    print(f"wrote {target}: {spec.describe()}")
    return 0
