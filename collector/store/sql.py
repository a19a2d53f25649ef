"""One small SQL seam over SQLite (sqlite3) and PostgreSQL (psycopg 3), so each repository's
SQL is written once and runs on both backends.

Repositories write portable SQL with ``?`` placeholders and call :class:`Db`:

* ``db.rows(sql, params)`` -> list of dicts, ``db.one(...)`` -> dict or None,
  ``db.scalar(...)``, ``db.execute(...)`` -> rowcount, ``db.executemany(...)``;
* ``with db.transaction():`` groups statements into one transaction (``BEGIN IMMEDIATE`` on
  SQLite, so the write lock is taken up front; ``BEGIN`` on PostgreSQL). Nested calls join the
  outer transaction. Outside one, each statement commits on its own.

Portable means: ``INSERT ... ON CONFLICT (...) DO NOTHING / DO UPDATE``, ``RETURNING`` instead
of ``lastrowid``, row values ``(a, b) IN (VALUES (?, ?), ...)``, ``COUNT(x)`` rather than
summing booleans, ``MAX(a, b)`` written as :meth:`Db.greatest`, flags stored as integers 0/1,
JSON stored as text, ``NULLS FIRST`` / ``NULLS LAST`` spelled out when a nullable column is
sorted (SQLite puts NULL first, PostgreSQL last). ``%`` in SQL text is fine (it is escaped
for psycopg here); pass LIKE patterns as parameters. A busy, locked, full or unreachable
database raises :class:`~collector.store.base.StoreBusy`, which every caller treats as "retry
later, nothing was written".
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from collector.store.base import StoreBusy

__all__ = ["Db", "PostgresDb", "SqliteDb", "in_list", "to_pyformat"]

Params = Sequence[Any]
_BUSY_MARKERS = ("locked", "busy", "full", "disk i/o", "readonly", "read-only")


def in_list(column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    """``column IN (?, ?, ...)`` and its parameters; an empty list matches nothing."""
    if not values:
        return "1 = 0", []
    return f"{column} IN ({', '.join('?' * len(values))})", list(values)


@lru_cache(maxsize=2048)
def to_pyformat(sql: str) -> str:
    """``?`` placeholders -> ``%s`` (psycopg), ``%`` -> ``%%``; string literals untouched."""
    out: list[str] = []
    for part in re.split(r"('(?:[^']|'')*')", sql):
        if part.startswith("'"):
            out.append(part.replace("%", "%%"))
        else:
            out.append(part.replace("%", "%%").replace("?", "%s"))
    return "".join(out)


class Db(Protocol):
    """What a repository needs from a database connection."""

    dialect: str  # "sqlite" | "postgresql"

    def rows(self, sql: str, params: Params = ()) -> list[dict[str, Any]]: ...
    def one(self, sql: str, params: Params = ()) -> dict[str, Any] | None: ...
    def scalar(self, sql: str, params: Params = ()) -> Any: ...
    def execute(self, sql: str, params: Params = ()) -> int: ...
    def executemany(self, sql: str, seq: Iterable[Params]) -> None: ...
    def transaction(self) -> Any: ...  # a context manager yielding the Db
    def greatest(self, *exprs: str) -> str: ...
    def close(self) -> None: ...


class SqliteDb:
    """One sqlite3 connection (autocommit mode), shared between threads under a lock."""

    dialect = "sqlite"

    def __init__(self, path: Path, busy_timeout_ms: int = 5000,
                 pragmas: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                    timeout=busy_timeout_ms / 1000)
        self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        for p in pragmas:
            self.conn.execute(f"PRAGMA {p}")
        self.lock = threading.RLock()

    @contextmanager
    def _guard(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            try:
                yield self.conn
            except sqlite3.OperationalError as exc:
                if any(m in str(exc).lower() for m in _BUSY_MARKERS):
                    raise StoreBusy(f"store unavailable: {exc}") from exc
                raise

    def rows(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        with self._guard() as conn:
            cur = conn.execute(sql, params)
            cols = [d[0] for d in cur.description or ()]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def one(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Params = ()) -> Any:
        with self._guard() as conn:
            row = conn.execute(sql, params).fetchone()
            return row[0] if row else None

    def execute(self, sql: str, params: Params = ()) -> int:
        with self._guard() as conn:
            return conn.execute(sql, params).rowcount

    def executemany(self, sql: str, seq: Iterable[Params]) -> None:
        with self._guard() as conn:
            conn.executemany(sql, seq)

    @contextmanager
    def transaction(self) -> Iterator[SqliteDb]:
        # BEGIN IMMEDIATE takes the write lock up front, waiting up to busy_timeout. A deferred
        # BEGIN that reads first cannot wait when it upgrades to a write after another
        # connection committed meanwhile: SQLite fails it at once (SQLITE_BUSY_SNAPSHOT).
        with self._guard() as conn:
            if conn.in_transaction:
                yield self
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield self
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def greatest(self, *exprs: str) -> str:
        return f"MAX({', '.join(exprs)})"

    def close(self) -> None:
        with self.lock:
            self.conn.close()


class PostgresDb:
    """A psycopg 3 connection pool. Outside a transaction each call borrows a connection in
    autocommit mode; inside :meth:`transaction` the thread keeps one connection until commit.

    ``settings`` become session settings of every pooled connection (PostgresStore passes
    ``vigil.trust``). NUMERIC results (``SUM`` of a BIGINT column, ``AVG``) come back as
    int or float, as they do from SQLite, never as Decimal.
    """

    dialect = "postgresql"

    def __init__(self, conninfo: str, min_size: int = 1, max_size: int = 8,
                 settings: dict[str, str] | None = None, timeout_s: float = 30.0) -> None:
        import psycopg
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self._psycopg = psycopg
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
        if settings:
            kwargs["options"] = " ".join(f"-c {k}={_option_value(v)}"
                                         for k, v in settings.items())
        # One direct connection first: an unreachable or refusing server fails at once with
        # libpq's own reason (the pool would retry quietly for timeout_s and log each try).
        try:
            psycopg.connect(conninfo, connect_timeout=max(1, int(min(timeout_s, 10))),
                            **kwargs).close()
        except psycopg.OperationalError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            raise StoreBusy(f"store unavailable: cannot connect to PostgreSQL ({reason})") \
                from None
        self.pool = ConnectionPool(conninfo, min_size=min_size, max_size=max_size,
                                   kwargs=kwargs, open=False, name="vigil",
                                   configure=_configure, timeout=timeout_s)
        try:
            self.pool.open(wait=True, timeout=timeout_s)
        except self._psycopg.OperationalError as exc:
            self.pool.close()
            raise StoreBusy(f"store unavailable: cannot connect to PostgreSQL ({exc})") \
                from exc
        self._local = threading.local()

    @contextmanager
    def _conn(self) -> Iterator[Any]:
        pinned = getattr(self._local, "conn", None)
        errors = self._psycopg.errors
        try:
            if pinned is not None:
                yield pinned
                return
            with self.pool.connection() as conn:
                yield conn
        except errors.DiskFull as exc:
            raise StoreBusy(f"store unavailable (disk full): {exc}") from exc
        except (errors.SerializationFailure, errors.DeadlockDetected) as exc:
            raise StoreBusy(f"store busy ({type(exc).__name__}): {exc}") from exc
        except self._psycopg.OperationalError as exc:
            # connection lost, server shutting down, lock or statement timeout, pool timeout
            raise StoreBusy(f"store unavailable: {exc}") from exc

    def rows(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        with self._conn() as conn:
            cur = conn.execute(to_pyformat(sql), params)
            return list(cur.fetchall()) if cur.description else []

    def one(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Params = ()) -> Any:
        row = self.one(sql, params)
        return next(iter(row.values())) if row else None

    def execute(self, sql: str, params: Params = ()) -> int:
        with self._conn() as conn:
            return int(conn.execute(to_pyformat(sql), params).rowcount)

    def executemany(self, sql: str, seq: Iterable[Params]) -> None:
        with self._conn() as conn, conn.cursor() as cur:
            cur.executemany(to_pyformat(sql), list(seq))

    @contextmanager
    def transaction(self) -> Iterator[PostgresDb]:
        if getattr(self._local, "conn", None) is not None:
            yield self
            return
        with self._conn() as conn, conn.transaction():
            self._local.conn = conn
            try:
                yield self
            finally:
                self._local.conn = None

    @contextmanager
    def scoped(self, role: str, settings: dict[str, str]) -> Iterator[PostgresDb]:
        """One transaction as ``role`` with these session settings (``SET LOCAL``): row-level
        security then applies to every statement inside. Never nested in a transaction,
        so the role cannot leak into an outer one."""
        if getattr(self._local, "conn", None) is not None:
            raise RuntimeError("a scoped transaction cannot be nested in another transaction")
        from psycopg import sql as psql

        with self.transaction():
            conn = self._local.conn
            with self._conn():
                conn.execute(psql.SQL("SET LOCAL ROLE {}").format(psql.Identifier(role)))
                for k, v in settings.items():
                    conn.execute("SELECT set_config(%s, %s, true)", (k, v))
            yield self

    def in_transaction(self) -> bool:
        return getattr(self._local, "conn", None) is not None

    def greatest(self, *exprs: str) -> str:
        return f"GREATEST({', '.join(exprs)})"

    def close(self) -> None:
        self.pool.close()


def _option_value(v: str) -> str:
    # libpq "options": spaces and backslashes are escaped with a backslash
    return v.replace("\\", "\\\\").replace(" ", "\\ ")


def _configure(conn: Any) -> None:
    """Per pooled connection: NUMERIC -> int or float (as SQLite returns them)."""
    conn.adapters.register_loader("numeric", _numeric_loader())


@lru_cache(maxsize=1)
def _numeric_loader() -> type:
    from psycopg.adapt import Loader

    class NumericLoader(Loader):
        def load(self, data: Any) -> int | float:
            text = bytes(data).decode("ascii")
            if text in ("NaN", "Infinity", "-Infinity"):
                return float(text)
            return int(text) if "." not in text and "e" not in text.lower() else float(text)

    return NumericLoader
