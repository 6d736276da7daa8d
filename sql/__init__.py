"""Sluice's SQL, shipped as package data: `schema/` (the readable engine),
`queries/` (named runtime queries) and `migrations/` (versioned deltas)."""
