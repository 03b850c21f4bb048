"""Fallback: register the ``server`` marker until pyproject.toml's ``markers`` list has it."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register ``server`` (and ``unit``) for this directory's tests (``--strict-markers``)."""
    config.addinivalue_line("markers", "server: runs ccgate's app without the Claude Code CLI")
    config.addinivalue_line("markers", "unit: no server, no CLI")
