"""Reusable helpers for console tests: seed a real SQLite store, serve the app for real.

    db = make_store(tmp_path)                      # core + console migrations applied
    with connect(db) as conn: site(conn, "north"); user(conn, "dsl1", "dsl", ["north"])
    qid = seed_capture(conn, site_id="north", device_id=dev, window_title="...")
    with ConsoleServer(db, tmp_path) as srv: srv.url -> "https://127.0.0.1:PORT"

The lead's real-agent end-to-end can reuse ConsoleServer with a store the collector filled.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from collector.console import create_app
from collector.console.auth import hash_password
from collector.console.db import migrate_all

__all__ = [
    "CHROMIUM_ARGS",
    "PASSWORD",
    "ConsoleServer",
    "browser_login",
    "connect",
    "device",
    "make_store",
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


def make_store(tmp: Path, name: str = "vigil.db") -> Path:
    db = tmp / name
    migrate_all(db)
    return db


@contextlib.contextmanager
def connect(db: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(db, isolation_level=None, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def site(conn: sqlite3.Connection, site_id: str, name: str | None = None,
         contacts: list[str] | None = None) -> str:
    conn.execute("INSERT OR IGNORE INTO sites (id, name, dsl_contacts, created_at) "
                 "VALUES (?, ?, ?, ?)", (site_id, name or site_id.title(),
                                         json.dumps(contacts or []), T0))
    return site_id


_HASH: str | None = None


def user(conn: sqlite3.Connection, username: str, role: str, sites: list[str],
         display_name: str | None = None) -> str:
    """Create an account with password PASSWORD (argon2 hash computed once per process)."""
    global _HASH
    _HASH = _HASH or hash_password(PASSWORD)
    conn.execute("INSERT INTO users (username, display_name, email, password_hash, role, sites, "
                 "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (username, display_name or username.upper(), f"{username}@school.example",
                  _HASH, role, json.dumps(sites), T0))
    return username


def device(conn: sqlite3.Connection, site_id: str, hostname: str, room: str | None = None,
           last_seen_at: int | None = T0, device_id: str | None = None) -> str:
    dev = device_id or uuid.uuid4().hex
    conn.execute("INSERT INTO devices (id, site_id, group_name, hostname, os, room, cert_serial, "
                 "enrolled_at, last_seen_at) VALUES (?, ?, 'year-9', ?, 'linux', ?, ?, ?, ?)",
                 (dev, site_id, hostname, room, uuid.uuid4().hex, T0, last_seen_at))
    return dev


def seed_capture(conn: sqlite3.Connection, *, site_id: str, device_id: str,
                 os_user: str = "pupil1", rule_id: str = "self_harm.cutting",
                 category: str = "self_harm", severity: int = 3, priority: int | None = None,
                 match: str = "hurt myself", context: str = "i want to hurt myself tonight",
                 window_title: str = "Notes - Mousepad", process: str = "mousepad",
                 source: str = "keys", time_ms: int = T0, status: str = "new",
                 count: int = 1, screenshot_path: str | None = None,
                 refer_police: int | None = None, hostname: str = "") -> int:
    """One capture and its queue item, as ingest + triage would store them. Returns item id."""
    cid = uuid.uuid4().hex
    police = int(category == "csam") if refer_police is None else refer_police
    cur = conn.execute(
        "INSERT INTO queue_items (site_id, device_id, os_user, rule_id, category, severity, "
        "priority, pinned, refer_police, status, count, first_time_ms, last_time_ms, "
        "latest_capture_id, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (site_id, device_id, os_user, rule_id, category, severity,
         priority if priority is not None else severity * 20, int(severity == 5), police,
         status, count, time_ms, time_ms, cid, time_ms, time_ms))
    qid = int(cur.lastrowid or 0)
    conn.execute(
        "INSERT INTO captures (id, device_id, site_id, queue_item_id, os_user, hostname, time_ms, "
        "last_time_ms, count, source, rule_id, category, severity, match, context, "
        "window_title, process, match_kind, screenshot_path, received_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (cid, device_id, site_id, qid, os_user, hostname, time_ms, time_ms, count, source,
         rule_id, category, severity, match, context, window_title, process, "exact",
         screenshot_path, time_ms))
    return qid


def audit_rows(db: Path, action: str | None = None) -> list[dict[str, Any]]:
    with connect(db) as conn:
        sql, args = "SELECT * FROM audit", []
        if action:
            sql, args = sql + " WHERE action = ?", [action]
        return [dict(r) for r in conn.execute(sql + " ORDER BY id", args)]


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
    """The console under uvicorn over HTTPS (self-signed) on 127.0.0.1, port 0, in a thread."""

    def __init__(self, db: Path, data_dir: Path, *, clock: Any = time.time) -> None:
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
        app = create_app(self.db, self.data_dir, public_url=f"https://127.0.0.1:{port}",
                         allowed_hosts=["127.0.0.1", "localhost"], clock=self.clock)
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
