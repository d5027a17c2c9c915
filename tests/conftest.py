"""Suite-wide settings. Tiny models run fastest single-threaded, and several test processes may share
the machine's two cores: intra-op threads then spin against each other and make tiny ops 30x slower."""

from __future__ import annotations

import os
from collections.abc import Iterator

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def unet() -> torch.nn.Module:
    """A tiny random SD1.5-shaped ldm UNet (``tests.fixtures.unets.tiny_unet``), one per test module."""
    from tests.fixtures.unets import tiny_unet

    return tiny_unet("sd15")


@pytest.fixture(scope="module")
def server() -> Iterator[dict[str, str]]:
    """A moto S3 server with signature checking on (``tests.fixtures.s3.moto_server``), one per test module:
    its endpoint and valid credentials."""
    pytest.importorskip("boto3")
    pytest.importorskip("moto.server", reason="needs moto[server]")
    from tests.fixtures.s3 import moto_server

    with moto_server() as endpoint:
        yield endpoint
