"""Alembic environment: migrations run on the connection ``sensei init`` hands over."""

from alembic import context

import app.models  # noqa: F401  (registers every table on the metadata)
from app.extensions import db

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=db.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
