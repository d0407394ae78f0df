"""Headless Chromium for the page tests (tests/test_browser.py, tests/test_export_web.py)."""

import os
import shutil
from pathlib import Path

# Headless, as root, offline: without the background-networking flags Chromium keeps trying
# to reach Google's hosts, which this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium_path():
    """``$FASTMLP_CHROMIUM`` if it exists, else the first Chromium-like browser on PATH."""
    env = os.environ.get("FASTMLP_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None
