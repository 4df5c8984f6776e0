"""``python -m cleanroom``: the ``cleanroom`` command, as its console script runs it."""

import sys

from cleanroom.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
