"""Entry point for ``python3 -m cowstat``."""

import sys

from cowstat.cli import main

if __name__ == "__main__":
    sys.exit(main())
