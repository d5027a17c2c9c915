"""Run by WebUI at launch (not with --skip-install / --skip-prepare-environment): installs only what is
missing. It never installs or upgrades torch, gradio, numpy, pillow or anything else WebUI pins."""

import launch

REQUIREMENTS = (  # (pip name, import name)
    ("einops", "einops"),
    ("safetensors", "safetensors"),
    ("imageio", "imageio"),
    ("imageio-ffmpeg", "imageio_ffmpeg"),
    ("boto3", "boto3"),
)

for dist, module in REQUIREMENTS:
    if not launch.is_installed(module):
        launch.run_pip(f"install {dist}", f"AnimateDiff requirement: {dist}")
