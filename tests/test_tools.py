"""`python -m motion_module inspect / convert`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from motion_module.cli.tools import main_convert, main_inspect
from motion_module.files.loading import load_motion_module, read_state_dict
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

REQUIRED = {"file", "family", "base", "channels", "max_frames", "mid_block", "dtype", "params", "beta_schedule",
            "layout"}


def _inspect_json(capsys, *paths: Path) -> tuple[int, list[dict], list[str]]:
    code = main_inspect([*map(str, paths), "--json"])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err.splitlines()


def test_inspect_json_reports_every_case(capsys):
    paths = [case_file(case, channels=small_channels(case)) for case in FAMILY_CASES]
    paths.append(case_file(CASES_BY_NAME["v2"], dtype=torch.float16, fmt="ckpt", channels=(32, 32, 64, 64)))
    code, infos, err = _inspect_json(capsys, *paths)
    assert code == 0 and err == []
    assert len(infos) == len(paths)
    for case, info in zip(FAMILY_CASES, infos):
        assert REQUIRED <= info.keys()
        assert info["file"] == str(case_file(case, channels=small_channels(case)))
        assert (info["family"], info["base"], info["layout"]) == (case.expected_family, case.base, case.layout)
        assert (info["channels"], info["max_frames"]) == (list(small_channels(case)), case.max_frames)
        assert (info["mid_block"], info["dtype"]) == (case.mid_block, "float32")
        assert info["beta_schedule"] == ("scaled_linear" if case.base == "sdxl" else "linear")
        original = build_state_dict(case.family, channels=small_channels(case))
        assert info["params"] == sum(t.numel() for k, t in original.items() if not k.endswith(".pe"))
    assert infos[-1]["dtype"] == "float16" and infos[-1]["family"] == "v2"


def test_inspect_text_and_hash(capsys):
    path = case_file(CASES_BY_NAME["hotshot_raw"], channels=(32, 32, 64))
    assert main_inspect([str(path), "--hash"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{path}: hotshot (sdxl, channels 32/32/64, no mid block, up to 24 frames, float32)")
    assert "hotshot layout" in line and "hash " in line


def _bad_files(tmp_path: Path) -> list[Path]:
    good = case_file(CASES_BY_NAME["v3"], channels=(32, 32, 64, 64)).read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "random.ckpt").write_bytes(b"\x01" + os.urandom(2048))
    return [
        malicious_pickle(tmp_path / "evil.ckpt", tmp_path / "marker"),
        tmp_path / "truncated.safetensors",
        tmp_path / "empty.safetensors",
        tmp_path / "random.ckpt",
        write_checkpoint(tmp_path / "sd_unet.safetensors", unrelated_state_dict()),
        tmp_path / "missing.safetensors",
    ]


def test_inspect_bad_files_one_line_each_and_good_files_still_reported(tmp_path, capsys):
    bad = _bad_files(tmp_path)
    good = case_file(CASES_BY_NAME["v1"], channels=(32, 32, 64, 64))
    code, infos, err = _inspect_json(capsys, bad[0], good, *bad[1:])
    assert code == 2
    assert [info["family"] for info in infos] == ["v1"]
    assert len(err) == len(bad)
    for path, line in zip(bad, err):
        assert line.startswith("error: ") and path.name in line and "Traceback" not in line
    assert "refused for safety" in err[0] and "re-download" in err[1] and "not a motion module" in err[4]
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("case", FAMILY_CASES, ids=lambda c: c.name)
def test_convert_writes_fp16_original_layout_that_inspects_the_same(case, tmp_path, capsys):
    source = case_file(case, fmt="ckpt" if case.name in ("v1", "lightning_diffusers") else "safetensors",
                       channels=small_channels(case))
    target = tmp_path / "out.safetensors"
    assert main_convert([str(source), str(target)]) == 0
    assert "wrote" in capsys.readouterr().out
    _, (before, after), _ = _inspect_json(capsys, source, target)
    assert after["dtype"] == "float16" and after["layout"] == "original"
    ignored = {"file", "dtype", "layout"}
    assert {k: v for k, v in before.items() if k not in ignored} == {
        k: v for k, v in after.items() if k not in ignored}
    written = read_state_dict(target)  # (test_convert_refusals also loads a converted file as a model)
    expected = build_state_dict(case.family, channels=small_channels(case), dtype=torch.float16)
    assert written.keys() == expected.keys()
    assert all(torch.equal(written[k], t) for k, t in expected.items())


def test_convert_refusals(tmp_path, capsys):
    source = case_file(CASES_BY_NAME["v2"], channels=(32, 32, 64, 64))
    target = tmp_path / "out.safetensors"
    target.write_bytes(b"keep me")
    assert main_convert([str(source), str(target)]) == 2
    assert "--force" in capsys.readouterr().err and target.read_bytes() == b"keep me"
    assert main_convert([str(source), str(target), "--force"]) == 0
    assert load_motion_module(target).spec.dtype == torch.float16
    assert main_convert([str(source), str(tmp_path / "out.ckpt")]) == 2
    assert ".safetensors" in capsys.readouterr().err and not (tmp_path / "out.ckpt").exists()
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    assert main_convert([str(empty), str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty.safetensors" in err[0] and not (tmp_path / "x.safetensors").exists()
    assert not list(tmp_path.glob(".*partial"))
    assert main_convert([str(source)]) == 2  # usage error from argparse, no traceback
    assert "usage" in capsys.readouterr().err


def test_module_entry_point(tmp_path, capsys):
    """`python -m motion_module inspect ...` goes through __main__.main (the subprocess start-up is covered by
    test_boundary; here the dispatch, exit status and stderr format)."""
    from motion_module.__main__ import main

    good = case_file(CASES_BY_NAME["sdxl"], channels=(32, 32, 64))
    evil = malicious_pickle(tmp_path / "evil.ckpt", tmp_path / "marker")
    assert main(["inspect", str(evil), str(good)]) == 2
    out, err = capsys.readouterr()
    assert out.startswith(f"{good}: sdxl (sdxl, channels 32/32/64")
    assert err.count("\n") == 1 and "evil.ckpt" in err and "Traceback" not in err
    assert not (tmp_path / "marker").exists()
