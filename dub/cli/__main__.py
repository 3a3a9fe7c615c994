"""`python -m dub.cli ...`: the `dub` command (as `python -m dub`)."""

import sys

from dub.cli import app

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
