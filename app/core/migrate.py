"""Apply the Alembic migrations (sync: a one-shot admin step, run before anything else)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

# Package data, so the same code runs from a checkout and from an installed wheel.
MIGRATIONS_DIR = Path(str(resources.files("sluice.migrations")))


def alembic_config(url: str) -> Config:
    """Alembic configuration for `url`, independent of any alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # configparser interpolates %; URLs may carry percent-encoded characters.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision`."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at `url` down to `revision` (`base` removes the engine)."""
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str:
    """The newest revision this code ships with."""
    head = ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head()
    assert head is not None
    return head
