"""ccgate: a self-hosted gateway that puts Claude Code behind the APIs other software speaks."""

__all__ = ["__version__"]

__version__ = "0.1.0"
