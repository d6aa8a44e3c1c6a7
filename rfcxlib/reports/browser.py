"""Pictures of web pages (a run's ``summary.html``, JupyterLab) rendered by headless Chromium
(its test is skipped where Chromium is not installed).

Tests: tests/test_jupyterlab.py
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from rfcxlib.atomic import write_bytes_atomic

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> Optional[str]:
    """The first of :data:`CHROMIUM_NAMES` on ``PATH``, else None."""
    return next((shutil.which(name) for name in CHROMIUM_NAMES if shutil.which(name)), None)


def screenshot(url: str, png, *, width: int = 1280, height: int = 2000,
               wait_ms: int = 0, timeout_s: float = 120) -> Path:
    """Render ``url`` with headless Chromium into ``png`` (written atomically) and return its path.

    Raises
    ------
    FileNotFoundError
        Without Chromium on ``PATH``.
    """
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    png = Path(png).resolve()
    with tempfile.TemporaryDirectory() as profile:
        shot = Path(profile) / "screenshot.png"
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
               f"--screenshot={shot}", f"--window-size={width},{height}"]
        if wait_ms:
            cmd.append(f"--virtual-time-budget={wait_ms}")
        subprocess.run(cmd + [url], check=True, timeout=timeout_s, capture_output=True)
        return write_bytes_atomic(png, shot.read_bytes())
