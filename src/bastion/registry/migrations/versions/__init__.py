"""Alembic revisions of the run registry, oldest first."""
