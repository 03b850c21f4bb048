"""Persistence (SQLAlchemy Core tables and migrations); filled in by the sessions work.

Nothing in ccgate stores anything yet: every turn is self-contained.
"""
