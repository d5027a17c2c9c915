"""The hosts AnimateDiff runs in, behind the engine's request session (``session.HostAdapter``): one module per
WebUI.

* :mod:`.a1111`: AUTOMATIC1111 WebUI 1.9/1.10 (ldm/sgm UNet; the motion modules are inserted into its blocks).
* :mod:`.forge`: Stable Diffusion WebUI Forge 2.x (``backend/``; the motion modules run through its
  ``UnetPatcher``: block-inner modifiers, the UNet function wrapper, its memory manager).

Nothing here imports a WebUI at import time: each host's own modules are imported inside the functions that need
them, so shared code loads on every host. :func:`for_webui` picks the host of the running WebUI.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from animatediff_hosts.a1111 import A1111Host
from animatediff_hosts.forge import ForgeHost, is_forge


def for_webui(extension_dir: Path) -> A1111Host:
    """The host of the WebUI this process runs: Forge (it has ``modules_forge``) or A1111."""
    forge = importlib.util.find_spec("modules_forge") is not None
    return ForgeHost(extension_dir) if forge else A1111Host(extension_dir)


__all__ = ["A1111Host", "ForgeHost", "for_webui", "is_forge"]
