"""Prompt-travel parsing and conditioning interpolation (motion_module.prompts)."""

from __future__ import annotations

import math

import pytest
import torch

from motion_module.core.prompts import (
    frame_prompts,
    interpolate_conds,
    join_prompt,
    parse_prompt_travel,
    slerp,
    stack_conds,
)
from motion_module.errors import ParameterError


def test_parse_tolerates_spacing_and_sorts():
    text = "masterpiece, best quality,\n\n 8 :  running\n0:standing\n  4: walking  \nby the sea"
    travel = parse_prompt_travel(text, 12)
    assert travel is not None
    assert list(travel.keyframes) == [0, 4, 8]
    assert travel.keyframes == {0: "standing", 4: "walking", 8: "running"}
    assert travel.head == "masterpiece, best quality"
    assert travel.tail == "by the sea"
    prompts = frame_prompts(travel)
    assert len(prompts) == 12
    assert prompts[0] == "masterpiece, best quality, standing, by the sea"
    assert prompts[3] == prompts[0]
    assert prompts[4] == "masterpiece, best quality, walking, by the sea"
    assert prompts[11] == "masterpiece, best quality, running, by the sea"


def test_no_stray_commas_and_frames_before_first_key():
    travel = parse_prompt_travel("5: a cat\n9: a dog", 10)
    assert frame_prompts(travel) == ["a cat"] * 9 + ["a dog"]
    assert join_prompt("", "x,", "") == "x"
    only_tail = parse_prompt_travel("0: a cat\nsunset, ", 2)
    assert frame_prompts(only_tail) == ["a cat, sunset"] * 2


def test_plain_prompt_is_not_travel():
    assert parse_prompt_travel("a cat, 1girl: smiling\n(masterpiece:1.2)", 16) is None
    assert parse_prompt_travel("", 16) is None


def test_negative_frame_counts_from_the_end():
    travel = parse_prompt_travel("0: a\n-1: b", 16)
    assert travel.keyframes == {0: "a", 15: "b"}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("0: a\n16: b", "line 2 ('16: b')"),
        ("head\n0: a\n\n3 : b\n 3: c", "line 5 ('3: c')"),
        ("0: a\n-16: b", "line 2"),
        ("0: a\ntail\n4: b", "line 3 ('4: b')"),
    ],
)
def test_errors_name_the_line(text, fragment):
    with pytest.raises(ParameterError) as info:
        parse_prompt_travel(text, 16)
    assert info.value.field == "prompt"
    assert fragment in str(info.value)


def test_duplicate_message_points_at_the_first_line():
    with pytest.raises(ParameterError, match="already has a prompt on line 1"):
        parse_prompt_travel("2: a\n2: b", 8)


# --------------------------------------------------------------------------- interpolation
def _pair(seed: int = 0, tokens: int = 77, dim: int = 16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tokens, dim, generator=g), torch.randn(tokens, dim, generator=g)


def test_endpoints_equal_keys_and_holds():
    a, b = _pair()
    conds = interpolate_conds({2: a, 6: b}, 10)
    assert len(conds) == 10
    assert torch.equal(conds[2], a) and torch.equal(conds[6], b)
    assert torch.equal(conds[0], a) and torch.equal(conds[1], a)
    assert all(torch.equal(conds[f], b) for f in (7, 8, 9))


def test_slerp_matches_formula_and_differs_from_lerp():
    a, b = _pair(1)
    conds = interpolate_conds({0: a, 4: b}, 5)
    lerped = interpolate_conds({0: a, 4: b}, 5, method="lerp")
    va, vb = a.flatten().double(), b.flatten().double()
    theta = math.acos(float(va @ vb / (va.norm() * vb.norm())))
    t = 0.25
    expected = (math.sin((1 - t) * theta) * a.double() + math.sin(t * theta) * b.double()) / math.sin(theta)
    assert torch.allclose(conds[1].double(), expected, atol=1e-5)
    assert torch.allclose(lerped[1], torch.lerp(a, b, 0.25), atol=1e-6)
    assert not torch.allclose(conds[2], lerped[2], atol=1e-3)


def test_slerp_falls_back_to_lerp_when_parallel():
    a = torch.randn(77, 8)
    b = a * 2.0
    assert torch.allclose(slerp(a, b, 0.5), a * 1.5, atol=1e-6)


def test_cyclic_wraps_last_key_back_to_first():
    a, b = _pair(2)
    plain = interpolate_conds({4: a, 12: b}, 16, method="lerp")
    cyclic = interpolate_conds({4: a, 12: b}, 16, cyclic=True, method="lerp")
    assert torch.equal(plain[14], b) and torch.equal(plain[1], a)
    # gap 12 -> 4 (+16) is 8 frames: frame 14 is 2/8 of the way, frame 1 is 5/8.
    assert torch.allclose(cyclic[14], torch.lerp(b, a, 2 / 8), atol=1e-6)
    assert torch.allclose(cyclic[1], torch.lerp(b, a, 5 / 8), atol=1e-6)
    assert torch.allclose(cyclic[8], plain[8])


def test_sdxl_dicts_interpolate_per_entry():
    a, b = _pair(3, dim=32)
    va, vb = torch.randn(24), torch.randn(24)
    conds = interpolate_conds({0: {"crossattn": a, "vector": va}, 2: {"crossattn": b, "vector": vb}}, 3)
    assert set(conds[1]) == {"crossattn", "vector"}
    assert torch.allclose(conds[1]["crossattn"], slerp(a, b, 0.5))
    assert torch.allclose(conds[1]["vector"], slerp(va, vb, 0.5))
    stacked = stack_conds(conds)
    assert stacked["crossattn"].shape == (3, 77, 32) and stacked["vector"].shape == (3, 24)


def test_different_token_lengths_are_padded():
    short, _ = _pair(4)
    long = torch.randn(154, 16)
    empty = torch.randn(77, 16)
    padded = interpolate_conds({0: short, 2: long}, 3, empty_chunk=empty, method="lerp")
    assert padded[0].shape == (154, 16)
    assert torch.equal(padded[0][77:], empty)
    assert torch.allclose(padded[1], torch.lerp(torch.cat([short, empty]), long, 0.5))
    repeated = interpolate_conds({0: short, 2: long}, 3)
    assert torch.equal(repeated[0], torch.cat([short, short]))
    sdxl = interpolate_conds(
        {0: {"crossattn": short, "vector": torch.ones(4)}, 1: {"crossattn": long, "vector": torch.ones(4)}},
        2, empty_chunk={"crossattn": empty},
    )
    assert torch.equal(sdxl[0]["crossattn"][77:], empty)
    assert stack_conds(padded).shape == (3, 154, 16)


def test_interpolation_errors():
    a, b = _pair()
    with pytest.raises(ParameterError, match="prompt_interpolation"):
        interpolate_conds({0: a}, 4, method="cubic")
    with pytest.raises(ParameterError, match="outside"):
        interpolate_conds({0: a, 4: b}, 4)
    with pytest.raises(ParameterError, match="pad"):
        interpolate_conds({0: a, 1: torch.randn(100, 16)}, 2)


def test_half_precision_conds_keep_their_dtype():
    a, b = _pair(5)
    conds = interpolate_conds({0: a.half(), 3: b.half()}, 4)
    assert conds[1].dtype == torch.float16
    assert torch.allclose(conds[1].float(), slerp(a, b, 1 / 3), atol=1e-2)
