"""Fixtures: a real SQLite store with two schools, and logged-in TestClients per role."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from collector.console import create_app

from .support import PASSWORD, T0, connect, device, make_store, site, user

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Clock:
    now: float = T0 / 1000 + 3 * 24 * 3600

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    db: Path
    data_dir: Path
    clock: Clock
    devices: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def world(tmp_path: Path) -> World:
    db = make_store(tmp_path)
    w = World(db, tmp_path, Clock())
    with connect(db) as conn:
        site(conn, "north", "North High School", ["dsl@north.example"])
        site(conn, "south", "South Academy")
        user(conn, "dsl1", "dsl", ["north"], "Dee Ess-Ell")
        user(conn, "deputy1", "deputy_dsl", ["north"], "Dep Uty")
        user(conn, "dslsouth", "dsl", ["south"])
        user(conn, "tech1", "technician", ["north"])
        user(conn, "gov1", "governor", ["north"])
        user(conn, "trust1", "trust_admin", ["north", "south"])
        w.devices["it1"] = device(conn, "north", "NH-LAP-001", room="IT1")
        w.devices["bare"] = device(conn, "north", "NH-LAP-002")
        w.devices["south"] = device(conn, "south", "SA-LAP-001", room="S1")
        conn.execute("INSERT INTO pupils VALUES ('north', 'pupil1', 'Alex Smith', 'Year 9', "
                     "'secondary')")
    return w


@pytest.fixture
def app(world: World) -> Iterator[object]:
    yield create_app(world.db, world.data_dir, public_url="https://testserver",
                     allowed_hosts=["testserver"], clock=world.clock)


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
