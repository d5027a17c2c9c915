"""The motion-module cache: a file changed on disk is read again (its older models dropped), the memory
actions (remove, move to the CPU) and what the memory route reports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from motion_module.files import loading
from tests.fixtures.motion_modules import build_state_dict, write_checkpoint

CHANNELS = (32, 32, 64, 64)
PROBE = "down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight"


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    loading.clear_cache()
    yield
    loading.clear_cache()


def _write(path: Path, seed: int) -> dict[str, torch.Tensor]:
    state = build_state_dict("v2", channels=CHANNELS, seed=seed)
    write_checkpoint(path, state)
    return state


def _probe(module: torch.nn.Module) -> torch.Tensor:
    return module.state_dict()[PROBE]


def test_a_rewritten_file_is_read_again_and_its_old_model_dropped(tmp_path: Path) -> None:
    path = tmp_path / "mm.safetensors"
    first = _write(path, seed=1)
    old = loading.load_motion_module_cached(path)
    assert torch.equal(_probe(old), first[PROBE])
    stat = path.stat()
    second = _write(path, seed=2)  # same shapes, so the same size; other weights
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    new = loading.load_motion_module_cached(path)
    assert new is not old and torch.equal(_probe(new), second[PROBE]) and not torch.equal(second[PROBE], first[PROBE])
    assert [info["file"] for info in loading.cache_info()] == [str(path.resolve())]  # the old version is gone
    assert loading.load_motion_module_cached(path) is new


def test_a_file_replaced_with_the_same_size_and_mtime_is_read_again(tmp_path: Path) -> None:
    """A download moved over the old file, its mtime kept (``mv``, ``rsync -t``): the inode tells."""
    path, incoming = tmp_path / "mm.safetensors", tmp_path / "incoming.safetensors"
    _write(path, seed=1)
    old = loading.load_motion_module_cached(path)
    stat = path.stat()
    second = _write(incoming, seed=3)
    os.utime(incoming, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(incoming, path)
    assert (path.stat().st_mtime_ns, path.stat().st_size) == (stat.st_mtime_ns, stat.st_size)
    new = loading.load_motion_module_cached(path)
    assert new is not old and torch.equal(_probe(new), second[PROBE])


def test_remove_from_memory_drops_every_model(tmp_path: Path) -> None:
    paths = [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    for seed, path in enumerate(paths):
        _write(path, seed)
    first = loading.load_motion_module_cached(paths[0])
    loading.load_motion_module_cached(paths[1], dtype=torch.float16)
    info = loading.cache_info()
    assert [(i["file"], i["device"], i["dtype"], i["weights"]) for i in info] == [
        (str(paths[0].resolve()), "cpu", "float32", "float32"), (str(paths[1].resolve()), "cpu", "float16", "float16")]
    assert info[0]["bytes"] == 2 * info[1]["bytes"]
    assert loading.clear_cache() == 2 and loading.cache_info() == [] and loading.clear_cache() == 0
    assert loading.load_motion_module_cached(paths[0]) is not first


def test_move_to_cpu_rekeys_the_models_and_a_later_run_takes_its_model_back(tmp_path: Path) -> None:
    path = tmp_path / "mm.safetensors"
    _write(path, seed=4)
    module = loading.load_motion_module_cached(path)
    assert loading.offload_cache("cpu") == 0  # already there
    # stand-in for a GPU entry (this machine may have none): the same model keyed under another device
    key = next(iter(loading._CACHE))
    loading._CACHE[(key[0], "cuda:0", *key[2:])] = loading._CACHE.pop(key)
    assert loading.offload_cache("cpu") == 1
    assert [i["device"] for i in loading.cache_info()] == ["cpu"]
    assert loading.load_motion_module_cached(path) is module  # not read again
    moved = loading.load_motion_module_cached(path, device="meta")  # another device: moved, not re-read
    assert moved is module and _probe(module).is_meta and len(loading._CACHE) == 1
