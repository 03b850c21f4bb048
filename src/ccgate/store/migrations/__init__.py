"""Alembic migrations of the ccgate database (run at start by ``Database.migrate``)."""
