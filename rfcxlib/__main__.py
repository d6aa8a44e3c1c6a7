"""``python -m rfcxlib``: the ``rfcx`` command.

Tests: tests/test_cli.py
"""
import sys

from rfcxlib.cli import main

sys.exit(main())
