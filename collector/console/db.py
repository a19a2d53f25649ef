"""SQLite connections for the console: WAL, busy timeout, one connection per thread."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from sqlite_utils import Database

from collector.store import console_schema, schema

__all__ = ["ConnectionPool", "connect", "migrate_all"]

BUSY_TIMEOUT_MS = 10_000


def connect(db_path: Path) -> sqlite3.Connection:
    """Open the store in autocommit mode; writers use explicit ``BEGIN IMMEDIATE``."""
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False,
                           timeout=BUSY_TIMEOUT_MS / 1000)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def migrate_all(db_path: Path) -> None:
    """Apply the core and the console migrations (both are idempotent)."""
    conn = connect(db_path)
    try:
        db = Database(conn)
        schema.migrate(db)
        console_schema.migrate(db)
    finally:
        conn.close()


class ConnectionPool:
    """One connection per thread (Starlette runs blocking work in a thread pool)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.db_path)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
