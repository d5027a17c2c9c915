"""Suite-wide settings. Tiny models run fastest single-threaded, and several test processes may share
the machine's two cores: intra-op threads then spin against each other and make tiny ops 30x slower."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
