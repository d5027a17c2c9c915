"""The live tier's settings restore (tests/webui/options.py), without a WebUI: what it would POST."""

from __future__ import annotations

from pathlib import Path

from tests.webui.options import extension_option_defaults, plan_restore, read_config

DEFAULTS = {"animatediff_model_path": "", "animatediff_mp4_crf": 23}


def test_changed_and_appeared_keys_go_back() -> None:
    before = {"jpeg_quality": 80, "samples_format": "png"}
    after = {"jpeg_quality": 81, "samples_format": "png", "animatediff_model_path": "/tmp/x"}
    assert plan_restore(before, after, [], DEFAULTS) == ({"jpeg_quality": 80, "animatediff_model_path": ""}, [])


def test_written_keys_invisible_to_both_snapshots_go_back_to_their_default() -> None:
    """A WebUI whose config.json cannot be read: GET never shows animatediff_*, so only the write tells."""
    values, unknown = plan_restore({"jpeg_quality": 80}, {"jpeg_quality": 80},
                                   ["animatediff_model_path", "mystery_key"], DEFAULTS)
    assert values == {"animatediff_model_path": ""}
    assert unknown == ["mystery_key"]


def test_previous_value_wins_over_the_default_and_unchanged_keys_are_left_alone() -> None:
    before = {"animatediff_model_path": "/models", "animatediff_mp4_crf": 18}
    after = {"animatediff_model_path": "/tmp/x", "animatediff_mp4_crf": 18}
    assert plan_restore(before, after, ["animatediff_model_path", "animatediff_mp4_crf"], DEFAULTS) == (
        {"animatediff_model_path": "/models"}, [])


def test_defaults_come_from_the_settings_table(tmp_path: Path) -> None:
    defaults = extension_option_defaults()
    assert defaults["animatediff_model_path"] == "" and defaults["animatediff_mp4_crf"] == 23
    assert all(key.startswith("animatediff_") for key in defaults)
    assert read_config(tmp_path / "missing.json") == {} and read_config(None) == {}
    (tmp_path / "config.json").write_text('{"a": 1}')
    assert read_config(tmp_path / "config.json") == {"a": 1}
