"""Typed errors of the engine. Every message says what went wrong and what to do about it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class AnimateDiffError(Exception):
    """Base class of every error the engine raises on purpose.

    ``status_code`` and ``detail`` are instance attributes because A1111's API answers a failed request
    with ``vars(error).get("status_code", 500)`` and ``vars(error).get("detail")``: a client mistake
    (``http_status = 422``) gets HTTP 422 with the message, anything else HTTP 500.
    """

    http_status = 500

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.status_code = self.http_status
        self.detail = str(self)


class MotionModuleError(AnimateDiffError, ValueError):
    """A motion-module file cannot be used."""


class UnsafeFileError(MotionModuleError):
    """A pickle file would run code or build objects beyond plain tensors when loaded."""


class CorruptFileError(MotionModuleError):
    """The file is empty, truncated or not in a format we can read."""


class NotAMotionModuleError(MotionModuleError):
    """The file holds tensors, but not those of a motion module."""


class IncompatibleModelError(AnimateDiffError, ValueError):
    """The motion module does not fit the loaded checkpoint (SD1.5 vs SDXL, channels)."""

    http_status = 422


class TooManyFramesError(AnimateDiffError, ValueError):
    """More frames in one UNet call than the module's positional table holds."""

    http_status = 422


class ParameterError(AnimateDiffError, ValueError):
    """A user-supplied parameter is invalid; the message names the field and what is allowed."""

    http_status = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"AnimateDiff parameter '{field}': {message}")
        self.field = field


class OutputError(AnimateDiffError):
    """Writing or uploading an output failed."""


class InputError(AnimateDiffError, ValueError):
    """An input file or folder (video source, frames folder) cannot be used; the message names it. A client
    mistake (HTTP 422); where the request field it came from is known, :func:`naming` turns it into a
    ParameterError naming that field."""

    http_status = 422


@contextmanager
def naming(field: str | None) -> Iterator[None]:
    """Inside: an InputError is re-raised as a ParameterError naming ``field``, the request field the input
    came from (None: left as it is)."""
    try:
        yield
    except InputError as error:
        if field is None:
            raise
        raise ParameterError(field, str(error)) from error


class InterpolationError(AnimateDiffError):
    """Frame interpolation cannot run (weights missing or unusable, FILM unavailable); the video is saved without."""


class HostUnsupportedError(AnimateDiffError, ValueError):
    """This WebUI (host) cannot do what the request asks, yet; the message names the host and what (HTTP 422)."""

    http_status = 422

    def __init__(self, host: str, what: str) -> None:
        super().__init__(f"AnimateDiff: not supported on {host} yet: {what}")
        self.host, self.what = host, what
