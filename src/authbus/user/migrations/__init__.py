"""Alembic migration history of the user service (version table alembic_version_user)."""
