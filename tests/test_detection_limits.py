"""Where tensor shapes alone cannot tell two families apart, and what the engine then assumes and says.

- A diffusers ``MotionAdapter`` of V1 saved with ``motion_max_seq_length=32`` has exactly V3's tensors: it is
  taken as V3, the spec says so (``assumption``, shown in the run's notes and by ``inspect``), the infotext
  records the family used, and ``convert --family v1`` re-labels the file (24-frame tables) so it loads as V1.
- AnimateDiff-Lightning has exactly V2's tensors (and betas); its one difference, trailing timestep spacing,
  is a sampler choice: a few-step run of a V2-shaped module gets the recipe hint, saying what was assumed.
"""

from __future__ import annotations

import pytest

from motion_module.cli.tools import main_convert, main_inspect
from motion_module.core.run import lightning_hint, prepare_request
from motion_module.errors import NotAMotionModuleError
from motion_module.files.spec import detect_spec, with_family
from motion_module.params.request import AnimateDiffParams
from tests.fixtures.motion_modules import SD15_CHANNELS, build_state_dict, write_checkpoint


def test_a_diffusers_v3_shaped_adapter_says_what_was_assumed() -> None:
    spec = detect_spec(build_state_dict("v3", layout="diffusers"))
    assert spec.family == "v3" and spec.assumption is not None
    assert "V1 saved by diffusers with max_seq_length 32" in spec.assumption and "--family v1" in spec.assumption
    assert detect_spec(build_state_dict("v3")).assumption is None  # original layout: V1 files hold 24 frames
    assert detect_spec(build_state_dict("v1")).assumption is None
    assert detect_spec(build_state_dict("lightning", layout="diffusers")).assumption is None
    assert detect_spec(build_state_dict("sdxl", layout="diffusers")).assumption is None


def test_with_family_relabels_shape_identical_files_only() -> None:
    v1 = detect_spec(with_family(build_state_dict("v3", layout="diffusers"), "v1"))
    assert (v1.family, v1.max_frames, v1.cross_frame_groupnorm, v1.assumption) == ("v1", 24, True, None)
    with pytest.raises(NotAMotionModuleError, match="cannot be re-labelled as v1"):
        with_family(build_state_dict("v2"), "v1")
    assert detect_spec(with_family(build_state_dict("v3"), "v3")).family == "v3"


def test_convert_family_v1_and_inspect(tmp_path, capsys) -> None:
    source = write_checkpoint(tmp_path / "adapter.safetensors", build_state_dict("v3", layout="diffusers"))
    assert main_inspect([str(source)]) == 0
    assert "assumed V3" in capsys.readouterr().out
    target = tmp_path / "v1.safetensors"
    assert main_convert([str(source), str(target), "--family", "v1"]) == 0
    assert "v1 (sd15" in capsys.readouterr().out
    assert main_convert([str(source), str(tmp_path / "x.safetensors"), "--family", "v2"]) == 2  # argparse choice


def test_lightning_hint_only_for_v2_shaped_modules() -> None:
    note = lightning_hint(4, "Euler a", "Automatic", 7.0, "v2")
    assert note is not None and "assumed AnimateDiff-Lightning" in note and "trailing" in note
    for family in ("animatelcm", "v3", "v1", "sdxl", "hotshot"):
        assert lightning_hint(4, "LCM", "Automatic", 1.5, family) is None, family


def _prepare(root, name: str, steps: int):
    return prepare_request(AnimateDiffParams(model=name, video_length=8), model_root=root, base="sd15",
                           channels=SD15_CHANNELS, prompt="a cat", n_iter=1, img2img=False, steps=steps,
                           sampler="Euler a", scheduler="Automatic", cfg_scale=7.0)


def test_run_notes_and_infotext_say_what_was_assumed(tmp_path) -> None:
    write_checkpoint(tmp_path / "adapter.safetensors", build_state_dict("v3", layout="diffusers"))
    write_checkpoint(tmp_path / "lightning.safetensors", build_state_dict("lightning", layout="diffusers"))
    ready = _prepare(tmp_path, "adapter.safetensors", 4)
    assert len(ready.notes) == 1 and "assumed V3" in ready.notes[0]  # no Lightning hint for a V3-shaped module
    assert "family: v3" in ready.infotext
    hinted = _prepare(tmp_path, "lightning.safetensors", 4)
    assert len(hinted.notes) == 1 and "assumed AnimateDiff-Lightning" in hinted.notes[0]
    assert "family: v2" in hinted.infotext
    assert _prepare(tmp_path, "lightning.safetensors", 20).notes == ()
