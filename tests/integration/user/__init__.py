"""Integration tests of the user service (real SQLite and Postgres)."""
