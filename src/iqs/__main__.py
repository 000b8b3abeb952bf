"""`python -m iqs <command> ...`: the `iqs` console script (iqs.cli), for a venv's python without its bin/."""

import sys

from iqs.cli import main

sys.exit(main())
