"""Where rfcx keeps things on this machine: the checkout it runs from, the run folders
(``$RFCX_OUTPUTS``) and the cache of decoded audio, embeddings and synthetic data sets
(``$RFCX_CACHE_DIR``).

Tests: tests/test_run_dir.py
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def project_root() -> Optional[Path]:
    """The checkout holding ``rfcxlib`` (None when the package is installed elsewhere)."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() and (here / "notebooks").exists() else None


def outputs_root() -> Path:
    """``$RFCX_OUTPUTS``, else ``outputs/`` of the checkout, else ``./outputs``."""
    if os.environ.get("RFCX_OUTPUTS"):
        return Path(os.environ["RFCX_OUTPUTS"])
    root = project_root()
    return (root / "outputs") if root else Path.cwd() / "outputs"


def cache_root() -> Path:
    """``$RFCX_CACHE_DIR``, else ``~/.cache/rfcx``: decoded audio (``audio/``), BirdNET
    embeddings (``embeddings/``) and synthetic data sets (``synth/``)."""
    return Path(os.environ.get("RFCX_CACHE_DIR") or Path.home() / ".cache" / "rfcx")
