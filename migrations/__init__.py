"""Alembic migrations: each revision executes versioned SQL files from sql/migrations/."""
