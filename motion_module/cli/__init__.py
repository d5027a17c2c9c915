"""The command line (python -m motion_module): info (cli), inspect and convert (tools), the demo (demo,
demo_cli, demo_unet).

Imports nothing: each module is imported by name."""
