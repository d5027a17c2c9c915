"""Reading motion-module files safely, building a ready ``MotionModule``, a bounded cache, hashes, fit checks.

* ``.safetensors`` is read with safetensors; ``.ckpt/.pt/.pth/.bin`` with ``torch.load(weights_only=True)``,
  which refuses (without running anything) a pickle that would call code or build non-tensor objects.
  The reader follows the file's content, not its extension, so a renamed file still loads safely.
* Every failure is a typed ``MotionModuleError`` whose message starts with the file name and says what to do.
* ``load_motion_module`` converts the layout (``convert.to_original_layout``), detects the spec, checks every
  tensor name and shape against the model, and loads the file's tensors into the model without copying them
  (a positional table the file does not store is computed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import pickle
import pickletools
import textwrap
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from motion_module.core.model import MotionModule, PositionalEncoding, sinusoidal_table
from motion_module.core.weights import parameter_bytes, use_cast_linears, weight_storage
from motion_module.errors import (
    CorruptFileError,
    IncompatibleModelError,
    MotionModuleError,
    NotAMotionModuleError,
    OutputError,
    UnsafeFileError,
)
from motion_module.files.convert import strip_wrapper_prefixes, to_original_layout
from motion_module.files.spec import MotionModuleSpec, detect_spec

SAFETENSORS_EXTENSIONS = (".safetensors",)
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin", ".pkl")  # .pkl: RIFE's official flownet.pkl
CACHE_SIZE = 2
_REDOWNLOAD = "re-download it (the download may have been cut off)"
_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        _ST_DTYPES[_name] = getattr(torch, _attr)


# ----------------------------------------------------------------------------------------------- reading
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip format


def _sniff(path: Path) -> str:
    """``"safetensors"``, ``"pickle"`` (zip or legacy torch.save), ``"empty"`` or ``"unknown"`` from the first bytes."""
    with path.open("rb") as handle:
        head = handle.read(9)
    if not head:
        return "empty"
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    if head.startswith(_ZIP_MAGIC) or head[:1] == b"\x80":
        return "pickle"
    return "unknown"


def _read_safetensors(path: Path, meta: bool) -> dict[str, Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            if not meta:
                return {key: handle.get_tensor(key) for key in handle.keys()}
            out = {}
            for key in handle.keys():
                part = handle.get_slice(key)
                dtype = _ST_DTYPES.get(part.get_dtype(), torch.uint8)
                out[key] = torch.empty(part.get_shape(), dtype=dtype, device="meta")
            return out
    except Exception as exc:  # safetensors raises its own SafetensorError, plus OSError/ValueError
        raise CorruptFileError(
            f"{path.name}: cannot be read as safetensors ({_one_line(exc)}); the file is empty, truncated "
            f"or damaged: {_REDOWNLOAD}"
        ) from None


# what torch.save's own pickles import; anything else in a raw pickle is reported as what it would run
_TENSOR_GLOBALS = ("torch.", "collections.OrderedDict", "_codecs.encode", "numpy.core.multiarray._reconstruct",
                   "numpy.dtype", "numpy.ndarray")


def pickle_globals(path: Path, max_pickles: int = 8) -> list[str]:
    """The ``module.name`` of every global the pickles at the start of ``path`` would import when loaded, read
    with ``pickletools`` (opcodes only: nothing is imported or executed). A legacy torch.save file is several
    pickles in a row; reading stops at the first byte that is not a pickle."""
    found: list[str] = []
    with path.open("rb") as handle:
        for _ in range(max_pickles):
            strings: list[str] = []
            try:
                for op, arg, _pos in pickletools.genops(handle):
                    if op.name == "GLOBAL" or op.name == "INST":
                        found.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL":
                        found.append(".".join(strings[-2:]) if len(strings) >= 2 else "(a global pushed by memo)")
                    elif isinstance(arg, str):
                        strings.append(arg)
            except Exception:  # noqa: BLE001 - not (or no longer) a pickle: what was read so far is the answer
                break
    return found


def _unsafe_globals(path: Path) -> list[str]:
    return [name for name in pickle_globals(path) if not name.startswith(_TENSOR_GLOBALS)]


def _refused(path: Path, detail: str) -> UnsafeFileError:
    return UnsafeFileError(
        f"{path.name}: refused for safety: this pickle would run code or create non-tensor objects when "
        f"opened ({_one_line(detail)}); nothing was executed and the file was not loaded. Use the "
        ".safetensors version of this model, from its official download page")


def _read_pickle(path: Path, meta: bool) -> object:
    # torch's own loader, also where WebUI has replaced ``torch.load`` with its pickle checker (modules/safe.py),
    # which refuses files newer torch writes (``.format_version``); weights_only is the stricter check anyway
    load = torch.serialization.load
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on the terminal; our error says it
            warnings.simplefilter("ignore")
            if meta and _is_zip(path) and path.suffix.lower() != ".safetensors":
                return load(str(path), map_location="cpu", weights_only=True, mmap=True)  # reads no data
            with path.open("rb") as handle:  # a handle: newer torch treats a *.safetensors *name* as safetensors
                return load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "unsupported global" in text.lower() or "unsupported class" in text.lower():
            raise _refused(path, text.split("WeightsUnpickler error:", 1)[-1].strip().split(" was not", 1)[0]) \
                from None
        if not _is_zip(path) and (unsafe := _unsafe_globals(path)):  # a raw pickle.dump: torch stops earlier
            raise _refused(path, f"it imports {', '.join(dict.fromkeys(unsafe))}") from None
        raise CorruptFileError(f"{path.name}: not a PyTorch checkpoint this loader can read safely (a plain pickle "
                               f"or a damaged file; torch: {_shorten(text.split('error:')[-1], 80)}); "
                               f"{_REDOWNLOAD}, or use the .safetensors version") from None
    except (RuntimeError, EOFError, ValueError, TypeError, OSError, MemoryError, ArithmeticError, LookupError,
            AttributeError) as exc:
        raise CorruptFileError(
            f"{path.name}: the checkpoint is empty, truncated or damaged ({_shorten(exc)}); {_REDOWNLOAD}"
        ) from None


def write_safetensors(target: Path, tensors: Mapping[str, Tensor], metadata: dict[str, str]) -> None:
    """Write ``tensors`` to ``target`` through a hidden ``.partial`` file renamed over it, so a failure never leaves
    half a file; OutputError naming ``target`` when it cannot be written."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    temporary = target.with_name(f".{target.name}.partial")
    try:
        save_file(dict(tensors), str(temporary), metadata=metadata)
        os.replace(temporary, target)
    except (OSError, SafetensorError) as exc:
        reason = getattr(exc, "strerror", None) or _one_line(exc)
        raise OutputError(f"cannot write {target}: {reason}; check that its folder exists and is writable and "
                          "that there is free disk space") from None
    finally:
        temporary.unlink(missing_ok=True)


