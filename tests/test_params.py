"""AnimateDiffParams: defaults, aliases, coercion, errors, every input form, derived values."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from motion_module.errors import ParameterError
from motion_module.params.fields import FIELD_NAMES, FIELDS, IGNORED_KEYS, fields_markdown
from motion_module.params.request import (
    AnimateDiffParams,
    BetaSchedule,
    ClosedLoop,
    FreeInitFilter,
    Fusion,
    OutputFormat,
    PromptInterpolation,
    from_api,
    from_positional,
    from_script_args,
)

DEFAULTS = AnimateDiffParams()


def tiny_png(color: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    image = Image.new("RGB", (3, 2), color)
    image.putpixel((1, 1), (0, 255, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def error_for(value: dict) -> ParameterError:
    with pytest.raises(ParameterError) as info:
        from_api(value)
    return info.value


# ----- the table and the defaults ----------------------------------------------------------

def test_dataclass_fields_follow_the_table_in_order() -> None:
    assert tuple(f.name for f in dataclasses.fields(AnimateDiffParams)) == FIELD_NAMES
    for spec in FIELDS:
        assert getattr(DEFAULTS, spec.name) == spec.coerce(spec.default), spec.name
        assert spec.label and spec.help, spec.name


def test_defaults() -> None:
    p = DEFAULTS
    assert (p.enable, p.model, p.formats) == (False, "", (OutputFormat.GIF, OutputFormat.PNG))
    assert (p.video_length, p.fps, p.loop_number) == (0, 8.0, 0)
    assert (p.context, p.stride, p.overlap) == (16, 1, -1)
    assert (p.closed_loop, p.fusion, p.schedule) == ("R-P", "pyramid", "auto")
    assert p.prompt_interpolation is PromptInterpolation.SLERP
    assert (p.freeinit_enable, p.freeinit_filter) == (False, FreeInitFilter.BUTTERWORTH)
    assert (p.freeinit_ds, p.freeinit_dt, p.freeinit_iters) == (0.25, 0.25, 3)
    assert (p.latent_power, p.latent_scale, p.latent_power_last, p.latent_scale_last) == (
        1.0, 32.0, 1.0, 32.0)
    assert (p.last_frame, p.video_source, p.video_path, p.mask_path) == (None,) * 4
    assert (p.interp, p.interp_x, p.request_id) == ("Off", 10, None)
    assert p.frames == 16 and p.resolved_overlap == 4
    assert from_api({}) == p and from_api(None) == p


def test_params_are_frozen_and_hashable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULTS.fps = 12.0  # type: ignore[misc]
    p = AnimateDiffParams(last_frame=Image.open(io.BytesIO(tiny_png())))
    assert hash(p) == hash(dataclasses.replace(p, last_frame=None))


def test_markdown_table_lists_every_field() -> None:
    table = fields_markdown()
    assert len(table.splitlines()) == len(FIELDS) + 2
    for spec in FIELDS:
        assert f"`{spec.name}`" in table
        for alias in spec.aliases:
            assert f"`{alias}`" in table


# ----- aliases and coercion ----------------------------------------------------------------

ALIASES = [("format", "formats", ["MP4"], (OutputFormat.MP4,)),
           ("frames", "video_length", 24, 24),
           ("batch_size", "context", 8, 8),
           ("context_length", "context", 12, 12)]


@pytest.mark.parametrize(("alias", "name", "raw", "expected"), ALIASES)
def test_every_alias(alias: str, name: str, raw: object, expected: object) -> None:
    assert {a for s in FIELDS for a in s.aliases} == {a[0] for a in ALIASES}
    assert getattr(from_api({alias: raw}), name) == expected
    assert getattr(DEFAULTS.replace_field(alias, raw), name) == expected
    assert getattr(from_api({alias.upper(): raw}), name) == expected  # keys: any case


def test_alias_and_name_together_must_agree() -> None:
    assert from_api({"context": 8, "batch_size": "8"}).context == 8
    err = error_for({"context": 8, "batch_size": 12})
    assert err.field == "context" and "'batch_size'" in str(err) and "'context'" in str(err)


COERCIONS = [
    ("enable", "true", True), ("enable", "False", False), ("enable", 1, True),
    ("enable", " yes ", True), ("enable", "off", False), ("enable", 0, False),
    ("video_length", "16", 16), ("video_length", 16.0, 16), ("video_length", "16.0", 16),
    ("video_length", " 24 ", 24), ("context", "8", 8), ("loop_number", 3.0, 3),
    ("fps", 8, 8.0), ("fps", "8.0", 8.0), ("fps", "12.5", 12.5), ("fps", "24", 24.0),
    ("freeinit_ds", "0.5", 0.5), ("latent_scale", 64, 64.0),
    ("closed_loop", "r+p", ClosedLoop.R_PLUS_P), ("closed_loop", " n ", ClosedLoop.N),
    ("closed_loop", ClosedLoop.A, ClosedLoop.A), ("fusion", "FLAT", Fusion.FLAT),
    ("schedule", "Scaled_Linear", BetaSchedule.SCALED_LINEAR),
    ("prompt_interpolation", "LERP", PromptInterpolation.LERP),
    ("freeinit_filter", "Gaussian", FreeInitFilter.GAUSSIAN), ("interp", "off", "Off"),
    ("formats", "GIF", (OutputFormat.GIF,)),
    ("formats", "gif,mp4", (OutputFormat.GIF, OutputFormat.MP4)),
    ("formats", "PNG+webp", (OutputFormat.WEBP, OutputFormat.PNG)),
    ("formats", ["png", "GIF", "gif"], (OutputFormat.GIF, OutputFormat.PNG)),
    ("formats", ("frame", "txt"), (OutputFormat.TXT, OutputFormat.FRAME)),
    ("formats", ["gif, mp4"], (OutputFormat.GIF, OutputFormat.MP4)),
    ("model", "sub/mm_sd15_v3.safetensors", "sub/mm_sd15_v3.safetensors"),
    ("model", None, ""), ("model", "   ", ""),
    ("model", pathlib.PurePosixPath("a/b.ckpt"), "a/b.ckpt"),
    ("video_source", "", None), ("video_path", pathlib.Path("frames"), "frames"),
    ("mask_path", "/srv/masks", "/srv/masks"),
    ("request_id", "", None), ("request_id", None, None), ("request_id", "job_42-a", "job_42-a"),
    ("request_id", "x" * 64, "x" * 64), ("request_id", 1234, "1234"),
]


@pytest.mark.parametrize(("name", "raw", "expected"), COERCIONS)
def test_coercion(name: str, raw: object, expected: object) -> None:
    value = getattr(from_api({name: raw}), name)
    assert value == expected
    assert type(value) is type(expected) or isinstance(expected, str)  # str enums equal str


def test_int_fields_return_int_and_float_fields_float() -> None:
    p = from_api({"video_length": 16.0, "fps": 8, "latent_power": 2})
    assert type(p.video_length) is int and type(p.fps) is float and type(p.latent_power) is float


# ----- errors ------------------------------------------------------------------------------

ERRORS = [
    ("enable", "maybe", ["'maybe'", "true or false"]),
    ("enable", 2, ["2", "true or false"]),
    ("video_length", 16.5, ["16.5", "whole number"]),
    ("video_length", "sixteen", ["'sixteen'", "whole number"]),
    ("video_length", True, ["True", "whole number"]),
    ("video_length", -1, ["-1", ">= 0 and <= 10000"]),
    ("context", 0, ["0", ">= 1 and <= 64"]), ("context", 65, ["65", "<= 64"]),
    ("stride", 0, ["0", ">= 1"]), ("overlap", -2, ["-2", ">= -1"]),
    ("loop_number", None, ["None", "whole number"]),
    ("fps", -1, ["-1", ">= 0 and <= 240"]), ("fps", "nan", ["'nan'", "finite"]),
    ("fps", float("inf"), ["inf", "finite"]), ("fps", False, ["False", "finite number"]),
    ("fps", [8], ["[8]", "finite number"]),
    ("freeinit_ds", 0, ["0", "> 0 and <= 1"]), ("freeinit_dt", 1.5, ["1.5", "<= 1"]),
    ("freeinit_iters", 6, ["6", ">= 2 and <= 5"]),
    ("latent_power", 0.05, ["0.05", ">= 0.1 and <= 10"]),
    ("latent_scale", 200, ["200", ">= 1 and <= 128"]),
    ("closed_loop", True, ["True", "N, R-P, R+P, A"]),
    ("closed_loop", "loop", ["'loop'", "N, R-P, R+P, A"]),
    ("fusion", "max", ["'max'", "pyramid, flat"]),
    ("schedule", "sqrt_linear", ["'sqrt_linear'", "auto, linear, scaled_linear"]),
    ("freeinit_filter", 3, ["3", "butterworth, gaussian, box, ideal"]),
    ("prompt_interpolation", "cubic", ["'cubic'", "slerp, lerp"]),
    ("interp", "DAIN", ["'DAIN'", "Off, FILM, RIFE"]), ("interp_x", 61, ["61", "<= 60"]),
    ("formats", "", ["at least one of", "GIF, MP4, WEBP, WEBM, PNG, TXT, Frame"]),
    ("formats", [], ["at least one of"]), ("formats", "JPG", ["'JPG'", "GIF, MP4"]),
    ("formats", 5, ["5", "GIF, MP4"]), ("formats", ["GIF", 1], ["1", "GIF, MP4"]),
    ("model", 3, ["3", "file name"]), ("model", "../x.ckpt", ["'../x.ckpt'", "relative"]),
    ("model", "/abs/x.ckpt", ["relative"]), ("model", "C:\\m\\x.ckpt", ["relative"]),
    ("model", "a\x00b", ["NUL"]), ("video_path", "dir\x00", ["NUL"]),
    ("video_source", 5, ["5", "path"]), ("mask_path", ["a"], ["['a']", "path"]),
    ("request_id", "a b", ["'a b'", "A-Z, a-z, 0-9"]), ("request_id", "x" * 65, ["1-64"]),
    ("request_id", "../etc", ["'../etc'"]), ("request_id", True, ["True", "A-Z"]),
    ("last_frame", 12, ["12", "base64"]),
    ("skip_first_frames", -1, ["-1", ">= 0"]), ("select_every_nth", 0, ["0", ">= 1 and <= 1000"]),
    ("frame_load_cap", -3, ["-3", ">= 0"]), ("force_rate", -1, ["-1", ">= 0 and <= 240"]),
    ("force_rate", "nan", ["'nan'", "finite"]),
]


@pytest.mark.parametrize(("name", "raw", "fragments"), ERRORS)
def test_errors_name_field_value_and_allowed(name: str, raw: object, fragments: list[str]) -> None:
    err = error_for({name: raw})
    assert err.field == name
    message = str(err)
    assert f"'{name}'" in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_closed_loop_true_is_rejected_not_silently_accepted() -> None:
    err = error_for({"enable": True, "closed_loop": True})
    assert err.field == "closed_loop" and "N, R-P, R+P, A" in str(err)


def test_overlap_must_be_below_context() -> None:
    assert from_api({"context": 8, "overlap": 7}).overlap == 7
    err = error_for({"context": 8, "overlap": 8})
    assert err.field == "overlap" and "context - 1 = 7" in str(err)
    with pytest.raises(ParameterError, match="overlap"):
        from_api({"overlap": 6}).replace_field("context", 4)


def test_unknown_key_names_it_and_lists_the_known_ones() -> None:
    err = error_for({"enable": True, "reverse": True})
    assert err.field == "reverse"
    for known in ("enable", "closed_loop", "context (batch_size/context_length)", "format"):
        assert known in str(err)


def test_reference_internal_keys_are_ignored() -> None:
    assert set(IGNORED_KEYS) == {"is_i2i_batch", "video_default", "prompt_scheduler"}
    p = from_api({"enable": True, "is_i2i_batch": True, "video_default": False,
                  "prompt_scheduler": None})
    assert p == AnimateDiffParams(enable=True)


# ----- input forms -------------------------------------------------------------------------

REFERENCE_PAYLOAD = {  # the reference's documented API example (master), all keys
    "model": "mm_sd15_v3.safetensors", "format": ["GIF"], "enable": True, "video_length": 16,
    "fps": 8, "loop_number": 0, "closed_loop": "R+P", "batch_size": 16, "stride": 1,
    "overlap": -1, "interp": "Off", "interp_x": 10, "video_source": None, "video_path": "",
    "mask_path": "", "freeinit_enable": False, "freeinit_filter": "butterworth",
    "freeinit_ds": 0.25, "freeinit_dt": 0.25, "freeinit_iters": 3, "latent_power": 1,
    "latent_scale": 32, "last_frame": None, "latent_power_last": 1, "latent_scale_last": 32,
    "request_id": "", "is_i2i_batch": False, "video_default": False, "prompt_scheduler": None,
}


def test_reference_payload_is_accepted() -> None:
    p = from_api(REFERENCE_PAYLOAD)
    assert p.enable and p.model == "mm_sd15_v3.safetensors" and p.formats == (OutputFormat.GIF,)
    assert p.closed_loop is ClosedLoop.R_PLUS_P and p.context == 16 and p.request_id is None


def test_list_of_one_key_dicts_is_merged() -> None:
    parts = [{"enable": True}, {"model": "m.ckpt"}, {"format": "MP4"}]
    expected = AnimateDiffParams(enable=True, model="m.ckpt", formats=(OutputFormat.MP4,))
    assert from_api(parts) == expected
    # spread over the script's slots by WebUI; the later slots hold UI defaults
    assert from_script_args([*parts, False, "ignored default"]) == expected
    assert from_script_args([parts]) == expected


def test_list_of_dicts_with_a_repeated_key_is_an_error() -> None:
    with pytest.raises(ParameterError, match="more than one of the dicts") as info:
        from_api([{"enable": True}, {"enable": True}])
    assert info.value.field == "enable"
    with pytest.raises(ParameterError, match="mixes dicts"):
        from_api([{"enable": True}, 16])


class _UiPlaceholder:  # what the reference's gr.State held when the request had no AD args
    pass


@pytest.mark.parametrize("args", [(), None, (None,), (_UiPlaceholder,), (None, 1, 2)])
def test_no_animatediff_args_means_disabled_defaults(args: object) -> None:
    p = from_script_args(args)  # type: ignore[arg-type]
    assert p == DEFAULTS and not p.enable


def test_script_args_forms() -> None:
    p = AnimateDiffParams(enable=True, video_length=24)
    assert from_script_args((p,)) is p
    assert from_script_args(({"enable": True, "video_length": 24}, False, "m", ["GIF"])) == p
    assert from_script_args(['{"enable": true, "video_length": "24"}']) == p
    assert from_script_args(p.to_ui_args()) == p
    assert from_script_args([True, "", ["GIF", "PNG"], 24]) == p
    with pytest.raises(ParameterError, match="JSON"):
        from_script_args(['{"enable": tru'])
    with pytest.raises(ParameterError, match="dict of named parameters"):
        from_api(12)


def test_positional_round_trip_and_limits() -> None:
    p = AnimateDiffParams(enable=True, model="m, 1.ckpt", formats=("MP4", "TXT"), fps=12.5,
                          closed_loop="A", overlap=3, request_id="r1", video_path="/f",
                          last_frame=Image.open(io.BytesIO(tiny_png())))
    ui = p.to_ui_args()
    assert len(ui) == len(FIELDS) and ui[2] == ["MP4", "TXT"] and ui[9] == "A"
    assert from_positional(ui) == p
    assert from_api(ui) == p  # positional values over the API
    assert from_positional([True, "x.ckpt"]) == AnimateDiffParams(enable=True, model="x.ckpt")
    assert from_positional([8, True], names=["context", "enable"]) == AnimateDiffParams(
        enable=True, context=8)
    with pytest.raises(ParameterError, match=f"at most {len(FIELDS)}") as info:
        from_positional([*ui, "extra"])
    assert "enable, model, formats, video_length" in str(info.value)
    with pytest.raises(ParameterError, match="unknown"):
        from_positional([1], names=["nope"])


def test_api_dict_round_trip_through_json() -> None:
    p = AnimateDiffParams(enable=True, formats="gif,webm,frame", schedule="linear",
                          freeinit_enable=True, freeinit_filter="ideal", request_id="abc",
                          last_frame=base64.b64encode(tiny_png()).decode())
    data = json.loads(json.dumps(p.to_api_dict()))
    assert set(data) == set(FIELD_NAMES)
    assert data["formats"] == ["GIF", "WEBM", "Frame"] and data["closed_loop"] == "R-P"
    assert from_api(data) == p


def test_replace_field_validates_like_the_api() -> None:
    p = DEFAULTS.replace_field("batch_size", "8").replace_field("format", "gif,mp4")
    assert p.context == 8 and p.formats == (OutputFormat.GIF, OutputFormat.MP4)
    assert p.replace_field("closed_loop", "r+p").closed_loop is ClosedLoop.R_PLUS_P
    with pytest.raises(ParameterError, match=r"'closed_loop'.*N, R-P, R\+P, A"):
        p.replace_field("closed_loop", True)
    with pytest.raises(ParameterError, match="unknown parameter") as info:
        p.replace_field("speed", 2)
    assert info.value.field == "speed"
    assert DEFAULTS.context == 16  # unchanged


# ----- derived values ----------------------------------------------------------------------

def test_derived_values() -> None:
    p = AnimateDiffParams(context=12)
    assert p.resolved_overlap == 3 and p.frames == 12 and p.batch_size == 12
    assert p.frames_for(8) == 8 and p.overlap_for(8) == 2
    q = AnimateDiffParams(video_length=40, context=16, overlap=6)
    assert q.frames == 40 and q.frames_for(8) == 40 and q.resolved_overlap == 6
    assert q.overlap_for(4) == 3  # an explicit overlap is capped when the context is capped
    r = q.resolved(context=8)
    assert (r.video_length, r.context, r.overlap) == (40, 8, 6)
    assert p.resolved() == AnimateDiffParams(context=12, video_length=12, overlap=3)
    assert p.resolved(frames=30).video_length == 30


# ----- last_frame --------------------------------------------------------------------------

def _pixels(image: Image.Image) -> list:
    return [image.getpixel((x, y)) for y in range(image.height) for x in range(image.width)]


@pytest.mark.parametrize("form", ["plain", "data_url", "wrapped", "bytes", "urlsafe_nopad"])
def test_last_frame_decodes_base64(form: str) -> None:
    png = tiny_png()
    text = base64.b64encode(png).decode()
    raw: object = {"plain": text, "data_url": "data:image/png;base64," + text,
                   "wrapped": "\n".join(text[i:i + 20] for i in range(0, len(text), 20)),
                   "bytes": png,
                   "urlsafe_nopad": base64.urlsafe_b64encode(png).decode().rstrip("=")}[form]
    image = from_api({"last_frame": raw}).last_frame
    assert image is not None and image.size == (3, 2)
    assert _pixels(image) == _pixels(Image.open(io.BytesIO(png)))


def test_last_frame_errors_are_clear() -> None:
    err = error_for({"last_frame": "this is not base64!"})
    assert err.field == "last_frame" and "not valid base64" in str(err)
    err = error_for({"last_frame": base64.b64encode(b"hello world, not an image").decode()})
    assert "not an image" in str(err) and "PNG or JPEG" in str(err)
    err = error_for({"last_frame": "https://example.com/a.png"})
    assert "URLs are not fetched" in str(err)
    assert from_api({"last_frame": ""}).last_frame is None


# ----- property: any valid dict survives to_api_dict / from_api, also as strings ------------

@st.composite
def api_dicts(draw: st.DrawFn) -> dict:
    context = draw(st.integers(1, 64))
    return {
        "enable": draw(st.booleans()),
        "format": draw(st.lists(st.sampled_from([f.value for f in OutputFormat]), min_size=1)),
        "frames": draw(st.integers(0, 10000)),
        "fps": draw(st.floats(0, 240, exclude_min=True)),
        "batch_size": context,
        "overlap": draw(st.integers(-1, context - 1)),
        "stride": draw(st.integers(1, 16)),
        "closed_loop": draw(st.sampled_from(["N", "R-P", "R+P", "A", "r-p", "a"])),
        "freeinit_iters": draw(st.integers(2, 5)),
        "latent_power": draw(st.floats(0.1, 10)),
    }


@settings(max_examples=60, deadline=None)
@given(api_dicts(), st.booleans())
def test_valid_dicts_round_trip(data: dict, as_strings: bool) -> None:
    if as_strings:  # numbers and bools sent as their text, as form posts and XYZ do
        data = {k: (v if isinstance(v, list) else str(v)) for k, v in data.items()}
    p = from_api(data)
    assert from_api(p.to_api_dict()) == p
    assert from_positional(p.to_ui_args()) == p
    assert 0 <= p.resolved_overlap < p.context


def test_readme_table_is_the_generated_one() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert fields_markdown() in readme, "README's parameter table is stale: paste fields_markdown() there"


def test_every_short_help_is_a_whole_sentence() -> None:
    """The panel shows each field's first sentence: it must not stop at an abbreviation ("e.g.")."""
    for spec in FIELDS:
        words = spec.short_help.split()
        assert len(words) >= 3 and words[-1].lower() not in ("e.g.", "i.e.", "etc.", "vs."), spec.name
