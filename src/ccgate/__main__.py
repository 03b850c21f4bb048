"""Run the command line: ``python -m ccgate``."""

from ccgate.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
