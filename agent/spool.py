"""The durable outbox: every capture goes here before anything else happens.

A SQLite file in WAL mode with a schema-version table. It is bounded in bytes: when a new
capture does not fit, the lowest severity is dropped first (oldest first within a severity),
severity 4-5 are never dropped (if only they remain the bound is exceeded and counted as
``over_bound``), and every drop is counted by reason in a persisted table that heartbeats
report. Eviction is all-or-nothing: victims are chosen before anything is deleted, so a
newcomer that would be dropped anyway never costs an older capture. Rows are deleted only
when the collector acknowledges them (:meth:`Spool.ack`), rejects them as permanently
invalid (:meth:`Spool.reject`, counted) or refuses them twice (:meth:`Spool.quarantine`,
counted as ``quarantined:<reason>``); deletes overwrite the freed pages
(``secure_delete``) and each ack checkpoints and truncates the WAL, so an acknowledged
capture's context is not left readable on the laptop.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from proto import vigil_pb2 as pb

__all__ = ["NEVER_DROP_SEVERITY", "SCHEMA_VERSION", "Spool", "SpoolStats", "read_stats"]

SCHEMA_VERSION = 1
#: Captures at or above this severity are never dropped.
NEVER_DROP_SEVERITY = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS captures (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    severity INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS captures_by_severity ON captures (severity, seq);
CREATE TABLE IF NOT EXISTS drops (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
"""


class SpoolStats:
    """Depth, bytes and drop counts at one moment."""

    __slots__ = ("bytes", "depth", "drops")

    def __init__(self, depth: int, nbytes: int, drops: dict[str, int]) -> None:
        self.depth, self.bytes, self.drops = depth, nbytes, drops


