"""Alembic migrations of the manager's database (applied by ``open_database``)."""
