"""The trust-scale backend: every repository over PostgreSQL (psycopg 3 with a pool).

The SQL is the repositories' own (collector/store/repos/), shared with SQLite. What is
PostgreSQL's own lives here and in collector/store/pg_schema/:

* migrations (plain .sql files under an advisory lock) and monthly partitions for captures
  and audit, created ahead by :meth:`PostgresStore.maintain_partitions`;
* capture-id uniqueness across partitions and across collectors (``capture_ids``), with
  ingest serialised per capture id and per (device, user, rule) by transaction-scoped
  advisory locks, so two collectors never store one capture twice nor open two queue items
  for one key;
* queue item ids from the identity sequence;
* ``NOTIFY vigil_rules`` on a rule publish and ``NOTIFY vigil_queue`` on queue changes,
  delivered at commit; :class:`collector.store.pg_notify.Listener` waits on them;
* site scoping for console requests: :meth:`PostgresStore.scoped` (row-level security).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from collector.domain import triage
from collector.store import pg_schema
from collector.store.pg_notify import QUEUE_CHANNEL, RULES_CHANNEL, Listener
from collector.store.repos.audit import AuditRepo
from collector.store.repos.captures import CAPTURE_COLUMNS, CapturesRepo
from collector.store.repos.console import ConsoleRepos
from collector.store.repos.devices import DevicesRepo
from collector.store.repos.retention import RetentionRepo
from collector.store.repos.rules import RulesRepo
from collector.store.sql import PostgresDb

__all__ = ["SCOPED_ROLE", "PostgresStore", "open_postgres_store"]

#: The role a scoped (console) transaction runs as; created by pg_schema/0004_tenancy.sql.
SCOPED_ROLE = "vigil_scoped"
_CAPTURE_LOCKS = 1986356842  # advisory lock class for capture ids (pg_advisory_xact_lock(a, b))
_QUEUE_KEY_LOCKS = 1986356843  # ... and for (device, user, rule) queue keys
_SITE_ID = re.compile(r"^[^,\s]+$")
_NOTIFY_MAX = 7900  # NOTIFY payloads must stay under 8000 bytes
_COL = {c: i for i, c in enumerate(CAPTURE_COLUMNS)}
_CHUNK = 1000
_CAPTURE_TYPES = {"time_ms": "bigint", "last_time_ms": "bigint", "count": "int",
                  "severity": "int", "rules_version": "int", "received_at": "bigint",
                  "queue_item_id": "bigint", "exemption_id": "bigint",
                  "score": "double precision"}  # every other capture column is text
_ITEM_INSERT = (("id", "bigint"), ("site_id", "text"), ("device_id", "text"),
                ("os_user", "text"), ("rule_id", "text"), ("category", "text"),
                ("severity", "int"), ("priority", "int"), ("pinned", "int"),
                ("refer_police", "int"), ("count", "int"), ("first_time_ms", "bigint"),
                ("last_time_ms", "bigint"), ("latest_capture_id", "text"),
                ("created_at", "bigint"), ("updated_at", "bigint"))


def _unnest(columns: Sequence[tuple[str, str]]) -> str:
    """``unnest(?::t1[], ?::t2[], ...) AS u(c1, c2, ...)``: a whole batch as one parameter
    per column, so a batch is one statement and one round trip (not one per row)."""
    arrays = ", ".join(f"?::{t}[]" for _, t in columns)
    return f"unnest({arrays}) AS u({', '.join(c for c, _ in columns)})"


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    return [[r[i] for r in rows] for i in range(width)]


class PostgresStore(AuditRepo, DevicesRepo, CapturesRepo, RulesRepo, RetentionRepo,
                    ConsoleRepos):
    """Thread-safe: each call borrows a pooled connection; a :meth:`transaction` keeps one
    per thread until it commits. Several collector processes may share one database."""

    backend = "postgresql"
    db: PostgresDb

    def __init__(self, url: str, data_dir: Path, trust_id: str = "default",
                 pool_min: int = 1, pool_max: int = 8, months_ahead: int = 3,
                 clock: Callable[[], float] = time.time) -> None:
        if not _SITE_ID.match(trust_id):
            raise ValueError(f"trust id {trust_id!r} must be one word without commas "
                             "(config key store.trust_id)")
        self.url = url
        self.data_dir = Path(data_dir)
        self.trust_id = trust_id
        self.months_ahead = months_ahead
        self.clock = clock
        self.db = PostgresDb(url, min_size=pool_min, max_size=pool_max,
                             settings={"vigil.trust": trust_id})
        self._leader_conn: Any = None
        self._leader_held: set[str] = set()
        self._leader_lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------------------
    def migrate(self) -> list[str]:
        """Apply pending migrations (idempotent, safe with several collectors starting at
        once), then make sure this month's and the next partitions exist."""
        with self.db.pool.connection() as conn:
            applied = pg_schema.migrate(conn)
        self.maintain_partitions()
        return applied

    def maintain_partitions(self, now_ms: int | None = None, months: int | None = None
                            ) -> int:
        """Create the monthly partitions (captures, audit) of the month holding ``now_ms``
        and the ``months - 1`` after it; returns how many were created. Run at start and
        from the retention loop, so a new month's partition exists before it is needed."""
        now_ms = int(self.clock() * 1000) if now_ms is None else now_ms
        return int(self.db.scalar("SELECT vigil_ensure_partitions(?, ?)",
                                  (now_ms, months or self.months_ahead)))

    def maintain(self, now_ms: int | None = None) -> None:
        """Periodic upkeep (the retention loop's leader runs it): next months' partitions."""
        self.maintain_partitions(now_ms)

    def is_leader(self, job: str) -> bool:
        """True while this process holds the trust-wide lock for ``job`` (escalation e-mails,
        the scheduled purge): a session advisory lock on a dedicated connection, so exactly one
        of N collectors runs each job, and another takes over within one interval when that
        process dies (its connection, and with it the lock, goes away)."""
        import psycopg

        with self._leader_lock:
            try:
                if self._leader_conn is None or self._leader_conn.closed:
                    self._leader_conn = psycopg.connect(self.url, autocommit=True,
                                                        connect_timeout=5)
                    self._leader_held.clear()
                if job in self._leader_held:
                    self._leader_conn.execute("SELECT 1")  # still connected = still held
                    return True
                got = self._leader_conn.execute(
                    "SELECT pg_try_advisory_lock(hashtext(%s))",
                    (f"vigil:{self.trust_id}:{job}",)).fetchone()[0]
            except psycopg.OperationalError:
                self._leader_conn = None
                self._leader_held.clear()
                return False
            if got:
                self._leader_held.add(job)
            return bool(got)

    @contextmanager
    def transaction(self) -> Iterator[PostgresStore]:
        """One transaction over every repository call inside it (this thread's connection)."""
        with self.db.transaction():
            yield self

    @contextmanager
    def scoped(self, sites: Sequence[str] | str) -> Iterator[PostgresStore]:
        """One transaction that sees (and may write) only these sites' rows: row-level
        security under the ``vigil_scoped`` role. ``"*"`` means every site of the trust.
        A console request wraps its store calls in this; the collector's own calls (ingest,
        alerts, retention) run unscoped as the tables' owner."""
        if isinstance(sites, str):
            if sites != "*":
                raise ValueError("sites is a list of site ids, or '*' for every site")
            value = "*"
        else:
            bad = [s for s in sites if not _SITE_ID.match(s) or s == "*"]
            if bad:
                raise ValueError(f"site ids must be single words without commas: {bad}")
            value = ",".join(sites)
        with self.db.scoped(SCOPED_ROLE, {"vigil.sites": value}):
            yield self

    def listener(self, channels: Sequence[str] = (RULES_CHANNEL, QUEUE_CHANNEL)) -> Listener:
        """A :class:`Listener` on its own connection to this database (start it in the
        event loop that awaits it)."""
        return Listener(self.url, channels, settings={"vigil.trust": self.trust_id})

    def close(self) -> None:
        with self._leader_lock:
            if self._leader_conn is not None:
                self._leader_conn.close()
                self._leader_conn = None
        self.db.close()

    # -- backend hooks the repositories call --------------------------------------------------
    def allocate_queue_item_ids(self, n: int) -> list[int]:
        return [int(r["id"]) for r in self.db.rows(
            "SELECT nextval(pg_get_serial_sequence('queue_items', 'id')) AS id "
            "FROM generate_series(1, ?)", (n,))]

    def queue_changed(self, item_ids: Sequence[int]) -> None:
        payload = ",".join(str(i) for i in sorted(set(item_ids)))
        if len(payload) > _NOTIFY_MAX:
            payload = ""  # "many": listeners re-read the queue
        self.db.execute("SELECT pg_notify(?, ?)", (QUEUE_CHANNEL, payload))

    def rules_published(self, version: int) -> None:
        self.db.execute("SELECT pg_notify(?, ?)", (RULES_CHANNEL, str(version)))

    def after_purge(self) -> None:
        # Dead row versions of purged rows stay in the pages until VACUUM removes them.
        if self.db.in_transaction():
            return  # VACUUM cannot run inside a transaction; the autovacuum daemon will
        for table in ("captures", "capture_ids", "queue_items", "queue_actions", "alerts",
                      "audit"):
            self.db.execute(f"VACUUM {table}")

    # -- ingest on several collectors --------------------------------------------------------
    def _lock(self, space: int, keys: Iterable[str]) -> None:
        """Transaction-scoped advisory locks on these keys, taken in one sorted order by
        every collector (no deadlock between ingest batches); a no-op outside a transaction."""
        ks = sorted(set(keys))
        if ks:
            self.db.execute(
                "SELECT COUNT(pg_advisory_xact_lock(?, k)) FROM (SELECT DISTINCT hashtext(x) "
                "AS k FROM unnest(?::text[]) AS x ORDER BY k) AS s", (space, ks))

    def capture_owners(self, capture_ids: Sequence[str]) -> dict[str, str]:
        # Waits for any other collector's batch that holds one of these ids to commit, then
        # sees what it stored: a redelivery to two collectors is stored once, acked by both.
        self._lock(_CAPTURE_LOCKS, capture_ids)
        out: dict[str, str] = {}
        ids = sorted(set(capture_ids))
        for i in range(0, len(ids), _CHUNK):
            for r in self.db.rows("SELECT id, device_id FROM capture_ids WHERE id = ANY(?)",
                                  (ids[i: i + _CHUNK],)):
                out[r["id"]] = r["device_id"]
        return out

    def latest_items(self, keys: Iterable[triage.Key]) -> dict[triage.Key, triage.OpenItem]:
        ks = list(keys)
        self._lock(_QUEUE_KEY_LOCKS, ("\x1f".join(k) for k in ks))
        return super().latest_items(ks)

    def insert_captures(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Claim each id in ``capture_ids`` first; only claimed rows are stored, so even
        without the advisory locks a capture id can never be stored twice."""
        claimed: set[str] = set()
        for i in range(0, len(rows), _CHUNK):
            chunk = rows[i: i + _CHUNK]
            claimed |= {r["id"] for r in self.db.rows(
                "INSERT INTO capture_ids (id, device_id, site_id, received_at) "
                "SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::bigint[]) "
                "ON CONFLICT (id) DO NOTHING RETURNING id",
                ([r[_COL["id"]] for r in chunk], [r[_COL["device_id"]] for r in chunk],
                 [r[_COL["site_id"]] for r in chunk], [r[_COL["received_at"]] for r in chunk]))}
        mine = [r for r in rows if r[_COL["id"]] in claimed]
        cols = [(c, _CAPTURE_TYPES.get(c, "text")) for c in CAPTURE_COLUMNS]
        sql = (f"INSERT INTO captures ({', '.join(CAPTURE_COLUMNS)}) "
               f"SELECT * FROM {_unnest(cols)}")
        for i in range(0, len(mine), _CHUNK):
            self.db.execute(sql, _columns(mine[i: i + _CHUNK], len(cols)))

    def insert_queue_items(self, items: Sequence[triage.PlannedItem], now_ms: int
                           ) -> list[int]:
        if not items:
            return []
        ids = self.allocate_queue_item_ids(len(items))
        rows = [(i, it.site_id, *it.key, it.category, it.severity, it.priority, int(it.pinned),
                 int(it.refer_police), it.count, it.first_time_ms, it.last_time_ms,
                 it.latest_capture_id, now_ms, now_ms) for i, it in zip(ids, items, strict=True)]
        names = ", ".join(c for c, _ in _ITEM_INSERT)
        for i in range(0, len(rows), _CHUNK):
            self.db.execute(f"INSERT INTO queue_items ({names}) SELECT * FROM "
                            f"{_unnest(_ITEM_INSERT)}",
                            _columns(rows[i: i + _CHUNK], len(_ITEM_INSERT)))
        return ids

    def update_queue_items(self, items: Sequence[triage.PlannedItem], now_ms: int) -> None:
        cols = (("count", "int"), ("severity", "int"), ("priority", "int"), ("pinned", "int"),
                ("refer_police", "int"), ("first_time_ms", "bigint"),
                ("last_time_ms", "bigint"), ("latest_capture_id", "text"), ("id", "bigint"))
        rows = [(it.count, it.severity, it.priority, int(it.pinned), int(it.refer_police),
                 it.first_time_ms, it.last_time_ms, it.latest_capture_id, it.existing_id)
                for it in items]
        for i in range(0, len(rows), _CHUNK):
            self.db.execute(
                "UPDATE queue_items AS q SET count = u.count, severity = u.severity, "
                "priority = u.priority, pinned = u.pinned, "
                "refer_police = GREATEST(q.refer_police, u.refer_police), "
                "first_time_ms = u.first_time_ms, last_time_ms = u.last_time_ms, "
                f"latest_capture_id = u.latest_capture_id, updated_at = ? FROM {_unnest(cols)} "
                "WHERE q.id = u.id", [now_ms, *_columns(rows[i: i + _CHUNK], len(cols))])


def open_postgres_store(url: str, data_dir: Path, trust_id: str = "default",
                        pool_min: int = 1, pool_max: int = 8, migrate: bool = True
                        ) -> PostgresStore:
    """A store on the database at ``url`` (``postgresql://user@host:port/db``), migrated
    unless ``migrate`` is False. ``data_dir`` holds the screenshot files and their key."""
    store = PostgresStore(url, data_dir, trust_id, pool_min, pool_max)
    try:
        if migrate:
            store.migrate()
    except BaseException:
        store.close()
        raise
    return store
