"""Fixtures: a real store with two schools, and logged-in TestClients per role.

The ``world`` (and so ``app`` and ``client_for``) is parametrized over both backends: every
test that uses it runs once on SQLite and once on a real PostgreSQL server (a fresh database
per test, copied from the migrated template of tests/support/pg_fixtures.py). A test that is
genuinely about one backend asks for it with ``@pytest.mark.parametrize("backend",
["sqlite"], indirect=True)`` and says why.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from collector.console import create_app
from collector.store.sqlite import SqliteStore

from .support import PASSWORD, T0, AnyStore, device, make_store, pupil, site, user

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
BACKENDS = ("sqlite", "postgresql")


@dataclass
class Clock:
    now: float = T0 / 1000 + 3 * 24 * 3600

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    """Two schools, their staff, three devices and a pupil, on one backend.

    ``store`` is the test's own handle on the world's store (seed and inspect through it);
    ``db_path`` is the SQLite file (None on PostgreSQL)."""

    backend: str
    store: AnyStore
    data_dir: Path
    clock: Clock
    db_path: Path | None = None
    devices: dict[str, str] = field(default_factory=dict)

    @property
    def db(self) -> AnyStore:
        """The store (the older spelling: ``connect(world.db)``, ``audit_rows(world.db)``)."""
        return self.store

    @property
    def db_error(self) -> type[Exception]:
        """The base class of the backend driver's database errors (what a trigger raises)."""
        if self.backend == "sqlite":
            return sqlite3.DatabaseError
        import psycopg

        return psycopg.Error

    def make_app(self, **kwargs: Any) -> Starlette:
        """The console over this world. On SQLite the app opens the file itself (as
        ``vigil-collector serve`` does); on PostgreSQL it is handed the store."""
        where: dict[str, Any] = ({"db_path": self.db_path} if self.db_path is not None
                                 else {"store": self.store})
        opts: dict[str, Any] = {"public_url": "https://testserver",
                                "allowed_hosts": ["testserver"], "clock": self.clock}
        return create_app(data_dir=self.data_dir, **where, **{**opts, **kwargs})


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class _Databases:
    """Fresh PostgreSQL databases from the migrated template, one made ahead in a thread.

    Copying the template takes about 0.4 s (most of a PostgreSQL world's setup); making the
    next one (and dropping the last) while the current test runs hides most of that."""

    def __init__(self, server: Any) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from tests.support.pg_fixtures import TEMPLATE

        self.server, self.template = server, TEMPLATE
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-template-copy")
        self._next = self._pool.submit(self._make)

    def _make(self) -> str:
        return str(self.server.create_database(template=self.template))

    def take(self) -> str:
        url = self._next.result()
        self._next = self._pool.submit(self._make)
        return url

    def drop(self, url: str) -> None:
        """Drop a used database in the background too (after the next one is made)."""
        self._pool.submit(self.server.drop_database, url.rsplit("/", 1)[1])

    def close(self) -> None:
        self._pool.shutdown(wait=True)  # drops done; the one made ahead goes with the server


@pytest.fixture(scope="session")
def pg_databases(pg_server: Any) -> Iterator[_Databases]:
    dbs = _Databases(pg_server)
    try:
        yield dbs
    finally:
        dbs.close()


@pytest.fixture
def console_pg_url(pg_databases: _Databases) -> Iterator[str]:
    """Like ``pg_url`` (a fresh, migrated database per test), made ahead of time."""
    url = pg_databases.take()
    try:
        yield url
    finally:
        pg_databases.drop(url)


@pytest.fixture
def world(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    db_path: Path | None = None
    store: AnyStore
    if backend == "sqlite":
        db_path = make_store(tmp_path)
        store = SqliteStore(db_path, tmp_path)
    else:
        from collector.store.postgres import open_postgres_store

        # the template database is migrated already (tests/support/pg_fixtures.py)
        store = open_postgres_store(request.getfixturevalue("console_pg_url"), tmp_path,
                                    pool_max=4, migrate=False)
    w = World(backend, store, tmp_path, Clock(), db_path)
    try:
        site(store, "north", "North High School", ["dsl@north.example"])
        site(store, "south", "South Academy")
        user(store, "dsl1", "dsl", ["north"], "Dee Ess-Ell")
        user(store, "deputy1", "deputy_dsl", ["north"], "Dep Uty")
        user(store, "dslsouth", "dsl", ["south"])
        user(store, "tech1", "technician", ["north"])
        user(store, "gov1", "governor", ["north"])
        user(store, "trust1", "trust_admin", ["north", "south"])
        w.devices["it1"] = device(store, "north", "NH-LAP-001", room="IT1")
        w.devices["bare"] = device(store, "north", "NH-LAP-002")
        w.devices["south"] = device(store, "south", "SA-LAP-001", room="S1")
        pupil(store, "north", "pupil1", "Alex Smith", "Year 9", "secondary")
        yield w
    finally:
        store.close()


@pytest.fixture
def app(world: World) -> Iterator[Starlette]:
    yield world.make_app()


def csrf_of(html: str) -> str:
    m = CSRF.search(html)
    assert m, "no csrf field on the page"
    return m.group(1)


def login(client: TestClient, username: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    page = client.get("/login")
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf": csrf_of(page.text), "next": "/"},
                       follow_redirects=False)


@pytest.fixture
def client_for(app: object) -> Iterator[Callable[[str], TestClient]]:
    clients: list[TestClient] = []

    def make(username: str) -> TestClient:
        c = TestClient(app, base_url="https://testserver")  # type: ignore[arg-type]
        c.__enter__()
        clients.append(c)
        r = login(c, username)
        assert r.status_code == 303, r.text
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def post(client: TestClient, url: str, data: dict[str, str], page: str = "/"):  # type: ignore[no-untyped-def]
    """POST a form with the session's CSRF token taken from ``page``."""
    token = csrf_of(client.get(page).text)
    return client.post(url, data={**data, "csrf": token}, follow_redirects=False)
