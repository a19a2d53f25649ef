"""pytest fixtures for a real PostgreSQL server (registered by tests/conftest.py).

* ``pg_server`` (session): one throwaway cluster (tests.support.postgres.PgServer), plus a
  template database with Vigil's migrations and this month's partitions applied.
* ``pg_url`` (per test): a fresh database copied from that template; dropped afterwards.

Without PostgreSQL server binaries the tests that use these skip, except under CI (``CI``
set) or ``VIGIL_REQUIRE_POSTGRES=1``, where that is an error: CI installs the package.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.postgres import PgServer, PgUnavailable

__all__ = ["TEMPLATE", "pg_server", "pg_url"]

TEMPLATE = "vigil_template"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        server = PgServer.start()
    except PgUnavailable as exc:
        if os.environ.get("CI") or os.environ.get("VIGIL_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(str(exc))
    try:
        import psycopg

        from collector.store import pg_schema

        url = server.create_database(TEMPLATE)
        with psycopg.connect(url, autocommit=True) as conn:
            pg_schema.migrate(conn)
            conn.execute("SELECT vigil_ensure_partitions((extract(epoch FROM now()) * 1000)"
                         "::bigint, 3)")
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    url = pg_server.create_database(template=TEMPLATE)
    try:
        yield url
    finally:
        pg_server.drop_database(url.rsplit("/", 1)[1])
