"""The tier leaves no trace: settings a test changes are put back, also ones GET /sdapi/v1/options hides."""

from __future__ import annotations

from pathlib import Path

from .client import WebUIClient
from .launcher import WebUISession
from .options import read_config, restore, snapshot


def test_changed_settings_are_put_back(webui: WebUIClient, webui_session: WebUISession, tmp_path: Path) -> None:
    config = webui_session.config_file
    before = snapshot(webui, config)
    quality = int(webui.options()["jpeg_quality"])
    webui.post("/sdapi/v1/options", {"jpeg_quality": quality % 100 + 1, "animatediff_model_path": str(tmp_path)})
    assert webui.options()["jpeg_quality"] != quality
    if config is not None:
        assert read_config(config)["animatediff_model_path"] == str(tmp_path)
    # (A1111 1.10's GET answer leaves animatediff_* out: a GET diff alone would not see that change)

    values, unknown = restore(webui, before, config)
    assert unknown == []
    assert values["jpeg_quality"] == quality and webui.options()["jpeg_quality"] == quality
    assert values["animatediff_model_path"] == before.get("animatediff_model_path", "")
    if config is not None:
        assert read_config(config)["animatediff_model_path"] == values["animatediff_model_path"]
    assert not webui.options_written


def test_a_setting_absent_before_goes_back_to_its_default(webui: WebUIClient,
                                                          webui_session: WebUISession, tmp_path: Path) -> None:
    """As for a WebUI whose config.json this machine cannot read: only GET's answer is known beforehand."""
    before = {k: v for k, v in webui.options().items() if k != "animatediff_model_path"}
    webui.post("/sdapi/v1/options", {"animatediff_model_path": str(tmp_path)})
    values, unknown = restore(webui, before, None)
    assert (values, unknown) == ({"animatediff_model_path": ""}, [])
    if webui_session.config_file is not None:
        assert read_config(webui_session.config_file)["animatediff_model_path"] == ""