class Spool:
    """Thread-safe outbox over one SQLite connection."""

    def __init__(self, path: Path, max_bytes: int = 50 * 1024 * 1024,
                 on_put: Callable[[], None] | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.on_put = on_put
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # Deleted captures (their context) are overwritten, not just unlinked from the tree.
        self._db.execute("PRAGMA secure_delete=ON")
        with self._lock:
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                self._db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise RuntimeError(f"{path}: spool schema {row[0]} is newer than this agent "
                                   f"({SCHEMA_VERSION}); upgrade the agent")
            # Anything marked sent by a previous process was never acknowledged.
            self._db.execute("UPDATE captures SET sent = 0 WHERE sent = 1")
            # Bytes held, kept in step with every insert/update/delete below so that a put
            # costs the same with 10 or 100,000 captures waiting (no SUM over the table).
            self._total = self._bytes()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing -------------------------------------------------------------------------
    def put(self, capture: pb.Capture) -> bool:
        """Store *capture*. Returns False when it was itself dropped (counted) to stay bounded."""
        payload = capture.SerializeToString()
        size, sev = len(payload), int(capture.severity)
        with self._lock, self._tx():
            total = self._total
            if total + size > self.max_bytes:
                # Choose every victim first and delete only if the newcomer then fits (or is
                # severity 4-5, which is always kept): never lose a capture for nothing.
                below = sev if sev < NEVER_DROP_SEVERITY else NEVER_DROP_SEVERITY
                victims: list[tuple[int, int]] = []
                freed = 0
                for seq, vsize in self._db.execute(
                        "SELECT seq, size FROM captures WHERE severity < ? "
                        "ORDER BY severity, seq", (below,)):
                    if total - freed + size <= self.max_bytes:
                        break
                    victims.append((seq, vsize))
                    freed += vsize
                fits = total - freed + size <= self.max_bytes
                if not fits and sev < NEVER_DROP_SEVERITY:
                    self._count("spool_full")
                    return False
                self._db.executemany("DELETE FROM captures WHERE seq = ?",
                                     [(v[0],) for v in victims])
                if victims:
                    self._count("spool_full", len(victims))
                if not fits:
                    self._count("over_bound")
                total -= freed
            cur = self._db.execute(
                "INSERT OR IGNORE INTO captures (id, severity, size, payload) VALUES (?,?,?,?)",
                (capture.id, sev, size, payload))
            self._total = total + (size if cur.rowcount == 1 else 0)
        if self.on_put is not None:
            self.on_put()
        return True

    def bump(self, capture_id: str, last_time_ms: int) -> bool:
        """Merge a repeat into an unsent capture: count += 1. False if sent or gone."""
        with self._lock, self._tx():
            row = self._db.execute(
                "SELECT payload, size FROM captures WHERE id = ? AND sent = 0",
                (capture_id,)).fetchone()
            if row is None:
                return False
            cap = pb.Capture.FromString(row[0])
            cap.count = max(cap.count, 1) + 1
            cap.last_time_unix_ms = last_time_ms
            payload = cap.SerializeToString()
            self._db.execute("UPDATE captures SET payload = ?, size = ? WHERE id = ?",
                             (payload, len(payload), capture_id))
            self._total += len(payload) - int(row[1])
        return True

    def count_drop(self, reason: str, n: int = 1) -> None:
        with self._lock, self._tx():
            self._count(reason, n)

    # -- uplink side -----------------------------------------------------------------------
    def next_batch(self, limit: int) -> list[pb.Capture]:
        """Unsent captures, most severe first, and mark them sent (in flight)."""
        with self._lock, self._tx():
            rows = self._db.execute(
                "SELECT seq, payload FROM captures WHERE sent = 0 "
                "ORDER BY severity DESC, seq LIMIT ?", (limit,)).fetchall()
            self._db.executemany("UPDATE captures SET sent = 1 WHERE seq = ?",
                                 [(r[0],) for r in rows])
        return [pb.Capture.FromString(r[1]) for r in rows]

    def unmark_sent(self) -> None:
        """A stream ended: everything in flight goes back to unsent (ids make resend safe)."""
        with self._lock:
            self._db.execute("UPDATE captures SET sent = 0 WHERE sent = 1")

    def ack(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        deleted = 0
        with self._lock:
            with self._tx():
                for capture_id in ids:
                    row = self._db.execute("DELETE FROM captures WHERE id = ? RETURNING size",
                                           (capture_id,)).fetchone()
                    if row is not None:
                        deleted += 1
                        self._total -= int(row[0])
            if deleted:
                self._checkpoint()
        return deleted

    def _checkpoint(self) -> None:
        """Copy the WAL into the (secure-deleted) file and truncate it: the contexts of
        acknowledged captures must not stay readable in old WAL frames."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def reject(self, capture_id: str, reason: str, prefix: str = "rejected") -> None:
        with self._lock, self._tx():
            row = self._db.execute("DELETE FROM captures WHERE id = ? RETURNING size",
                                   (capture_id,)).fetchone()
            if row is not None:
                self._total -= int(row[0])
            self._count(f"{prefix}:{reason or 'unspecified'}")
        with self._lock:
            self._checkpoint()

    def quarantine(self, capture_id: str, reason: str) -> None:
        """The collector refused this capture twice: stop resending it (a capture that can
        never be stored must not block the outbox), counted as ``quarantined:<reason>``."""
        self.reject(capture_id, reason, prefix="quarantined")

    def unmark(self, ids: Iterable[str]) -> None:
        """Put these in-flight captures back to unsent (a refusal said: resend later)."""
        with self._lock, self._tx():
            self._db.executemany("UPDATE captures SET sent = 0 WHERE id = ?",
                                 [(i,) for i in ids])

    # -- reading ---------------------------------------------------------------------------
    def stats(self) -> SpoolStats:
        with self._lock:
            depth, nbytes = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM captures").fetchone()
            drops = dict(self._db.execute("SELECT reason, count FROM drops").fetchall())
        return SpoolStats(int(depth), int(nbytes), {str(k): int(v) for k, v in drops.items()})

    def all(self) -> list[pb.Capture]:
        with self._lock:
            rows = self._db.execute("SELECT payload FROM captures ORDER BY seq").fetchall()
        return [pb.Capture.FromString(r[0]) for r in rows]

    # -- helpers ---------------------------------------------------------------------------
    def _bytes(self) -> int:
        return int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM captures").fetchone()[0])

    def _count(self, reason: str, n: int = 1) -> None:
        self._db.execute("INSERT INTO drops (reason, count) VALUES (?, ?) ON CONFLICT(reason) "
                         "DO UPDATE SET count = count + excluded.count", (reason, n))

    def _tx(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def read_stats(path: Path) -> SpoolStats | None:
    """Read depth and drops from a spool another process has open (for ``status``)."""
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        depth, nbytes = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM captures").fetchone()
        drops = dict(db.execute("SELECT reason, count FROM drops").fetchall())
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return SpoolStats(int(depth), int(nbytes), {str(k): int(v) for k, v in drops.items()})
