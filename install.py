"""Run by WebUI at launch (not with --skip-install / --skip-prepare-environment): installs only what is
missing. It never installs or upgrades torch, gradio, numpy, pillow or anything else WebUI pins.

boto3 is not installed here: only the optional S3 upload needs it, and an upload without it reports the exact
`pip install boto3` command for WebUI's interpreter (README, "Output files").
"""

import launch

REQUIREMENTS = (  # (pip name, import name)
    ("safetensors", "safetensors"),
    ("imageio-ffmpeg", "imageio_ffmpeg"),
)

for dist, module in REQUIREMENTS:
    if not launch.is_installed(module):
        launch.run_pip(f"install {dist}", f"AnimateDiff requirement: {dist}")
