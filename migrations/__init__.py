"""Alembic migrations: each revision executes versioned SQL files (see README.md)."""
