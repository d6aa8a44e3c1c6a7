"""What ``rfcx run`` prints: lines flushed as they come, durations people read, and kernel output
cleaned of terminal colour codes.

Tests: tests/test_series.py
"""
from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def say(message: str) -> None:
    """Print ``message`` now (a run's progress, read while it runs)."""
    print(message, flush=True)


def format_duration(seconds: float) -> str:
    """``12.3 s`` under two minutes, else ``7 min 13 s``."""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds // 60:.0f} min {seconds % 60:.0f} s"


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour and cursor codes (a kernel's traceback, a progress bar)."""
    return _ANSI.sub("", text)
