"""The wrap of the Lora extension's ``networks.load_network`` (``lora.wrap_lora_loader``, installed by
scripts/animatediff_lora.py and undone when WebUI unloads that script), on a stand-in ``networks`` module object:
wrapped once, undone to the very same function, and safe when another extension wrapped over ours meanwhile."""

from __future__ import annotations

import logging
import types
from collections.abc import Callable
from typing import Any

import pytest

from motion_module.core.instance_forward import wrap_attribute
from motion_module.files import lora


def stand_in_networks() -> types.ModuleType:
    networks = types.ModuleType("networks")

    def load_network(name: str, network_on_disk: Any) -> tuple[str, str]:
        return ("webui", name)

    networks.load_network = load_network  # type: ignore[attr-defined]
    networks.loaded_networks = []  # type: ignore[attr-defined]
    return networks


def ours(original: Callable[..., Any]) -> Callable[..., Any]:
    """Like AnimateDiff's loader: takes "motion" files, gives every other file to the function it wraps."""
    def load_network(name: str, network_on_disk: Any) -> Any:
        return ("animatediff", name) if name.startswith("motion") else original(name, network_on_disk)

    return load_network


def other_extension(original: Callable[..., Any]) -> Callable[..., Any]:
    def load_network(name: str, network_on_disk: Any) -> Any:
        return ("other", *original(name, network_on_disk))

    return load_network


def test_wrapped_once_and_undone_to_the_very_same_function() -> None:
    networks = stand_in_networks()
    original, before = networks.load_network, dict(networks.__dict__)
    undo = lora.wrap_lora_loader(networks, ours)
    assert undo is not None and networks.load_network is not original
    assert networks.load_network("motion_pan", None) == ("animatediff", "motion_pan")
    assert networks.load_network("style", None) == ("webui", "style")
    assert getattr(networks, lora.LOADER_MARK) is True
    assert lora.wrap_lora_loader(networks, ours) is None  # install at import and at app start: once
    undo()
    assert networks.load_network is original
    assert networks.__dict__ == before  # the mark is gone too
    undo()  # idempotent
    assert networks.load_network is original and networks.__dict__ == before
    again = lora.wrap_lora_loader(networks, ours)  # the reloaded script wraps afresh
    assert again is not None and networks.load_network("motion_pan", None) == ("animatediff", "motion_pan")
    undo()  # the old undo, called late, touches nothing of the new wrap
    assert getattr(networks, lora.LOADER_MARK) is True
    assert networks.load_network("motion_pan", None) == ("animatediff", "motion_pan")
    again()
    assert networks.load_network is original and networks.__dict__ == before


def test_nothing_to_wrap() -> None:
    assert lora.wrap_lora_loader(None, ours) is None
    empty = types.ModuleType("networks")
    assert lora.wrap_lora_loader(empty, ours) is None and not hasattr(empty, lora.LOADER_MARK)


def test_a_wrapper_installed_before_ours_is_put_back() -> None:
    networks = stand_in_networks()
    networks.load_network = theirs = other_extension(networks.load_network)  # type: ignore[attr-defined]
    undo = lora.wrap_lora_loader(networks, ours)
    assert undo is not None
    assert networks.load_network("motion_pan", None) == ("animatediff", "motion_pan")
    assert networks.load_network("style", None) == ("other", "webui", "style")  # chained
    undo()
    assert networks.load_network is theirs and not hasattr(networks, lora.LOADER_MARK)


def test_a_wrapper_installed_over_ours_stays_and_ours_passes_through(caplog: pytest.LogCaptureFixture) -> None:
    networks = stand_in_networks()
    undo = lora.wrap_lora_loader(networks, ours)
    assert undo is not None
    networks.load_network = theirs = other_extension(networks.load_network)  # type: ignore[attr-defined]
    assert networks.load_network("motion_pan", None) == ("other", "animatediff", "motion_pan")
    with caplog.at_level(logging.WARNING, logger="animatediff"):
        undo()
    assert networks.load_network is theirs  # not cut out
    assert networks.load_network("motion_pan", None) == ("other", "webui", "motion_pan")  # ours passes through
    assert not hasattr(networks, lora.LOADER_MARK)
    assert "networks.load_network was wrapped again by another extension" in caplog.text
    undo()  # idempotent: no second warning
    assert caplog.text.count("wrapped again") == 1
    again = lora.wrap_lora_loader(networks, ours)  # a reloaded AnimateDiff wraps over theirs
    assert again is not None
    assert networks.load_network("motion_pan", None) == ("animatediff", "motion_pan")
    assert networks.load_network("style", None) == ("other", "webui", "style")
    again()
    assert networks.load_network is theirs


def test_the_attribute_undo_runs_once(caplog: pytest.LogCaptureFixture) -> None:
    networks = stand_in_networks()
    undo = wrap_attribute(networks, "load_network", ours)
    networks.load_network = theirs = other_extension(networks.load_network)  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger="animatediff"):
        undo()
        undo()
    assert networks.load_network is theirs and caplog.text.count("wrapped again") == 1
