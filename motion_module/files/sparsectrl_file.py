"""SparseCtrl files for sd-webui-controlnet: ``python -m motion_module sparsectrl IN OUT.safetensors [--force]``.

The official files (``v3_sd15_sparsectrl_rgb.ckpt``, ``v3_sd15_sparsectrl_scribble.ckpt``) hold AnimateDiff's
``SparseControlNetModel`` (``animatediff/models/sparse_controlnet.py``): its ControlNet part in diffusers names
(``conv_in``, ``time_embedding``, ``controlnet_cond_embedding``, ``down_blocks.<i>.resnets/attentions/
downsamplers``, ``mid_block``, ``controlnet_down_blocks``, ``controlnet_mid_block``), possibly under a top-level
``controlnet`` entry, beside its temporal layers (``down_blocks.<i>.motion_modules.<j>``). sd-webui-controlnet
1.1.455 recognises a SparseCtrl file by those temporal layers but loads its ControlNet part with ``strict=True``
into its ldm-named ControlNet (``input_blocks``, ``input_hint_block``, ``zero_convs``, ``middle_block``,
``middle_block_out``), and tells RGB from scribble by ``input_hint_block.0.weight``: the official files do not
load as they are. :func:`to_controlnet_layout` renames the ControlNet part to ldm's names (SD1.5 structure: 4
levels of 2 ResBlocks; the RGB model's one-conv condition embedding becomes ``input_hint_block.0``, the
scribble model's ``conv_in``/``blocks``/``conv_out`` embedding ``input_hint_block.0.*``), keeps the temporal
layers' names and drops stored positional tables; the command writes that as fp16 safetensors. Files already
in ldm names (e.g. the A1111 repackagings) pass through unchanged. Reading is safe (``loading.read_state_dict``:
safetensors, or ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from motion_module.cli.cli import one_line, print_error, sparsectrl_parser, target_problem
from motion_module.control.sparsectrl import sparsectrl_channels
from motion_module.errors import MotionModuleError, NotAMotionModuleError, OutputError
from motion_module.files.loading import named_errors, read_state_dict, write_safetensors

EXIT_BAD_FILE = 2
_RESNET = (("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("time_emb_proj.", "emb_layers.1."),
           ("norm2.", "out_layers.0."), ("conv2.", "out_layers.3."), ("conv_shortcut.", "skip_connection."))
_PREFIXES = (("conv_in.", "input_blocks.0.0."), ("time_embedding.linear_1.", "time_embed.0."),
             ("time_embedding.linear_2.", "time_embed.2."), ("controlnet_cond_embedding.", "input_hint_block.0."),
             ("controlnet_mid_block.", "middle_block_out.0."), ("mid_block.attentions.0.", "middle_block.1."))
_PATTERNS = (
    (re.compile(r"^down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$"), lambda m: (3 * int(m[1]) + int(m[2]) + 1, 0, True)),
    (re.compile(r"^down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)$"), lambda m: (3 * int(m[1]) + int(m[2]) + 1, 1, False)),
)
_SIMPLE = (
    (re.compile(r"^down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)$"),
     lambda m: f"input_blocks.{3 * int(m[1]) + 3}.0.op.{m[2]}"),
    (re.compile(r"^mid_block\.resnets\.([01])\.(.*)$"), lambda m: f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"),
    (re.compile(r"^controlnet_down_blocks\.(\d+)\.(.*)$"), lambda m: f"zero_convs.{m[1]}.0.{m[2]}"),
)


def _resnet(rest: str) -> str:
    return next((new + rest[len(old):] for old, new in _RESNET if rest.startswith(old)), rest)


def _ldm_name(key: str) -> str | None:
    """ldm's name for a diffusers ControlNet tensor name (None: not a ControlNet tensor)."""
    for pattern, where in _PATTERNS:
        if (match := pattern.match(key)) is not None:
            block, layer, resnet = where(match)
            return f"input_blocks.{block}.{layer}.{_resnet(match[3]) if resnet else match[3]}"
    for pattern, name in _SIMPLE:
        if (match := pattern.match(key)) is not None:
            return name(match)
    return next((new + key[len(old):] for old, new in _PREFIXES if key.startswith(old)), None)


def to_controlnet_layout(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A SparseCtrl state dict in the names sd-webui-controlnet 1.1.455 loads (see the module docstring).

    Raises NotAMotionModuleError when the tensors are not a SparseCtrl model (no or wrong temporal layers, a
    ControlNet tensor with no ldm name, or no ``input_blocks.0.0.weight`` after renaming)."""
    temporal = {k: v for k, v in state_dict.items() if ".motion_modules." in k and not k.endswith(".pos_encoder.pe")}
    sparsectrl_channels(temporal)  # 4 levels x 2 layers, nothing else
    out = dict(temporal)
    unknown = []
    for key, value in state_dict.items():
        if ".motion_modules." in key:
            continue
        ldm = key if key.startswith(("input_blocks.", "input_hint_block.", "zero_convs.", "middle_block",
                                     "time_embed.")) else _ldm_name(key)
        if ldm is None:
            unknown.append(key)
        else:
            out[ldm] = value
    if unknown or "input_blocks.0.0.weight" not in out:
        raise NotAMotionModuleError(
            f"not a SparseCtrl model in AnimateDiff's or ControlNet's names: "
            f"{f'unknown tensors {unknown[:4]}' if unknown else 'no conv_in / input_blocks.0.0 weight'}; use "
            "v3_sd15_sparsectrl_rgb.ckpt or v3_sd15_sparsectrl_scribble.ckpt")
    return out


def convert_file(source: Path, target: Path) -> str:
    """Write ``source`` (a SparseCtrl file) as fp16 safetensors that ControlNet 1.1.455 loads; returns
    "RGB" or "scribble". Reading errors name ``source``; writing errors are OutputErrors naming ``target``."""
    with named_errors(source):
        converted = to_controlnet_layout(read_state_dict(source))
    kind = "RGB" if "input_hint_block.0.weight" in converted else "scribble"
    tensors = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in converted.items()}
    write_safetensors(target, tensors, {"format": "pt", "converted_from": source.name, "sparsectrl": kind})
    return kind


def main_sparsectrl(argv: list[str]) -> int:
    """``sparsectrl IN OUT [--force]``: a SparseCtrl file in the names ControlNet 1.1.455 loads."""
    try:
        args = sparsectrl_parser().parse_args(argv)
    except SystemExit as exc:  # the parser already printed the usage / the one error line
        return int(exc.code or 0)
    source, target = Path(args.source), Path(args.target)
    problem = target_problem(target, args.force)
    if problem:
        print_error(problem)
        return EXIT_BAD_FILE
    try:
        kind = convert_file(source, target)
    except (MotionModuleError, OSError) as exc:
        message = one_line(exc)
        print_error(message if isinstance(exc, OutputError) or message.startswith(source.name)
                    else f"{source}: {message}")
        return EXIT_BAD_FILE
    print(f"wrote {target}: SparseCtrl ({kind}) for sd-webui-controlnet; put it in models/ControlNet")
    return 0


__all__ = ["convert_file", "main_sparsectrl", "to_controlnet_layout"]