def _is_zip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == _ZIP_MAGIC


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def _shorten(value: object, width: int = 160) -> str:
    """One line of at most ``width`` characters, cut between words (never inside one)."""
    return textwrap.shorten(_one_line(value), width, placeholder=" ...") or _one_line(value)[:width]


def read_state_dict(path: str | os.PathLike[str], *, meta: bool = False) -> dict[str, Tensor]:
    """All tensors of a motion-module file as ``{name: tensor}`` on the CPU, in the file's own layout and dtype.

    A top-level ``"state_dict"`` entry is unwrapped, non-tensor entries (``global_step``) are dropped, and
    ``module.`` / ``motion_module.`` prefixes are removed. ``meta=True`` returns shape/dtype-only tensors on
    the meta device (reads only the header of a safetensors file; used by ``inspect``).
    Raises MotionModuleError (missing file, unknown extension), CorruptFileError, UnsafeFileError,
    NotAMotionModuleError (no tensors).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        raise MotionModuleError(f"{path} is a folder, not a file; give the path of a motion-module file")
    if suffix not in SAFETENSORS_EXTENSIONS + PICKLE_EXTENSIONS:
        raise MotionModuleError(
            f"{path.name}: unknown file type '{suffix or '(none)'}'; motion modules are .safetensors "
            "(preferred) or .ckpt/.pt/.pth files"
        )
    if not path.is_file():
        raise MotionModuleError(f"{path}: file not found; put the motion module in the model folder or fix the path")
    kind = _sniff(path)
    if kind == "empty":
        raise CorruptFileError(f"{path.name}: the file is empty (0 bytes); {_REDOWNLOAD}")
    if kind == "pickle":
        loaded = _read_pickle(path, meta)
    elif kind == "safetensors" or suffix in SAFETENSORS_EXTENSIONS:
        loaded = _read_safetensors(path, meta)
    else:
        raise CorruptFileError(f"{path.name}: neither a safetensors file nor a PyTorch checkpoint; {_REDOWNLOAD}")
    return _tensors_of(path, loaded, meta)


def _tensors_of(path: Path, loaded: object, meta: bool) -> dict[str, Tensor]:
    for wrapper in ("state_dict", "controlnet"):  # "controlnet": the official SparseCtrl files
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
    if not isinstance(loaded, Mapping):
        raise NotAMotionModuleError(
            f"{path.name}: holds a {type(loaded).__name__}, not a dictionary of tensors; use a motion-module file"
        )
    tensors = {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, Tensor)}
    if not tensors:
        raise NotAMotionModuleError(f"{path.name}: holds no tensors; this is not a motion module")
    if meta:
        tensors = {k: v.to("meta") for k, v in tensors.items()}
    return dict(strip_wrapper_prefixes(tensors))


@contextlib.contextmanager
def named_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Prefix the file name to a MotionModuleError raised inside (same type), unless it already starts with it."""
    name = Path(path).name
    try:
        yield
    except MotionModuleError as exc:
        if str(exc).startswith(name):
            raise
        raise type(exc)(f"{name}: {exc}") from None


