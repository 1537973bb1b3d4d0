"""Schema migrations with Alembic: ``sensei init`` upgrades to the latest revision."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from app.extensions import db

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade_schema(target: str = "head") -> tuple[str | None, str]:
    """Apply every pending migration (up to ``target``); returns (revision before, revision after)."""
    config = _config()
    with db.engine.begin() as connection:
        before = MigrationContext.configure(connection).get_current_revision()
        config.attributes["connection"] = connection
        command.upgrade(config, target)
    return before, target if target != "head" else ScriptDirectory.from_config(config).get_current_head() or ""


def schema_is_current() -> bool:
    config = _config()
    with db.engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current == ScriptDirectory.from_config(config).get_current_head()


def autogenerate(message: str) -> None:
    """Developer helper: write a new revision from the difference between models and schema."""
    config = _config()
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True)
