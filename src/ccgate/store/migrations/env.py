"""Alembic environment: migrate the connection ccgate hands over (no config file, no logging)."""

from alembic import context

from ccgate.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
