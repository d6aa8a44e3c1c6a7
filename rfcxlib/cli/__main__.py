"""``python -m rfcxlib.cli``: the ``rfcx`` command."""
import sys

from rfcxlib.cli import main

sys.exit(main())
