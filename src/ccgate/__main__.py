"""Run the command line: ``python -m ccgate``."""

from ccgate.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
