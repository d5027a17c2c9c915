"""Live-WebUI test tier: skipped unless ANIMATEDIFF_WEBUI_DIR or ANIMATEDIFF_WEBUI_URL is set (conftest.py)."""
