"""The embedded backend: every repository over one SQLite file (WAL, secure delete).

What is SQLite's own lives here: the connection's pragmas, the sqlite-utils migrations
(collector/store/schema.py, console_schema.py) and the WAL checkpoint after a purge. The SQL
itself is in collector/store/repos/, shared with the PostgreSQL backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database

from collector.store import console_schema, schema
from collector.store.repos.audit import AuditRepo
from collector.store.repos.captures import CapturesRepo
from collector.store.repos.console import ConsoleRepos
from collector.store.repos.devices import DevicesRepo, hash_token
from collector.store.repos.retention import RetentionRepo
from collector.store.repos.rules import RulesRepo
from collector.store.sql import SqliteDb

__all__ = ["SqliteStore", "hash_token", "open_store"]


class SqliteStore(AuditRepo, DevicesRepo, CapturesRepo, RulesRepo, RetentionRepo, ConsoleRepos):
    """One connection, safe to share between threads (calls are serialised by its lock).

    ``serve`` opens several (the ingest writer's, the control loop's, the console's), each
    its own connection to the same WAL file."""

    backend = "sqlite"

    def __init__(self, db_path: Path, data_dir: Path | None = None,
                 busy_timeout_ms: int = 5000) -> None:
        self.db_path = Path(db_path)
        self.data_dir = Path(data_dir) if data_dir else self.db_path.parent
        # secure_delete: deleted rows are overwritten, not left in free pages, so purged
        # safeguarding data is not recoverable from the file (see after_purge for the WAL).
        self.sqlite = SqliteDb(self.db_path, busy_timeout_ms,
                               pragmas=("foreign_keys = OFF", "synchronous = NORMAL",
                                        "secure_delete = ON"))
        self.db = self.sqlite

    def migrate(self) -> None:
        """Apply the core and console migrations (idempotent) and switch to WAL."""
        with self.sqlite.lock:
            sdb = Database(self.sqlite.conn)
            sdb.enable_wal()
            schema.migrate(sdb)
            console_schema.migrate(sdb)

    @contextmanager
    def transaction(self) -> Iterator[SqliteStore]:
        """One transaction over every repository call inside it (the write lock up front)."""
        with self.db.transaction():
            yield self

    def is_leader(self, job: str) -> bool:
        """One collector process per SQLite file is the supported deployment, so it leads
        every periodic job (several processes on one shared SQLite file would each run them:
        use PostgreSQL for more than one collector)."""
        return True

    def maintain(self, now_ms: int | None = None) -> None:
        """Nothing to maintain on SQLite (no partitions)."""

    def after_purge(self) -> None:
        # The WAL still holds earlier images of the purged pages: checkpoint them into the
        # (securely deleted) main file and truncate the WAL to zero bytes.
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        self.db.close()


def open_store(db_path: Path, data_dir: Path | None = None, busy_timeout_ms: int = 5000,
               migrate: bool = True) -> SqliteStore:
    store = SqliteStore(db_path, data_dir, busy_timeout_ms)
    if migrate:
        store.migrate()
    return store
