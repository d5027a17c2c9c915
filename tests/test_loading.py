"""Reading files safely, building MotionModules, the cache, hashes and the SD1.5/SDXL fit check."""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from motion_module.core.model import sinusoidal_table
from motion_module.errors import (
    CorruptFileError,
    IncompatibleModelError,
    MotionModuleError,
    NotAMotionModuleError,
    UnsafeFileError,
)
from motion_module.files import loading
from motion_module.files.loading import (
    check_compatible,
    clear_cache,
    file_hash,
    load_motion_module,
    load_motion_module_cached,
    read_state_dict,
    short_hash,
)
from motion_module.files.spec import detect_spec
from tests.fixtures.motion_modules import (
    CASES_BY_NAME,
    FAMILY_CASES,
    build_state_dict,
    case_file,
    malicious_pickle,
    small_channels,
    unrelated_state_dict,
    write_checkpoint,
)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def _assert_model_matches(model, case, channels, dtype):
    spec = model.spec
    assert (spec.family, spec.base, spec.channels) == (case.expected_family, case.base, channels)
    assert (spec.max_frames, spec.mid_block, spec.dtype) == (case.max_frames, case.mid_block, dtype)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    # the weights are exactly the file's tensors, checked against an independent original-layout build
    expected = build_state_dict(case.family, channels=channels, dtype=dtype)
    state = model.state_dict()
    for key, tensor in expected.items():
        assert state[key].dtype == dtype and torch.equal(state[key], tensor), key
    pe_keys = [k for k in state if k.endswith("pos_encoder.pe")]
    assert len(pe_keys) == 2 * spec.module_count
    assert set(state) == set(expected) | set(pe_keys)
    for key in pe_keys:  # stored or computed, every table is the sinusoidal one in the model's dtype
        table = state[key]
        assert table.shape[1] == case.max_frames and table.dtype == dtype
        assert torch.equal(table, sinusoidal_table(case.max_frames, table.shape[2]).to(dtype)), key


@pytest.mark.parametrize("dtype_name", ["fp16", "fp32"])
@pytest.mark.parametrize("case", FAMILY_CASES, ids=lambda c: c.name)
def test_every_family_layout_dtype_loads_from_safetensors(case, dtype_name):
    """fp16 files use the fixtures' default channels, fp32 ones the cheaper small channels."""
    dtype = DTYPES[dtype_name]
    channels = case.channels if dtype_name == "fp16" else small_channels(case)
    model = load_motion_module(case_file(case, dtype=dtype, channels=channels))
    _assert_model_matches(model, case, channels, dtype)


@pytest.mark.parametrize("dtype_name", ["fp16", "fp32"])
@pytest.mark.parametrize("case", FAMILY_CASES, ids=lambda c: c.name)
def test_every_family_layout_dtype_reads_from_ckpt(case, dtype_name):
    """A .ckpt reads to the same tensors as the .safetensors file (building the model is format-independent
    and covered above; a few full .ckpt loads follow)."""
    dtype = DTYPES[dtype_name]
    channels = small_channels(case)
    from_ckpt = read_state_dict(case_file(case, dtype=dtype, fmt="ckpt", channels=channels))
    from_safetensors = read_state_dict(case_file(case, dtype=dtype, channels=channels))
    assert from_ckpt.keys() == from_safetensors.keys()
    assert all(torch.equal(t, from_safetensors[k]) and t.dtype == dtype for k, t in from_ckpt.items())
    spec = detect_spec(from_ckpt)
    assert (spec.family, spec.max_frames, spec.mid_block, spec.dtype) == (
        case.expected_family, case.max_frames, case.mid_block, dtype)


@pytest.mark.parametrize(("name", "dtype_name"), [("lightning_diffusers", "fp32"), ("hotshot_raw", "fp16"),
                                                  ("animatelcm", "fp16")])
def test_ckpt_files_load(name, dtype_name):
    case, dtype = CASES_BY_NAME[name], DTYPES[dtype_name]
    model = load_motion_module(case_file(case, dtype=dtype, fmt="ckpt", channels=small_channels(case)))
    _assert_model_matches(model, case, small_channels(case), dtype)


