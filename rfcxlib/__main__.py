import sys

from rfcxlib.cli import main

sys.exit(main())
