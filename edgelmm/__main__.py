"""`python -m edgelmm` runs the command line."""

import sys

from edgelmm.cli import main

sys.exit(main())
