import sys

from qpipe_dagster.monitoring.server import main

sys.exit(main())
