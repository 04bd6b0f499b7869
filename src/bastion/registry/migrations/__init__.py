"""Alembic migration environment of the run registry (run programmatically on open)."""
