"""Put back every WebUI setting a test changed, including settings that GET /sdapi/v1/options cannot show.

A1111 1.10's GET /sdapi/v1/options answers through a pydantic model built when ``modules/api/models.py`` is
first imported, from the settings registered by then; a setting an extension registers later (ours,
``animatediff_*``; ControlNet's ``control_net_*``) is dropped from the answer, although POST sets it and
``config.json`` stores it. A diff of two GET answers therefore misses it. So a snapshot here is GET's
answer plus ``config.json`` (the WebUI saves it on every POST /sdapi/v1/options) when this machine can
read it, and every key a test POSTed (``WebUIClient.options_written``) is put back as well: to its value in
the snapshot, else (nothing could show it) to its known default: this extension's own settings, from the
engine's settings table (``motion_module.settings.DEFAULTS``, one source). A key with neither is reported.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .client import WebUIClient

_MISSING = object()


def extension_option_defaults() -> dict[str, Any]:
    """``{key: default}`` of this extension's settings: the engine's table, which the Settings page is built from."""
    from motion_module.params.settings import DEFAULTS

    return dict(DEFAULTS)


def read_config(path: Path | None) -> dict[str, Any]:
    """The saved settings (``config.json``), or ``{}`` when there is none or it cannot be read."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def config_file(client: WebUIClient, data_dir: Path | None = None) -> Path | None:
    """The WebUI's ``config.json`` if this machine can read it: ``<data_dir>/config.json`` for a WebUI this
    session launched, else the ``ui_settings_file`` of GET /sdapi/v1/cmd-flags (same machine only)."""
    if data_dir is not None:
        return data_dir / "config.json"
    try:
        name = client.get("/sdapi/v1/cmd-flags").get("ui_settings_file")
    except Exception:  # noqa: BLE001 - an old or restricted API: no file then
        return None
    path = Path(str(name)) if name else None
    return path if path is not None and path.is_absolute() and path.is_file() else None


def snapshot(client: WebUIClient, config: Path | None) -> dict[str, Any]:
    """The settings as far as they can be seen: config.json, overlaid by GET (live values win)."""
    return {**read_config(config), **client.options()}


def plan_restore(before: Mapping[str, Any], after: Mapping[str, Any], written: Iterable[str],
                 defaults: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """What to POST to undo a test: ``(values, unknown keys)``.

    Candidates: keys whose value changed, keys that appeared, and every key the test POSTed (it may be
    invisible to both snapshots). Each goes back to its ``before`` value, else to ``defaults``; one with
    neither is returned in ``unknown``. Keys already at their target are left alone.
    """
    candidates = [k for k, v in after.items() if before.get(k, _MISSING) != v]
    candidates += [k for k in written if k not in candidates]
    values: dict[str, Any] = {}
    unknown: list[str] = []
    for key in candidates:
        target = before.get(key, defaults.get(key, _MISSING))
        if target is _MISSING:
            unknown.append(key)
        elif after.get(key, _MISSING) != target:
            values[key] = target
    return values, unknown


def restore(client: WebUIClient, before: Mapping[str, Any], config: Path | None,
            defaults: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Undo what happened since ``before`` (and ``client.options_written``); returns what it did."""
    after = snapshot(client, config)
    values, unknown = plan_restore(before, after, client.options_written,
                                   extension_option_defaults() if defaults is None else defaults)
    if values:
        client.post("/sdapi/v1/options", values, timeout=60.0)
    client.options_written.clear()
    return values, unknown
