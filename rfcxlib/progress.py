"""Progress bars: ``tqdm.auto``'s choice (a widget in JupyterLab, text elsewhere), except in a
notebook that ``rfcx run`` executes headless, where ``RFCX_TEXT_PROGRESS=1`` (set by the runner,
inherited by its kernels) keeps the text bars whose lines the runner echoes to the console
(:class:`rfcxlib.runner.execute.ProgressEcho`): a widget bar would reach no terminal.

Tests: tests/test_failures.py
"""
from __future__ import annotations

import os

if os.environ.get("RFCX_TEXT_PROGRESS", "") not in ("", "0"):
    from tqdm.std import tqdm
else:
    from tqdm.auto import tqdm

__all__ = ["tqdm"]
