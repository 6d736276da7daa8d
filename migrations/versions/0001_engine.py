"""The engine: the whole sluice schema.

Until the first release this revision runs `sql/schema/` itself, so the schema
has one copy; at the release it is frozen (see migrations/README.md).

Revision ID: 0001
Revises:
"""

from sluice.migrations import sqlfile

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    sqlfile.execute_schema()


def downgrade() -> None:
    sqlfile.execute("0001_engine.down.sql")
