"""The AnimateDiff infotext entry: exact format, reading old entries, and the full round trip
through a simulation of WebUI's own infotext quoting and parsing."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from motion_module.errors import ParameterError
from motion_module.params.fields import FIELD_BY_NAME, FIELDS, FrameInterpolation
from motion_module.params.infotext import (
    INFOTEXT_KEY,
    PASTE_FIELDS,
    PASTE_PREFIX,
    params_from_infotext,
    params_with_infotext,
    parse_infotext,
    paste_values,
    quote_value,
    to_infotext,
)
from motion_module.params.request import AnimateDiffParams, BetaSchedule, ClosedLoop, OutputFormat

# ----- a stand-in for WebUI (A1111 1.10, modules/infotext_utils.py + processing.py) ----------
# Written from the observed behaviour: a generation-parameter value containing ',', ':' or a
# newline is written as a JSON string; the last line is read with a regex that takes either a
# JSON string (backslash escapes allowed) or everything up to the next comma, and a value that
# starts and ends with '"' is decoded as JSON.

_WEBUI_PARAM = re.compile(r'\s*(\w[\w /-]+):\s*("(?:[^"\\]|\\.)+"|[^,]*)(?:,|$)')


def webui_quote(value: str) -> str:
    if any(c in value for c in ",:\n"):
        return json.dumps(value, ensure_ascii=False)
    return value


def webui_infotext(prompt: str, negative: str, params: dict[str, str]) -> str:
    line = ", ".join(f"{k}: {webui_quote(v)}" for k, v in params.items())
    return f"{prompt}\nNegative prompt: {negative}\n{line}"


def webui_parse(text: str) -> dict[str, str]:
    *lines, last = text.strip().split("\n")
    if len(_WEBUI_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt = "\n".join(ln for ln in lines if not ln.startswith("Negative prompt:"))
    result = {"Prompt": prompt}
    for key, value in _WEBUI_PARAM.findall(last):
        if len(value) > 1 and value[0] == '"' and value[-1] == '"':
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        result[key] = value
    return result


def through_webui(entry: str) -> str:
    """Embed the entry in a full infotext as WebUI writes it, read it back as WebUI does."""
    others = {"Steps": "20", "Sampler": "Euler a", "CFG scale": "7", "Seed": "1234",
              "Size": "512x512", "Model hash": "6ce0161689"}
    text = webui_infotext("masterpiece, 1girl\n0: smile\n8: closed eyes", "lowres, bad",
                          {**others, INFOTEXT_KEY: entry, "Version": "v1.10.1"})
    parsed = webui_parse(text)
    for key, value in others.items():  # our entry must not disturb its neighbours
        assert parsed[key] == value
    assert parsed["Version"] == "v1.10.1"
    assert parsed["Prompt"] == "masterpiece, 1girl\n0: smile\n8: closed eyes"
    return parsed[INFOTEXT_KEY]


# ----- exact format ------------------------------------------------------------------------

def test_format_is_stable() -> None:
    p = AnimateDiffParams(enable=True, model="mm_sd15_v2.safetensors", formats="GIF,MP4")
    assert to_infotext(p, model_hash="1a2b3c4d", schedule_used="linear") == (
        "enable: True, model: mm_sd15_v2.safetensors, model_hash: 1a2b3c4d, format: GIF+MP4, "
        "video_length: 16, fps: 8, loop_number: 0, context: 16, stride: 1, overlap: 4, "
        "closed_loop: R-P, fusion: pyramid, schedule: auto, schedule_used: linear, "
        "prompt_interpolation: slerp, freeinit_enable: False")


def test_conditional_groups() -> None:
    off = to_infotext(AnimateDiffParams(enable=True, latent_power=2))
    assert "freeinit_filter" not in off and "latent_power" not in off
    on = to_infotext(AnimateDiffParams(enable=True, freeinit_enable=True, freeinit_ds=0.5,
                                       latent_power=2.5), img2img=True, version="v0.1.0")
    assert ("freeinit_enable: True, freeinit_filter: butterworth, freeinit_ds: 0.5, "
            "freeinit_dt: 0.25, freeinit_iters: 3, latent_power: 2.5, latent_scale: 32, "
            "latent_power_last: 1, latent_scale_last: 32, version: v0.1.0") in on
    never = AnimateDiffParams(enable=True, request_id="abc", video_path="/x", mask_path="/m",
                              video_source="/v.mp4")
    raw = parse_infotext(to_infotext(never))
    for key in ("request_id", "video_source", "video_path", "mask_path", "interp", "interp_x", "interp_fps",
                "last_frame"):
        assert key not in raw
    assert "/x" not in to_infotext(never)


def test_resolved_values_and_overrides_are_written() -> None:
    p = AnimateDiffParams(enable=True, context=12, video_length=0, overlap=-1)
    raw = parse_infotext(to_infotext(p))
    assert (raw["video_length"], raw["context"], raw["overlap"]) == ("12", "12", "3")
    entry = to_infotext(p, frames=40, context=8, model="auto/mm.ckpt",
                        schedule_used=BetaSchedule.SCALED_LINEAR)
    raw = parse_infotext(entry)
    assert (raw["video_length"], raw["context"], raw["overlap"]) == ("40", "8", "2")
    assert raw["model"] == "auto/mm.ckpt"
    assert (raw["schedule"], raw["schedule_used"]) == ("auto", "scaled_linear")
    assert params_from_infotext(entry)["schedule"] is BetaSchedule.AUTO
    assert parse_infotext(to_infotext(AnimateDiffParams(fps=12.5)))["fps"] == "12.5"


@pytest.mark.parametrize(("text", "quoted"), [
    ("plain.ckpt", False), ("a+b v2.safetensors", False), ("", True), (" lead", True),
    ("a, b", True), ("a: b", True), ('say "hi"', True), ("back\\slash", True),
    ("line\nbreak", True), ("tab\tin", True), ("a,b", True),
])
def test_quote_value(text: str, quoted: bool) -> None:
    out = quote_value(text)
    assert (out != text) == quoted
    assert (json.loads(out) if quoted else out) == text


# ----- reading: old entries, tolerance, strictness -----------------------------------------

V1_13_1 = ("enable: True, model: mm_sd_v15_v2.ckpt, video_length: 16, fps: 8, loop_number: 0, "
           "closed_loop: R-P, batch_size: 16, stride: 1, overlap: 4, interp: Off, interp_x: 10, "
           "mm_hash: 1a2b3c4d, latent_power: 1, latent_scale: 32, latent_power_last: 1, "
           "latent_scale_last: 32")
MASTER = ("model: mm_sd15_v3.safetensors, video_length: 24, fps: 12, loop_number: 0, "
          "closed_loop: R+P, batch_size: 16, stride: 2, overlap: -1, interp: Off, interp_x: 10, "
          "freeinit_enable: False, version: v2.0.1-a")


def test_reference_v1_entry_pastes() -> None:
    fields = params_from_infotext(through_webui(V1_13_1))
    assert fields == {"enable": True, "model": "mm_sd_v15_v2.ckpt", "video_length": 16,
                      "fps": 8.0, "loop_number": 0, "closed_loop": ClosedLoop.R_MINUS_P,
                      "context": 16, "stride": 1, "overlap": 4, "latent_power": 1.0,
                      "latent_scale": 32.0, "latent_power_last": 1.0, "latent_scale_last": 32.0,
                      "interp": FrameInterpolation.OFF, "interp_x": 10}


def test_frame_selection_is_recorded_when_set_and_pastes_back() -> None:
    p = AnimateDiffParams(enable=True, skip_first_frames=12, select_every_nth=2, force_rate=12.5)
    entry = to_infotext(p)
    assert "skip_first_frames: 12, select_every_nth: 2, force_rate: 12.5" in entry and "frame_load_cap" not in entry
    pasted = params_with_infotext(through_webui(entry))
    assert (pasted.skip_first_frames, pasted.select_every_nth, pasted.frame_load_cap, pasted.force_rate) == (
        12, 2, 0, 12.5)
    plain = parse_infotext(to_infotext(AnimateDiffParams(enable=True)))
    assert not {"skip_first_frames", "select_every_nth", "frame_load_cap", "force_rate"} & set(plain)


def test_interpolation_is_recorded_when_on_and_pastes_back() -> None:
    p = AnimateDiffParams(enable=True, interp=FrameInterpolation.RIFE, interp_x=4, interp_fps=30)
    entry = to_infotext(p)
    assert "interp: RIFE, interp_x: 4" in entry and entry.endswith("interp_fps: 30")
    pasted = params_with_infotext(through_webui(entry))
    assert (pasted.interp, pasted.interp_x, pasted.interp_fps) == (FrameInterpolation.RIFE, 4, 30.0)
    assert "interp_x" not in parse_infotext(to_infotext(AnimateDiffParams(enable=True)))  # off: as before


def test_reference_master_entry_pastes_and_implies_enable() -> None:
    p = params_with_infotext({INFOTEXT_KEY: through_webui(MASTER), "Steps": "20"})
    assert p == AnimateDiffParams(enable=True, model="mm_sd15_v3.safetensors", video_length=24,
                                  fps=12, closed_loop="R+P", stride=2)


def test_reference_model_name_with_comma_is_kept_when_unambiguous() -> None:
    raw = parse_infotext("model: my, favourite.ckpt, video_length: 16")
    assert raw == {"model": "my, favourite.ckpt", "video_length": "16"}


def test_lenient_reading_skips_bad_pieces_strict_reading_raises() -> None:
    text = 'enable: True, fps: fast, colour: red, ??, context: 8, model: "unterminated'
    assert params_from_infotext(text) == {"enable": True, "context": 8}
    for bad in ("fps: fast", "colour: red", "??", 'model: "unterminated'):
        with pytest.raises(ParameterError):
            params_from_infotext(f"enable: True, {bad}", strict=True)
    assert params_from_infotext("") == {} and params_from_infotext({"Steps": "2"}) == {}
    assert params_from_infotext(None) == {}


def test_whole_value_still_json_quoted_is_unwrapped() -> None:
    entry = to_infotext(AnimateDiffParams(enable=True, model='odd "name", v2.ckpt'))
    assert params_from_infotext(json.dumps(entry))["model"] == 'odd "name", v2.ckpt'


def test_paste_values_are_ready_for_ui_components() -> None:
    p = AnimateDiffParams(enable=True, formats="mp4,gif", closed_loop="A")
    values = paste_values({INFOTEXT_KEY: to_infotext(p)})
    assert set(values) == {PASTE_PREFIX + n for n in PASTE_FIELDS if
                           not FIELD_BY_NAME[n].img2img_only and n in
                           ("enable", "model", "formats", "video_length", "fps", "loop_number",
                            "context", "stride", "overlap", "closed_loop", "fusion", "schedule",
                            "prompt_interpolation", "freeinit_enable")}
    assert values["AnimateDiff formats"] == ["GIF", "MP4"]
    assert values["AnimateDiff closed_loop"] == "A"
    assert type(values["AnimateDiff closed_loop"]) is str
    assert values["AnimateDiff enable"] is True


# ----- property: the full round trip through WebUI's quoting --------------------------------

NASTY_MODELS = ['a, b: "c".safetensors', "x\\y, z.ckpt", "it's: 100%, \"sure\"\n.ckpt",
                " spaced .ckpt", "日本語, モデル.safetensors", "{json: [1, 2]}.pt"]
model_names = st.one_of(
    st.sampled_from(NASTY_MODELS),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00/\\"),
            min_size=1, max_size=24).map(lambda s: s + ".safetensors"),
)
floats01 = st.floats(0, 1, exclude_min=True)


@st.composite
def params_st(draw: st.DrawFn) -> AnimateDiffParams:
    context = draw(st.integers(1, 64))
    return AnimateDiffParams(
        enable=draw(st.booleans()), model=draw(model_names),
        formats=draw(st.sets(st.sampled_from(list(OutputFormat)), min_size=1)),
        video_length=draw(st.integers(0, 300)), fps=draw(st.floats(0, 240, exclude_min=True)),
        loop_number=draw(st.integers(0, 65535)), context=context,
        stride=draw(st.integers(1, 16)), overlap=draw(st.integers(-1, context - 1)),
        closed_loop=draw(st.sampled_from(list(ClosedLoop))),
        fusion=draw(st.sampled_from(["pyramid", "flat"])),
        schedule=draw(st.sampled_from(list(BetaSchedule))),
        prompt_interpolation=draw(st.sampled_from(["slerp", "lerp"])),
        freeinit_enable=draw(st.booleans()),
        freeinit_filter=draw(st.sampled_from(["butterworth", "gaussian", "box", "ideal"])),
        freeinit_ds=draw(floats01), freeinit_dt=draw(floats01),
        freeinit_iters=draw(st.integers(2, 5)),
        latent_power=draw(st.floats(0.1, 10)), latent_scale=draw(st.floats(1, 128)),
        latent_power_last=draw(st.floats(0.1, 10)), latent_scale_last=draw(st.floats(1, 128)),
        request_id=draw(st.none() | st.just("req-1")),
    )


def _expected_after_paste(p: AnimateDiffParams, img2img: bool) -> AnimateDiffParams:
    """What pasting onto defaults must give: written fields resolved, the rest default."""
    r = p.resolved()
    defaults = AnimateDiffParams()
    kept = {s.name: getattr(r, s.name) for s in FIELDS if s.infotext_key is not None
            and (img2img or not s.img2img_only)
            and (p.freeinit_enable or s.group != "freeinit" or s.name == "freeinit_enable")}
    return dataclasses.replace(defaults, **kept)


@settings(max_examples=60, deadline=None)
@given(params_st(), st.booleans(),
       st.none() | st.sampled_from(["linear", "scaled_linear 0.00085-0.020, trailing"]),
       st.none() | st.text("0123456789abcdef", min_size=8, max_size=10),
       st.none() | st.sampled_from(["v0.1.0", "v1.0.0-3-gabc, dirty"]))
@example(AnimateDiffParams(enable=True, model=NASTY_MODELS[0], freeinit_enable=True),
         True, "scaled_linear 0.00085-0.020, trailing", "1a2b3c4d", "v1.0.0-3-gabc, dirty")
def test_round_trip_through_webui(p: AnimateDiffParams, img2img: bool, schedule: str | None,
                                  model_hash: str | None, version: str | None) -> None:
    entry = to_infotext(p, model_hash=model_hash, schedule_used=schedule, img2img=img2img,
                        version=version)
    back = through_webui(entry)
    assert back == entry
    raw = parse_infotext(back, strict=True)
    assert raw.get("model_hash") == (model_hash or None) and raw.get("version") == version
    assert raw.get("schedule_used") == schedule
    assert params_with_infotext(back, strict=True) == _expected_after_paste(p, img2img)
    # pasting onto the same parameters changes nothing but the resolved values
    assert params_with_infotext(back, p.resolved()) == p.resolved()
    assert paste_values(back) == {PASTE_PREFIX + k: FIELD_BY_NAME[k].to_ui(v) for k, v in
                                  params_from_infotext(back).items()}
