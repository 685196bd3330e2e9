"""``python -m pathsegdiff.cli``."""

import sys

from pathsegdiff.cli import main

sys.exit(main())