# ---------------------------------------------------------------------------------------------- building
@functools.lru_cache(maxsize=16)
def _expected_shapes(channels: tuple[int, ...], max_frames: int, mid_block: bool) -> dict[str, tuple[int, ...]]:
    spec = MotionModuleSpec("v2", "sd15", channels, max_frames, mid_block)  # family/base do not change shapes
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in MotionModule(spec).state_dict().items()}


def check_state_dict(spec: MotionModuleSpec, state_dict: Mapping[str, Tensor]) -> None:
    """Raise NotAMotionModuleError unless ``state_dict`` (original layout) has exactly the model's tensors
    with the model's shapes; positional tables may be absent."""
    if any("lora" in key.lower() for key in state_dict):
        raise NotAMotionModuleError(
            "this is a motion LoRA, not a motion module: select a motion module here, put the LoRA in WebUI's "
            "models/Lora folder and write <lora:FILE_NAME:0.8> in the prompt"
        )
    expected = _expected_shapes(spec.channels, spec.max_frames, spec.mid_block)
    missing = [k for k in expected if k not in state_dict and not k.endswith(".pos_encoder.pe")]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} with the wrong shape (e.g. {k}: {tuple(state_dict[k].shape)}, "
                        f"expected {expected[k]})")
    if problems:
        raise NotAMotionModuleError(
            f"does not match a {spec.describe()} motion module: {'; '.join(problems)}. The file is damaged or an "
            "unsupported variant (SparseCtrl, PIA, I2V...): re-download it or use a supported motion module"
        )


