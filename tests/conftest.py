"""Fixtures shared by every test folder: a real PostgreSQL server (tests/support/pg_fixtures.py)."""

from tests.support.pg_fixtures import pg_server, pg_url

__all__ = ["pg_server", "pg_url"]
