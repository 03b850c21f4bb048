"""Upstream accounts: the credentials Claude Code runs with, their plans, which takes a request."""
