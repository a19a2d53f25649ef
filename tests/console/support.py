"""Reusable helpers for console tests: seed a real store (SQLite or PostgreSQL), serve the app.

Every helper takes the store the world is built on (a SqliteStore or PostgresStore) and writes
through the store's repositories or portable SQL on ``store.db``, so one test runs unchanged
on both backends (tests/console/conftest.py parametrizes the ``world`` over them):

    site(store, "north"); user(store, "dsl1", "dsl", ["north"]); pupil(store, "north", ...)
    dev = device(store, "north", "NH-LAP-001")
    qid = seed_capture(store, site_id="north", device_id=dev, window_title="...")
    audit_rows(store, "capture.view")
    with ConsoleServer(store, data_dir) as srv: srv.url -> "https://127.0.0.1:PORT"

``connect(target)`` gives a connection-like view (``conn.execute(sql, params)``, rows by
index or by name) over a store, a World or a SQLite file path, for tests that read state with
portable SQL (``?`` placeholders). The helpers accept that view too, so
``with connect(world.db) as conn: seed_capture(conn, ...)`` runs on both backends.

The lead's real-agent end-to-end can reuse ConsoleServer with a store the collector filled.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from collector.console import create_app
from collector.console.auth import hash_password
from collector.console.db import migrate_all
from collector.store.base import NewCapture
from collector.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from collector.store.postgres import PostgresStore

__all__ = [
    "CHROMIUM_ARGS",
    "PASSWORD",
    "AnyStore",
    "Conn",
    "ConsoleServer",
    "audit_rows",
    "browser_login",
    "connect",
    "device",
    "make_store",
    "pupil",
    "seed_capture",
    "self_signed_cert",
    "site",
    "tiny_png",
    "user",
    "wait_for",
]

PASSWORD = "correct horse battery staple"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
T0 = int(dt.datetime(2026, 11, 16, 10, 0, tzinfo=dt.UTC).timestamp() * 1000)

AnyStore: TypeAlias = "SqliteStore | PostgresStore"


def make_store(tmp: Path, name: str = "vigil.db") -> Path:
    """A migrated SQLite store file (core + console migrations) in ``tmp``."""
    db = tmp / name
    migrate_all(db)
    return db


class Row(tuple):  # type: ignore[type-arg]
    """A result row readable by position and by column name (as sqlite3.Row is)."""

    _keys: tuple[str, ...]

    def __new__(cls, d: dict[str, Any]) -> Row:
        row = super().__new__(cls, tuple(d.values()))
        row._keys = tuple(d)
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._keys.index(key))
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._keys)


class Result:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self._rows = [Row(r) for r in rows]

    def fetchone(self) -> Row | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Row]:
        return list(self._rows)

    def __iter__(self) -> Iterator[Row]:
        return iter(self._rows)


class Conn:
    """A connection-like view over a store's ``db``: portable SQL (``?`` placeholders), each
    statement committed on its own, on SQLite and PostgreSQL alike."""

    def __init__(self, store: AnyStore) -> None:
        self.store = store

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        return Result(self.store.db.rows(sql, params))


Target: TypeAlias = "AnyStore | Conn"


def _store(target: Any) -> AnyStore:
    """The store behind a Conn, a World (``.store``) or a store itself."""
    return getattr(target, "store", target)  # type: ignore[no-any-return]


@contextlib.contextmanager
def _opened(target: Any) -> Iterator[AnyStore]:
    """A store for ``target``: a SQLite file path is opened (and closed afterwards); a
    store, World or Conn is used as it is."""
    if isinstance(target, (str, Path)):
        store = SqliteStore(Path(target))
        try:
            yield store
        finally:
            store.close()
    else:
        yield _store(target)


@contextlib.contextmanager
def connect(target: Any) -> Iterator[Conn]:
    """A :class:`Conn` over a store, a World, or the SQLite store file at a path."""
    with _opened(target) as store:
        yield Conn(store)


def site(target: Target, site_id: str, name: str | None = None,
         contacts: list[str] | None = None) -> str:
    store = _store(target)
    if store.ensure_site(site_id, name or site_id.title(), T0) and contacts:
        store.set_site_contacts(site_id, contacts, None)
    return site_id


_HASH: str | None = None


def user(target: Target, username: str, role: str, sites: list[str],
         display_name: str | None = None) -> str:
    """Create an account with password PASSWORD (argon2 hash computed once per process)."""
    global _HASH
    _HASH = _HASH or hash_password(PASSWORD)
    _store(target).add_account(username=username, display_name=display_name or username.upper(),
                               email=f"{username}@school.example", password_hash=_HASH,
                               role=role, sites=sites, now_ms=T0)
    return username


def pupil(target: Target, site_id: str, username: str, display_name: str,
          year_group: str = "Year 9", age_band: str = "secondary") -> str:
    _store(target).upsert_pupils(site_id, [(username, display_name, year_group, age_band)])
    return username


def device(target: Target, site_id: str, hostname: str, room: str | None = None,
           last_seen_at: int | None = T0, device_id: str | None = None) -> str:
    dev = device_id or uuid.uuid4().hex
    _store(target).db.execute(
        "INSERT INTO devices (id, site_id, group_name, hostname, os, room, cert_serial, "
        "enrolled_at, last_seen_at) VALUES (?, ?, 'year-9', ?, 'linux', ?, ?, ?, ?)",
        (dev, site_id, hostname, room, uuid.uuid4().hex, T0, last_seen_at))
    return dev


def seed_capture(target: Target, *, site_id: str, device_id: str,
                 os_user: str = "pupil1", rule_id: str = "self_harm.cutting",
                 category: str = "self_harm", severity: int = 3, priority: int | None = None,
                 match: str = "hurt myself", context: str = "i want to hurt myself tonight",
                 window_title: str = "Notes - Mousepad", process: str = "mousepad",
                 source: str = "keys", time_ms: int = T0, status: str = "new",
                 count: int = 1, screenshot_path: str | None = None,
                 refer_police: int | None = None, hostname: str = "") -> int:
    """One capture and its queue item, as ingest + triage would store them (through the
    store's own capture insert, so PostgreSQL's capture-id claim is made too). Returns the
    queue item id."""
    store = _store(target)
    cid = uuid.uuid4().hex
    police = int(category == "csam") if refer_police is None else refer_police
    capture = NewCapture(
        id=cid, device_id=device_id, site_id=site_id, group_name="year-9", os_user=os_user,
        hostname=hostname, time_ms=time_ms, last_time_ms=time_ms, count=count, source=source,
        rule_id=rule_id, category=category, severity=severity, match=match, context=context,
        window_title=window_title, process=process, match_kind="exact", media=None,
        rules_version=0, received_at=time_ms)
    with store.transaction():
        row = store.db.one(
            "INSERT INTO queue_items (site_id, device_id, os_user, rule_id, category, severity, "
            "priority, pinned, refer_police, status, count, first_time_ms, last_time_ms, "
            "latest_capture_id, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
            (site_id, device_id, os_user, rule_id, category, severity,
             priority if priority is not None else severity * 20, int(severity == 5), police,
             status, count, time_ms, time_ms, cid, time_ms, time_ms))
        assert row is not None
        qid = int(row["id"])
        store.insert_captures([store.capture_row(capture, screenshot_path, qid, None)])
        store.queue_changed([qid])
    return qid


def audit_rows(target: Any, action: str | None = None) -> list[dict[str, Any]]:
    """The audit log (or one action's rows), oldest first."""
    with _opened(target) as store:
        return store.audit_rows(action)


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "console-cert.pem", directory / "console-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class ConsoleServer:
    """The console under uvicorn over HTTPS (self-signed) on 127.0.0.1, port 0, in a thread.

    ``db`` is a SQLite store file (the app opens it) or a store, World or Conn (the app works
    on that store, which stays open afterwards)."""

    def __init__(self, db: Any, data_dir: Path, *, clock: Any = time.time) -> None:
        if db is None:
            raise TypeError("ConsoleServer needs a SQLite file or a store: pass world.db (the "
                            "world's store, on either backend), not world.db_path")
        self.db, self.data_dir, self.clock = db, data_dir, clock
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ConsoleServer:
        cert, key = self_signed_cert(self.data_dir)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        where: dict[str, Any] = ({"db_path": Path(self.db)} if isinstance(self.db, (str, Path))
                                 else {"store": _store(self.db)})
        app = create_app(data_dir=self.data_dir, public_url=f"https://127.0.0.1:{port}",
                         allowed_hosts=["127.0.0.1", "localhost"], clock=self.clock, **where)
        config = uvicorn.Config(app, ssl_certfile=str(cert), ssl_keyfile=str(key),
                                log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        daemon=True, name="console-uvicorn")
        self._thread.start()
        wait_for(lambda: self._server is not None and self._server.started, 20, "uvicorn")
        self.url = f"https://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(20)


def browser_login(browser: Any, url: str, username: str, password: str = PASSWORD) -> Any:
    """A fresh Playwright context (HTTPS errors ignored: self-signed) logged in as username.

    Returns (context, page); the page is on the user's home page.
    """
    ctx = browser.new_context(ignore_https_errors=True)
    page = ctx.new_page()
    page.goto(f"{url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return ctx, page


def tiny_png(width: int = 4, height: int = 3) -> bytes:
    """A valid RGB PNG (for screenshot tests), built with zlib."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"".join(b"\x00" + b"\xcc\x22\x22" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
