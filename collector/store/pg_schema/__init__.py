"""PostgreSQL migrations: the ``NNNN_name.sql`` files beside this module, applied in order.

Each file runs once, in one transaction, and is recorded in ``schema_migrations``. The whole
run holds a transaction-scoped advisory lock, so collectors starting together wait for each
other instead of racing; a run with nothing pending changes nothing. Add a new file to change
the schema; never edit one that has shipped (the same rule as collector/store/schema.py).
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

__all__ = ["MIGRATION_LOCK", "migrate", "migration_names"]

#: pg_advisory_xact_lock(key1, key2) taken by every migration run ('vigi', 1).
MIGRATION_LOCK = (1986356841, 1)


def migration_names() -> list[str]:
    """Every migration shipped, in the order it applies."""
    return sorted(f.name for f in resources.files(__package__).iterdir()
                  if f.name.endswith(".sql"))


def migrate(conn: Any) -> list[str]:
    """Apply every pending migration on this psycopg connection (autocommit mode); returns
    the names applied now."""
    from psycopg.rows import tuple_row

    applied_now: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATION_LOCK)
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                     "name TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        with conn.cursor(row_factory=tuple_row) as cur:
            done = {r[0] for r in cur.execute("SELECT name FROM schema_migrations")}
        for name in migration_names():
            if name in done:
                continue
            text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
            conn.execute(text)  # no parameters: the simple protocol runs the whole script
            conn.execute("INSERT INTO schema_migrations (name, applied_at) VALUES (%s, %s)",
                         (name, int(time.time() * 1000)))
            applied_now.append(name)
    return applied_now
