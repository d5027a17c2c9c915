"""Generations nested in an AnimateDiff request (ADetailer's per-frame img2img) run without AnimateDiff:
`motion_module.nesting.Requests`, the registry the adapter asks in `before_process` and `postprocess`."""

from __future__ import annotations

import copy
import gc
import logging
import threading
import types

import pytest

from motion_module.core.nesting import INNER_MARKERS, NESTED_NOTE, Requests


class P:
    """Stands in for WebUI's processing object: any attribute bag (ADetailer copies it with copy.copy)."""

    def __init__(self, **attrs: object) -> None:
        self.__dict__.update(attrs)


def notes(caplog: pytest.LogCaptureFixture) -> int:
    return sum(record.getMessage() == NESTED_NOTE for record in caplog.records)


def test_a_generation_inside_a_request_is_nested_and_logged_once_per_request(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="animatediff")
    requests, outer = Requests(), P()
    assert requests.begin(outer, task=1)
    inner = [P(batch_size=1) for _ in range(4)]  # one img2img per finished frame
    assert [requests.begin(p, task=1) for p in inner] == [False] * 4
    assert requests.begin(copy.copy(outer), task=1) is False  # ADetailer's before_process(copy(p))
    assert notes(caplog) == 1
    assert requests.end(inner[0]) is False and requests.end(copy.copy(outer)) is False  # not the request
    assert requests.end(outer) is True and requests.end(outer) is False
    after = P()
    assert requests.begin(after, task=1)  # the request is over: the next one is a request of its own
    assert requests.begin(P(), task=1) is False and notes(caplog) == 2  # logged once for this request too
    assert requests.end(after)


def test_a_request_begun_again_and_one_left_over_from_a_failed_task():
    requests, p = Requests(), P()
    assert requests.begin(p, task=1) and requests.begin(p, task=1)  # the same p twice (img2img batch tab)
    stale = P()
    assert requests.begin(stale, task=2)  # task 2 ended without postprocess (an error)
    fresh = P()
    assert requests.begin(fresh, task=3)  # a new task: not nested in the stale one
    assert requests.end(stale) is False and requests.end(fresh) is True


def test_an_owner_that_is_gone_is_not_in_progress():
    requests, outer = Requests(), P()
    assert requests.begin(outer, task=1)
    del outer
    gc.collect()
    assert requests.begin(P(), task=1)


def test_an_object_without_weak_references_is_held():
    requests, outer = Requests(), types.SimpleNamespace()
    assert requests.begin(outer, task=1)
    assert requests.begin(types.SimpleNamespace(), task=1) is False
    assert requests.end(outer)


def test_adetailers_marker_makes_a_generation_inner_without_a_request_in_progress(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="animatediff")
    assert INNER_MARKERS == ("_ad_inner",)
    requests = Requests()
    assert requests.begin(P(_ad_inner=True), task=1) is False and notes(caplog) == 1
    outer = P(_ad_inner=False)  # ADetailer's other attributes (e.g. _ad_disabled on the outer p) mean nothing
    assert requests.begin(outer, task=1)
    assert requests.end(outer)


def test_other_threads_have_their_own_request():
    requests, outer = Requests(), P()
    assert requests.begin(outer, task=1)
    seen: list[bool] = []
    other = P()
    worker = threading.Thread(target=lambda: seen.extend([requests.begin(other, task=1), requests.end(other)]))
    worker.start()
    worker.join()
    assert seen == [True, True]
    assert requests.end(outer)


def test_a_failed_request_ends_and_later_ones_are_not_nested_in_it():
    requests, outer = Requests(), P()
    assert requests.begin(outer, task=1)
    assert requests.begin(P(), task=1) is False
    assert requests.end(outer)  # the adapter ends a refused request and one whose sampling raised
    assert requests.end(outer) is False and requests.begin(P(), task=1)
