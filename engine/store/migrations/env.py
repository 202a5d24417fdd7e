"""Alembic environment: the engine comes from the caller (engine.store.db.upgrade)."""

from alembic import context

from engine.store.schema import metadata

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    context.run_migrations()