def test_loaded_module_output_depends_on_its_weights():
    case = CASES_BY_NAME["v2"]
    model = load_motion_module(case_file(case, channels=small_channels(case)))  # (32, 32, 64, 64)
    module = model.down(2, 0)
    x = torch.randn(2 * 8, 64, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = module(x, 8)
        assert (out - x).abs().mean() > 0.05
        module.temporal_transformer.proj_out.bias += 0.5
        assert not torch.allclose(module(x, 8), out)


def test_dtype_and_device_arguments():
    path = case_file(CASES_BY_NAME["animatelcm"], dtype=torch.float16)
    model = load_motion_module(path, dtype=torch.float32, device="cpu")
    assert model.spec.dtype == torch.float32
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in model.state_dict().values())
    assert model.spec.family == "animatelcm" and model.spec.max_frames == 64


def test_wrapped_and_prefixed_checkpoints(tmp_path):
    state = build_state_dict("v1", channels=(32, 32, 32, 32))
    wrapped = write_checkpoint(tmp_path / "wrapped.ckpt", state, "ckpt", wrap=True, prefix="module.")
    assert read_state_dict(wrapped).keys() == state.keys()
    prefixed = write_checkpoint(tmp_path / "prefixed.safetensors", state, prefix="motion_module.")
    assert read_state_dict(prefixed).keys() == state.keys()
    renamed = Path(shutil.copy(wrapped, tmp_path / "renamed.safetensors"))  # a pickle named .safetensors
    assert load_motion_module(renamed).spec.family == "v1"
    meta = read_state_dict(case_file(CASES_BY_NAME["v2"]), meta=True)
    assert all(t.is_meta for t in meta.values()) and detect_spec(meta).family == "v2"


@pytest.mark.parametrize(("legacy", "raw"), [(False, None), (True, None), (False, 2), (False, 4), (False, 5)],
                         ids=["zip", "legacy", "raw-pickle-2", "raw-pickle-4", "raw-pickle-5"])