def build_motion_module(
    spec: MotionModuleSpec,
    state_dict: Mapping[str, Tensor],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    weights: torch.dtype | None = None,
) -> MotionModule:
    """A ``MotionModule`` holding ``state_dict``'s tensors (original layout; moved/cast only when needed).

    Built on the meta device and filled with ``load_state_dict(assign=True)``, so no random initialisation
    runs and no second copy of the weights is made. Missing ``pe`` buffers get the sinusoidal table
    ``(1, spec.max_frames, C)``. The result is in eval mode, with ``requires_grad`` off and
    ``.spec.dtype`` the compute dtype. ``weights``: None, or ``weights.FP8`` to store every Linear weight in
    float8_e4m3fn (cast to the input's dtype when it runs; see ``motion_module.weights``).
    """
    check_state_dict(spec, state_dict)
    target = dtype or spec.dtype
    with torch.device("meta"):
        model = MotionModule(spec)
    stored = use_cast_linears(model, weights) if weights is not None else {}
    tensors = {
        k: v.to(device=device, dtype=stored.get(k, target)) if v.is_floating_point() else v.to(device=device)
        for k, v in state_dict.items()
    }
    model.load_state_dict(tensors, strict=False, assign=True)
    for module in model.modules():  # tables the file does not store
        if isinstance(module, PositionalEncoding) and module.pe.is_meta:
            _, length, dim = module.pe.shape
            module.pe = sinusoidal_table(length, dim)
        if isinstance(module, PositionalEncoding):
            module.pe = module.pe.to(device=device, dtype=target)
    model.spec = dataclasses.replace(spec, dtype=target)
    model.eval()
    model.requires_grad_(False)
    return model


def load_motion_module(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
    weights: torch.dtype | None = None,
) -> MotionModule:
    """Read, convert, detect and build: the ready ``MotionModule`` of a file (``model.spec`` describes it).

    ``dtype=None`` keeps the file's dtype; ``weights`` (e.g. ``weights.FP8``): how Linear weights are stored
    (see :func:`build_motion_module`). Every error is a MotionModuleError naming the file.
    """
    state_dict = read_state_dict(path)
    with named_errors(path):
        original = to_original_layout(state_dict)
        spec = detect_spec(state_dict)  # the file's own layout: what detection assumed depends on it
        return build_motion_module(spec, original, device=device, dtype=dtype, weights=weights)


# ------------------------------------------------------------------------------------------------- cache
FileKey = tuple[str, int, int, int, int]  # resolved path, mtime (ns), size, inode, ctime (ns)
_CACHE: OrderedDict[tuple[FileKey, str, torch.dtype | None, torch.dtype | None], MotionModule] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def file_version(path: str | os.PathLike[str]) -> FileKey:
    """What identifies one version of a file for the caches (a rewrite or a replacement changes it); OSError
    when it cannot be read."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return str(resolved), stat.st_mtime_ns, stat.st_size, stat.st_ino, stat.st_ctime_ns


def _file_key(path: str | os.PathLike[str]) -> FileKey:
    try:
        return file_version(path)
    except OSError:
        raise MotionModuleError(f"{path}: file not found; put the motion module in the model folder") from None


def load_for_unet(path: str | os.PathLike[str], base: str, channels: Sequence[int], *, name: str | None = None,
                  device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                  weights: torch.dtype | None = None, cached: bool = True) -> MotionModule:
    """The module of ``path`` for a UNet of ``base``/``channels`` (see :func:`check_compatible`), checked from
    the file's header before any weight is read; through the cache, or (``cached`` False) read afresh and
    the cache emptied, so that nothing stays in memory after the caller drops it. ``weights``: Linear
    weights' storage (None, or ``weights.FP8``)."""
    check_compatible(detect_spec(read_state_dict(path, meta=True)), base, channels, name=name)
    if cached:
        return load_motion_module_cached(path, device=device, dtype=dtype, weights=weights)
    clear_cache()
    return load_motion_module(path, device=device, dtype=dtype, weights=weights)


def load_motion_module_cached(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
    weights: torch.dtype | None = None,
) -> MotionModule:
    """``load_motion_module`` through an LRU cache of ``CACHE_SIZE`` models keyed by the file (resolved path,
    mtime, size, inode, ctime), device, dtype and weight storage. A changed file is re-read and the models of
    its older versions dropped; FP8 and full-precision modules of one file are separate entries, so one is
    never handed out for the other; a model :func:`offload_cache` moved to the CPU is moved back rather than
    re-read. The same object is returned to every caller of one key."""
    file, where = _file_key(path), str(torch.device(device))
    key = (file, where, dtype, weights)
    with _CACHE_LOCK:
        for old in [k for k in _CACHE if k[0][0] == file[0] and k[0] != file]:
            del _CACHE[old]  # an older version of this file
        if key not in _CACHE:
            moved = next((k for k in _CACHE if k[0] == file and k[2:] == key[2:]), None)  # on another device
            _CACHE[key] = _CACHE.pop(moved).to(where) if moved else \
                load_motion_module(path, device=device, dtype=dtype, weights=weights)
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        return _CACHE[key]


