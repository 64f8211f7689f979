"""`python -m qpipe_dagster.cli` is the `qpipe` command."""

import sys

from qpipe_dagster.cli import main

sys.exit(main())
