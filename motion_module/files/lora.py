"""Motion LoRAs: read safely, checked against the motion module, merged into it for one run and undone exactly.

Design (why not through WebUI's Lora extension). The Lora extension changes a layer's weights lazily, in that
layer's own ``forward``, for layers registered under a name when the LoRA file is loaded. Motion modules are in
the UNet only while AnimateDiff samples (long after the extension matched the file's keys and cached the result),
and their attention reads ``to_q/to_k/to_v.weight`` in one fused product without calling those layers. So the
engine applies motion LoRAs itself: the host says which LoRAs the prompt activated and with which UNet strength
(``<lora:v2_lora_PanLeft:0.8>``: 0.8; A1111: :func:`active_motion_loras`, Forge, whose extension keeps no
strengths: :func:`prompt_motion_loras`), :func:`motion_loras_for` keeps the motion LoRAs among them, and
:func:`applied_motion_loras`, entered by ``patch.animatediff_patch`` (A1111) or ``animatediff_hosts.forge.forge_patch``,
gives each changed layer of the (cached, shared) motion module a new weight ``W + sum_i strength_i * scale_i *
up_i @ down_i`` for the duration of the block and puts the very same weight object back afterwards: bit-exact,
also on an error or an interrupt, and the cached module's tensors are never written. Strength 0 leaves a LoRA out
entirely (bit-identical to no LoRA). ``scale`` is ``alpha / rank`` where the file stores ``alpha`` (kohya layout),
else 1, as AnimateDiff's own loader merges ``strength * up @ down``. Cost: one extra copy of each changed weight on
the device while the run lasts (the attention projections: about 330 MB at fp16 for a v2 motion LoRA on
``mm_sd_v15_v2``).

Files are read like motion modules (``loading.read_state_dict``: safetensors, or ``torch.load(weights_only=True)``,
never a code-carrying pickle); key layouts are in ``lora_keys``.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from motion_module.core.instance_forward import Forward, wrap_attribute
from motion_module.core.model import MotionModule
from motion_module.errors import IncompatibleModelError, NotAMotionModuleError
from motion_module.files.loading import FileKey, file_version, named_errors, read_state_dict
from motion_module.files.lora_keys import MOTION, SPATIAL, classify, kohya_unet_key, motion_target, split_key

CACHE_SIZE = 4
LOADER_MARK = "animatediff_load_network_wrapped"  # on the Lora extension's `networks` module while wrapped


@dataclass(frozen=True)
class LoraLayer:
    """One layer's low-rank pair: ``down`` ``(rank, in)``, ``up`` ``(out, rank)``, optional ``alpha``."""

    down: Tensor
    up: Tensor
    alpha: float | None = None

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.down.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.up.shape[0]), int(self.down.shape[1])

    def delta(self, device: torch.device) -> Tensor:
        """``scale * up @ down`` in float32 on ``device``."""
        return self.add_to(torch.zeros(self.shape, device=device), 1.0)

    def add_to(self, weight: Tensor, strength: float) -> Tensor:
        """``weight += strength * scale * up @ down`` in place (``weight``: float32); returns ``weight``."""
        up = self.up.to(device=weight.device, dtype=torch.float32).flatten(1)
        down = self.down.to(device=weight.device, dtype=torch.float32).flatten(1)
        return weight.addmm_(up, down, alpha=strength * self.scale)


@dataclass(frozen=True)
class MotionLora:
    """A motion LoRA: ``layers`` maps ``MotionModule`` parameter names (original layout) to their pairs."""

    name: str
    layers: Mapping[str, LoraLayer]