def test_malicious_pickle_is_refused_without_running(tmp_path, legacy, raw):
    marker = tmp_path / "pwned"
    path = malicious_pickle(tmp_path / "evil.ckpt", marker, legacy=legacy, raw=raw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no library warning on the way (torch warns about pickle protocols)
        with pytest.raises(UnsafeFileError) as info:
            load_motion_module(path)
    assert not marker.exists()
    message = str(info.value)
    assert "evil.ckpt" in message and ".safetensors" in message and "nothing was executed" in message
    assert "refused for safety" in message and "open" in message, message  # names what it would call
    with pytest.raises(UnsafeFileError):
        read_state_dict(path, meta=True)
    assert not marker.exists()


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, type[Exception], str]]:
    good = case_file(CASES_BY_NAME["v3"]).read_bytes()
    good_ckpt = case_file(CASES_BY_NAME["v3"], fmt="ckpt").read_bytes()
    files = {
        "truncated.safetensors": (good[: len(good) // 2], CorruptFileError, "re-download"),
        "truncated.ckpt": (good_ckpt[: len(good_ckpt) // 2], CorruptFileError, "re-download"),
        "empty.safetensors": (b"", CorruptFileError, "re-download"),
        "empty.ckpt": (b"", CorruptFileError, "re-download"),
        "random.safetensors": (os.urandom(4096), CorruptFileError, "re-download"),
        "random.ckpt": (b"\x07" + os.urandom(4096), CorruptFileError, "re-download"),
    }
    out = {}
    for name, (data, error, hint) in files.items():
        (tmp_path / name).write_bytes(data)
        out[name] = (tmp_path / name, error, hint)
    unet = write_checkpoint(tmp_path / "sd_unet.safetensors", unrelated_state_dict())
    out["sd_unet.safetensors"] = (unet, NotAMotionModuleError, "not a motion module")
    return out


def test_bad_files_give_typed_errors_naming_the_file(tmp_path):
    for name, (path, error, hint) in _bad_files(tmp_path).items():
        with pytest.raises(error) as info:
            load_motion_module(path)
        assert str(info.value).startswith(name) and hint in str(info.value), str(info.value)


def test_unknown_extension_and_missing_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    with pytest.raises(MotionModuleError, match=r"model\.gguf.*\.safetensors"):
        load_motion_module(path)
    with pytest.raises(MotionModuleError, match="not found"):
        load_motion_module(tmp_path / "missing.safetensors")
    with pytest.raises(MotionModuleError, match="not found"):
        load_motion_module_cached(tmp_path / "missing.safetensors")


def test_incomplete_lora_and_misshapen_files(tmp_path):
    state = build_state_dict("v2", channels=(32, 32, 32, 32))
    key = "up_blocks.1.motion_modules.2.temporal_transformer.proj_out.weight"
    incomplete = {k: v for k, v in state.items() if k != key}
    with pytest.raises(NotAMotionModuleError, match=r"incomplete\.safetensors.*1 tensors missing"):
        load_motion_module(write_checkpoint(tmp_path / "incomplete.safetensors", incomplete))
    misshapen = dict(state, **{key: torch.zeros(32, 16)})
    with pytest.raises(NotAMotionModuleError, match="wrong shape"):
        load_motion_module(write_checkpoint(tmp_path / "misshapen.safetensors", misshapen))
    lora = {k.replace(".weight", ".lora_down.weight"): v.clone() for k, v in state.items() if "to_q" in k}
    with pytest.raises(NotAMotionModuleError, match="motion LoRA"):
        load_motion_module(write_checkpoint(tmp_path / "lora.safetensors", {**state, **lora}))


def test_cache_is_bounded_lru_and_notices_file_changes(tmp_path):
    clear_cache()
    paths = []
    for i, family in enumerate(["v1", "v3", "sdxl"]):
        small = build_state_dict(family, channels=(32, 32, 32, 32) if family != "sdxl" else (32, 32, 32))
        paths.append(write_checkpoint(tmp_path / f"m{i}.safetensors", small))
    a = load_motion_module_cached(paths[0])
    assert load_motion_module_cached(paths[0]) is a
    assert load_motion_module_cached(str(paths[0])) is a  # key uses the resolved path
    assert load_motion_module_cached(paths[0], dtype=torch.float16) is not a
    b = load_motion_module_cached(paths[1])  # cache: fp16(m0), m1 -> m0 fp32 evicted
    assert len(loading._CACHE) == loading.CACHE_SIZE == 2
    assert load_motion_module_cached(paths[1]) is b
    assert load_motion_module_cached(paths[0]) is not a
    stat = paths[1].stat()
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load_motion_module_cached(paths[1]) is not b
    clear_cache()
    assert not loading._CACHE


def test_hashes(tmp_path):
    path = case_file(CASES_BY_NAME["sdxl"])
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_hash(path) == expected and file_hash(path, chunk_size=1000) == expected
    assert short_hash(path) == expected[:8] and len(short_hash(path)) == 8
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(path.read_bytes()[:-1] + b" ")
    assert file_hash(copy) != expected


def test_check_compatible_messages():
    sd15 = detect_spec(build_state_dict("v2"))
    sdxl = detect_spec(build_state_dict("sdxl"))
    check_compatible(sd15, "sd15", (32, 64, 128, 128))
    check_compatible(sdxl, "sdxl", [32, 64, 128])
    with pytest.raises(IncompatibleModelError) as info:
        check_compatible(sdxl, "sd15", (320, 640, 1280, 1280), name="mm_sdxl.safetensors")
    assert str(info.value) == (
        "mm_sdxl.safetensors is an SDXL motion module but the loaded checkpoint is SD1.5: pick an SD1.5 "
        "motion module (v1/v2/v3/AnimateLCM/Lightning) or load an SDXL checkpoint"
    )
    with pytest.raises(IncompatibleModelError, match="is an SD1.5 motion module but the loaded checkpoint is SDXL"):
        check_compatible(sd15, "sdxl", (320, 640, 1280))
    with pytest.raises(IncompatibleModelError, match="AnimateDiff-SDXL/HotShot-XL"):
        check_compatible(sd15, "sdxl", (320, 640, 1280))
    with pytest.raises(IncompatibleModelError, match=r"32/64/128/128 channels but the loaded checkpoint has 320/"):
        check_compatible(sd15, "sd15", (320, 640, 1280, 1280))
    with pytest.raises(IncompatibleModelError, match="only with SD1.5 and SDXL"):
        check_compatible(sd15, "sd3", (320,))
