"""How a motion module's weights are stored: FP8 storage of Linear weights, computed in the input's dtype.

WebUI's *FP8 weight* option (A1111 >= 1.8, ``modules/sd_models.py`` ``check_fp8``) stores the UNet's Linear
and Conv2d weights as ``float8_e4m3fn`` when it is "Enable", or "Enable for SDXL" with an SDXL checkpoint;
never on Apple MPS; ``--no-half`` does not change it (the rest of the UNet then stays float32). It is storage
only: each layer's weight is cast up to the compute dtype when it runs, so it halves the weights' memory
against fp16 and does not speed anything up. :func:`fp8_wanted` makes the same decision for the motion
module, and a module built with ``weights=FP8`` (``loading.build_motion_module``) stores every Linear weight
(about 99 % of its parameters) in float8_e4m3fn, unscaled as WebUI does, while norms, biases and positional
tables keep the compute dtype. Such a module uses :class:`CastLinear` for its Linear layers (same parameter
names, so a state dict still loads); with other storage nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FP8: torch.dtype | None = getattr(torch, "float8_e4m3fn", None)  # torch >= 2.1
STORAGE_ONLY = frozenset(getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name))


def fp8_wanted(option: object, base: str, device: str | torch.device = "cpu") -> bool:
    """WebUI's decision for the loaded checkpoint (``check_fp8``): ``option`` is its ``fp8_storage`` setting
    ("Disable" / "Enable for SDXL" / "Enable"; None = Disable), ``base`` "sd15"/"sdxl". False on MPS and
    where torch has no float8."""
    if FP8 is None or torch.device(device).type == "mps":
        return False
    return option == "Enable" or (option == "Enable for SDXL" and base.lower() == "sdxl")


def compute_weight(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """``weight`` ready for a GEMM with inputs of ``dtype``: a storage-only dtype (float8) is cast to ``dtype``;
    any other weight is returned as it is (autocast, if active, decides as before)."""
    return weight.to(dtype) if weight.dtype in STORAGE_ONLY else weight


class CastLinear(nn.Linear):
    """An ``nn.Linear`` whose weight (and bias) may be stored in float8: cast to the input's dtype per call."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - nn.Linear's own argument name
        bias = None if self.bias is None else compute_weight(self.bias, input.dtype)
        return F.linear(input, compute_weight(self.weight, input.dtype), bias)


def _linears(module: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Linear]]:
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                yield parent, name, child


def use_cast_linears(module: nn.Module, storage: torch.dtype) -> dict[str, torch.dtype]:
    """Replace every plain ``nn.Linear`` of ``module`` (built on the meta device, before its weights are
    assigned) by a :class:`CastLinear` of the same shape; returns the names of their weights (state-dict
    keys), each mapped to ``storage``, for the loader to store them so."""
    names = {id(m): n for n, m in module.named_modules()}
    keys: dict[str, torch.dtype] = {}
    for parent, name, linear in _linears(module):
        with torch.device("meta"):
            cast = CastLinear(linear.in_features, linear.out_features, bias=linear.bias is not None)
        setattr(parent, name, cast)
        prefix = f"{names[id(parent)]}.{name}".lstrip(".")
        keys[f"{prefix}.weight"] = storage
    return keys


def follow_host(module: nn.Module, host: nn.Module) -> None:
    """Move ``module`` (in place) to the device of ``host``'s parameters and to its compute dtype: the dtype of
    its first parameter that is not stored in float8 (a UNet under WebUI's FP8 option keeps its norms in fp16
    or fp32). Tensors ``module`` stores in float8 only change device: the motion module's own storage choice
    stays, whatever the host's."""
    params = list(host.parameters())
    if not params:
        return
    compute = next((p.dtype for p in params if p.is_floating_point() and p.dtype not in STORAGE_ONLY), None)
    device = params[0].device

    def convert(t: Tensor) -> Tensor:
        keep = compute is None or not t.is_floating_point() or t.dtype in STORAGE_ONLY
        return t.to(device=device) if keep else t.to(device=device, dtype=compute)

    module._apply(convert)


def weight_storage(module: nn.Module) -> torch.dtype | None:
    """The dtype the module's Linear weights are stored in (None: no Linear layer)."""
    return next((m.weight.dtype for m in module.modules() if isinstance(m, nn.Linear)), None)


def parameter_bytes(module: nn.Module) -> int:
    """Bytes held by the module's parameters and buffers (what its weights cost in memory)."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


__all__ = ["FP8", "STORAGE_ONLY", "CastLinear", "compute_weight", "follow_host", "fp8_wanted", "parameter_bytes",
           "use_cast_linears", "weight_storage"]