def _pairs(state_dict: Mapping[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """``{dotted layer name: {"down"|"up"|"alpha": tensor}}``; a key of no LoRA layout is an error."""
    grouped: dict[str, dict[str, Tensor]] = {}
    for key, tensor in state_dict.items():
        split = split_key(key)
        if split is None:
            raise NotAMotionModuleError(f"'{key}' is not a LoRA tensor: the file is not a LoRA AnimateDiff reads")
        head, part = split
        grouped.setdefault(head, {})[part] = tensor
    for head, parts in grouped.items():
        if "down" not in parts or "up" not in parts:
            raise NotAMotionModuleError(f"layer '{head}' has no {'up' if 'down' in parts else 'down'} weight; "
                                        "the file is damaged: re-download it")
    return grouped


def _layer(parts: Mapping[str, Tensor]) -> LoraLayer:
    alpha = parts.get("alpha")
    return LoraLayer(parts["down"], parts["up"], None if alpha is None else float(alpha.float().reshape(-1)[0]))


def parse_motion_lora(state_dict: Mapping[str, Tensor], name: str) -> MotionLora:
    """The motion LoRA held by ``state_dict`` (any layout of ``lora_keys``). Raises NotAMotionModuleError for a
    file that is not one (a spatial LoRA, or tensors of no LoRA layout)."""
    layers: dict[str, LoraLayer] = {}
    for head, parts in _pairs(state_dict).items():
        target = motion_target(head)
        if target is None:
            raise NotAMotionModuleError(f"layer '{head}' is not inside a motion module: this is not a motion LoRA")
        layers[target] = _layer(parts)
    return MotionLora(name, layers)


def spatial_to_kohya(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A spatial UNet LoRA in a dotted diffusers layout (the V3 domain adapter) under the names WebUI's Lora
    extension reads (``lora_unet_..._to_q.lora_down.weight``; no ``alpha``: scale 1, as AnimateDiff merges it)."""
    return {kohya_unet_key(head, part): tensor
            for head, parts in _pairs(state_dict).items() for part, tensor in parts.items()}


def describe_lora(state_dict: Mapping[str, Tensor]) -> dict[str, object] | None:
    """What ``inspect`` says about a LoRA in one of AnimateDiff's layouts (None for any other file): its kind,
    layers, rank, dtype, and for a motion LoRA the module shape it needs (channels per level, mid block)."""
    kind = classify(state_dict)
    if kind is None:
        return None
    pairs = _pairs(state_dict)
    first = next(iter(pairs.values()))
    info: dict[str, object] = {"kind": "motion LoRA" if kind == MOTION else "spatial LoRA (V3 domain adapter layout)",
                               "layers": len(pairs), "rank": int(first["down"].shape[0]),
                               "dtype": str(first["down"].dtype).replace("torch.", "")}
    if kind == MOTION:
        lora = parse_motion_lora(state_dict, "")
        levels = {int(k.split(".")[1]): layer.shape[0] for k, layer in lora.layers.items()
                  if k.startswith("down_blocks.") and ".to_q." in k}
        info["channels"] = [levels[i] for i in sorted(levels)]
        info["mid_block"] = any(k.startswith("mid_block.") for k in lora.layers)
    return info


# ------------------------------------------------------------------------------------------------ files
_KINDS: dict[FileKey, str | None] = {}
_CACHE: OrderedDict[FileKey, MotionLora] = OrderedDict()
_LOCK = threading.Lock()


def lora_kind(path: str | os.PathLike[str]) -> str | None:
    """``"motion"``, ``"spatial"`` (see ``lora_keys.classify``) or None, from the file's key names only (its
    header; nothing else is read); None also for a file that cannot be read (the host's loader reports that)."""
    try:
        key = file_version(path)
    except OSError:
        return None
    if key not in _KINDS:
        try:
            _KINDS[key] = classify(read_state_dict(path, meta=True).keys())
        except Exception:  # any unreadable file: not ours to judge
            _KINDS[key] = None
    return _KINDS[key]


def read_spatial_lora(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The tensors of a spatial LoRA file in a dotted diffusers layout, safely read, under WebUI's Lora names."""
    with named_errors(path):
        return spatial_to_kohya(read_state_dict(path))


def load_motion_lora(path: str | os.PathLike[str], name: str, *, cached: bool = True) -> MotionLora:
    """The motion LoRA of ``path`` (read safely), through a small LRU cache keyed by the file's version
    (``loading.file_version``: a rewritten or replaced file is read again)."""
    key = file_version(path)
    with _LOCK:
        if cached and key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        if not cached:
            _CACHE.clear()
        with named_errors(path):
            lora = parse_motion_lora(read_state_dict(path), name)
        if cached:
            _CACHE[key] = lora
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
        return lora


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
        _KINDS.clear()


def motion_loras_for(entries: Iterable[tuple[str, str | os.PathLike[str], float]], *,
                     cached: bool = True) -> list[tuple[MotionLora, float]]:
    """The motion LoRAs among the LoRAs the host activated, given as ``(name, file, UNet strength)``; other LoRAs
    (spatial ones, which the host applies itself) and strength 0 are left out."""
    return [(load_motion_lora(path, name, cached=cached), float(strength)) for name, path, strength in entries
            if float(strength) != 0.0 and lora_kind(path) == MOTION]


def active_motion_loras(lora_extension: Any, *, cached: bool = True) -> list[tuple[MotionLora, float]]:
    """The motion LoRAs WebUI's Lora extension activated for the batch: ``lora_extension`` is its ``networks``
    module (None when that extension is off), whose ``loaded_networks`` have ``name``, ``network_on_disk.filename``
    and ``unet_multiplier`` (the UNet strength of ``<lora:NAME:0.8>``)."""
    networks = getattr(lora_extension, "loaded_networks", None) or []
    return motion_loras_for([(n.name, n.network_on_disk.filename, n.unet_multiplier) for n in networks], cached=cached)


def prompt_strengths(params_list: Iterable[Any]) -> list[tuple[str, float]]:
    """``(name, UNet strength)`` of each ``<lora:...>`` of a prompt, from WebUI's parsed ``ExtraNetworkParams``
    (``positional``, ``named``: ``p.extra_network_data["lora"]``), read as the Lora extensions of A1111 and Forge
    read them: ``<lora:NAME:TE:UNET>`` or ``te=``/``unet=``, the UNet strength defaulting to the TE one, that to 1.
    An entry whose strengths are not numbers is left out (the Lora extension refuses it)."""
    found = []
    for params in params_list:
        positional, named = list(params.positional), dict(params.named)
        if not positional:
            continue
        try:
            te = float(named.get("te", positional[1] if len(positional) > 1 else 1.0))
            unet = float(named.get("unet", positional[2] if len(positional) > 2 else te))
        except (TypeError, ValueError):
            continue
        found.append((str(positional[0]), unet))
    return found


def prompt_motion_loras(params_list: Iterable[Any], lora_extension: Any, *,
                        cached: bool = True) -> list[tuple[MotionLora, float]]:
    """The motion LoRAs of a prompt's ``<lora:...>`` (``prompt_strengths``) with their UNet strengths, each file as
    the Lora extension resolved the name (its ``networks`` module's ``loaded_networks``: ``name``,
    ``network_on_disk.filename``); a name it did not load is left out. Host-independent: Forge's extension keeps no
    per-network strength (its ``unet_multiplier`` stays 1), so the strengths come from the prompt."""
    networks = getattr(lora_extension, "loaded_networks", None) or []
    files = {n.name: n.network_on_disk.filename for n in networks}
    return motion_loras_for([(name, files[name], strength) for name, strength in prompt_strengths(params_list)
                             if name in files], cached=cached)


# ------------------------------------------------------------------------------------------------ apply
def check_fits(lora: MotionLora, mm: MotionModule) -> None:
    """Raise IncompatibleModelError unless every layer of ``lora`` exists in ``mm`` with the LoRA's shape."""
    params = dict(mm.named_parameters())
    missing = [k for k in lora.layers if k not in params]
    wrong = [k for k, layer in lora.layers.items() if k in params and tuple(params[k].shape) != layer.shape]
    if not missing and not wrong:
        return
    problem = (f"{len(missing)} of its {len(lora.layers)} layers do not exist there (e.g. {missing[0]})" if missing
               else f"{len(wrong)} layers have other sizes (e.g. {wrong[0]}: {lora.layers[wrong[0]].shape} for "
               f"{tuple(params[wrong[0]].shape)})")
    raise IncompatibleModelError(
        f"motion LoRA '{lora.name}' does not fit the selected motion module ({mm.spec.describe()}): {problem}. A "
        "motion LoRA works only with the module family it was trained for (the official v2_lora_* files: "
        "AnimateDiff V2, mm_sd_v15_v2): select that motion module or remove the LoRA from the prompt")


def _owner(mm: nn.Module, target: str) -> tuple[nn.Module, str]:
    path, _, attr = target.rpartition(".")
    return mm.get_submodule(path), attr


@contextmanager
def applied_motion_loras(mm: MotionModule, loras: Sequence[tuple[MotionLora, float]]) -> Iterator[int]:
    """Merge ``loras`` (``(lora, strength)``, stacked in order) into ``mm``'s weights for the block; yields the
    number of changed weights. Every LoRA is checked first (IncompatibleModelError before anything changes); on
    exit each changed layer gets its very own weight object back (bit-exact). Strength 0 changes nothing."""
    active = [(lora, float(strength)) for lora, strength in loras if float(strength) != 0.0]
    for lora, _ in active:
        check_fits(lora, mm)
    targets = dict.fromkeys(target for lora, _ in active for target in lora.layers)  # in order, once each
    swapped: list[tuple[nn.Module, str, nn.Parameter]] = []
    try:
        for target in targets:  # one weight at a time: the extra memory is the changed weights, no more
            owner, attr = _owner(mm, target)
            old = owner._parameters[attr]
            assert old is not None
            merged = old.detach().to(torch.float32, copy=True)
            for lora, strength in active:
                if target in lora.layers:
                    lora.layers[target].add_to(merged, strength)
            owner._parameters[attr] = nn.Parameter(merged.to(old.dtype), requires_grad=False)
            swapped.append((owner, attr, old))
        yield len(swapped)
    finally:
        for owner, attr, old in reversed(swapped):
            owner._parameters[attr] = old


def wrap_lora_loader(networks: Any, make: Callable[[Forward], Forward],
                     name: str = "load_network") -> Callable[[], None] | None:
    """Wrap the Lora extension's ``networks.<name>`` (A1111: ``load_network``; Forge: ``load_lora_state_dict``)
    with ``make(current)``, once; returns the undo, or None (nothing changed) when ``networks`` is None, has no
    ``name`` or is already wrapped (``LOADER_MARK``).

    The undo (idempotent) puts the very same function object back and removes the mark. If another
    extension wrapped ``load_network`` over ours meanwhile, its wrapper stays and ours passes every call through
    to the function it wrapped (:func:`instance_forward.wrap_attribute`); the mark goes either way, so a reloaded
    AnimateDiff wraps afresh.
    """
    if networks is None or not hasattr(networks, name) or getattr(networks, LOADER_MARK, False):
        return None
    unwrap = wrap_attribute(networks, name, make)
    setattr(networks, LOADER_MARK, True)
    done = False

    def undo() -> None:
        nonlocal done
        if not done:
            done = True
            unwrap()
            networks.__dict__.pop(LOADER_MARK, None)

    return undo


__all__ = ["LOADER_MARK", "MOTION", "SPATIAL", "LoraLayer", "MotionLora", "active_motion_loras",
           "applied_motion_loras", "check_fits", "clear_cache", "describe_lora", "load_motion_lora", "lora_kind",
           "motion_loras_for", "parse_motion_lora", "prompt_motion_loras", "prompt_strengths", "read_spatial_lora",
           "spatial_to_kohya", "wrap_lora_loader"]
