"""``python -m microgrid`` and the ``microgrid`` console script."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