def clear_cache() -> int:
    """Forget every cached model (and cached file hash); returns how many models were dropped. The memory is
    freed once no one else holds them (the caller may then empty the accelerator's allocator cache)."""
    with _CACHE_LOCK:
        count = len(_CACHE)
        _CACHE.clear()
        _HASHES.clear()
        return count


def offload_cache(device: str | torch.device = "cpu") -> int:
    """Move every cached model to ``device`` (frees accelerator memory, keeps the models for the next run,
    which moves its model back); returns how many models were moved."""
    where = str(torch.device(device))
    with _CACHE_LOCK:
        moved = [k for k in _CACHE if k[1] != where]
        for key in moved:
            model = _CACHE.pop(key).to(where)
            _CACHE.setdefault((key[0], where, *key[2:]), model)
        return len(moved)


def cache_info() -> list[dict[str, object]]:
    """What the cache holds, oldest first: per model its file, device, compute dtype, Linear weights' storage
    dtype and the bytes of its parameters and buffers (for the memory route and tests)."""
    with _CACHE_LOCK:
        items = list(_CACHE.items())
    return [{"file": key[0][0], "device": key[1], "dtype": str(model.spec.dtype).replace("torch.", ""),
             "weights": str(weight_storage(model)).replace("torch.", ""), "bytes": parameter_bytes(model)}
            for key, model in items]


# ------------------------------------------------------------------------------------------------ hashes
_HASHES: dict[FileKey, str] = {}


def file_hash(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of the file as 64 lowercase hex digits; remembered per file version (see ``_file_key``)."""
    key = _file_key(path)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(key[0], "rb") as handle:
            while chunk := handle.read(chunk_size):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def short_hash(path: str | os.PathLike[str]) -> str:
    """The first 8 hex digits of ``file_hash``: what the reference extension writes as ``mm_hash``."""
    return file_hash(path)[:8]


# ------------------------------------------------------------------------------------------ compatibility
BASE_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL"}
BASE_FAMILIES = {"sd15": "v1/v2/v3/AnimateLCM/Lightning", "sdxl": "AnimateDiff-SDXL/HotShot-XL"}


def check_compatible(
    spec: MotionModuleSpec, base: str, channels: Sequence[int], *, name: str | None = None
) -> None:
    """Raise IncompatibleModelError unless the module fits a UNet of ``base`` ("sd15"/"sdxl", any case, dots
    ignored) whose levels
    have ``channels`` (e.g. ``(320, 640, 1280, 1280)``). ``name`` (the file name) makes the message clearer."""
    label = name or f"this {spec.family} motion module"
    mm_base = BASE_NAMES.get(spec.base, spec.base)
    base = base.lower().replace(".", "").replace("-", "").replace("_", "")  # "SD1.5" -> "sd15"
    if base not in BASE_NAMES:
        raise IncompatibleModelError(
            f"the loaded checkpoint is {base}, but AnimateDiff motion modules work only with SD1.5 and SDXL "
            f"checkpoints: load an {mm_base} checkpoint to use {label}"
        )
    if spec.base != base:
        raise IncompatibleModelError(
            f"{label} is an {mm_base} motion module but the loaded checkpoint is {BASE_NAMES[base]}: pick an "
            f"{BASE_NAMES[base]} motion module ({BASE_FAMILIES[base]}) or load an {mm_base} checkpoint"
        )
    if tuple(channels) != tuple(spec.channels):
        have = "/".join(map(str, channels))
        want = "/".join(map(str, spec.channels))
        raise IncompatibleModelError(
            f"{label} expects UNet levels with {want} channels but the loaded checkpoint has {have}: the "
            f"checkpoint is not a standard {BASE_NAMES[base]} UNet; load a standard {BASE_NAMES[base]} checkpoint "
            "or a motion module made for this one"
        )
