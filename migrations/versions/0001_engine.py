"""The engine: the whole sluice schema as first released.

Revision ID: 0001
Revises:
"""

from migrations import sqlfile

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    sqlfile.execute("0001_engine.up.sql")


def downgrade() -> None:
    sqlfile.execute("0001_engine.down.sql")
