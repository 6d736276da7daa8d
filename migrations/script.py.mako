"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from sluice.migrations import sqlfile

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    sqlfile.execute("${up_revision}_CHANGEME.up.sql")


def downgrade() -> None:
    sqlfile.execute("${up_revision}_CHANGEME.down.sql")
