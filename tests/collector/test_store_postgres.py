"""The shared store suite on a real PostgreSQL server, plus what only PostgreSQL does:
row-level security per site, monthly partitions, one capture stored once by two collectors,
NOTIFY on a rule publish, migrations that two collectors may run at once."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from collector.services.ingest import ingest
from collector.store import pg_schema
from collector.store.base import NewCapture, Store
from collector.store.postgres import PostgresStore, open_postgres_store
from tests.collector.store_suite import DAY, POLICY, T0, StoreSuite, cap
from tests.support.postgres import PgServer

_WAIT_S = 30.0  # upper bound on waiting for another connection's state; never a sleep


class TestPostgresStore(StoreSuite):
    @pytest.fixture
    def store(self, tmp_path: Path, pg_url: str) -> Iterator[Store]:  # type: ignore[override]
        s = open_postgres_store(pg_url, tmp_path)
        yield s
        s.close()


@pytest.fixture
def pg(tmp_path: Path, pg_url: str) -> Iterator[PostgresStore]:
    s = open_postgres_store(pg_url, tmp_path)
    yield s
    s.close()


def _two_sites(store: PostgresStore) -> None:
    for site, dev in (("s1", "d-1"), ("s2", "d-2")):
        store.ensure_site(site, f"School {site}", T0)
        store.ensure_group(site, "g1", "secondary")
        _, secret = store.create_token(site, "g1", 5, T0 + DAY, "test", T0)
        store.enrol_device(secret, dev, f"pc-{dev}", "linux", "1.0", dev, T0)


def _at(site: str, c: NewCapture) -> NewCapture:
    return dataclasses.replace(c, site_id=site)


def _month_ms(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)


def _wait_until(cond: object, what: str) -> None:
    """Poll a condition on the database (another backend's state has no event to wait on)."""
    deadline = time.monotonic() + _WAIT_S
    ev = threading.Event()
    while not callable(cond) or not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        ev.wait(0.01)


def test_rls_hides_another_sites_rows_from_a_scoped_session(pg: PostgresStore) -> None:
    _two_sites(pg)
    r1 = ingest(pg, [_at("s1", cap(1, device="d-1"))], T0, POLICY)
    r2 = ingest(pg, [_at("s2", cap(2, device="d-2"))], T0, POLICY)
    item1, item2 = r1.items[0].id, r2.items[0].id
    pg.audit("dsl2", "capture.view", "c2", "s2", {})

    with pg.scoped(["s1"]):
        assert [d.id for d in pg.list_devices()] == ["d-1"]
        assert pg.get_device("d-2") is None
        assert pg.get_queue_item(item1) is not None and pg.get_queue_item(item2) is None
        assert pg.capture_ids_for_item(item2) == []
        assert {r["site_id"] for r in pg.audit_rows()} == {"s1"}
        assert pg.get_site("s2") is None
        # writing into another site's rows is refused, not silently done
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            pg.ensure_group("s2", "g9", "primary")
    with pg.scoped(["s1", "s2"]):
        assert [d.id for d in pg.list_devices()] == ["d-1", "d-2"]
    with pg.scoped("*"):
        assert pg.get_queue_item(item2) is not None
    assert len(pg.list_devices()) == 2  # the collector's own (unscoped) view: everything
    with pytest.raises(ValueError):
        pg.scoped(["s1,s2"]).__enter__()


def test_a_new_months_partition_is_created_and_takes_that_months_captures(
    pg: PostgresStore,
) -> None:
    pg.ensure_site("s1", "School One", T0)
    pg.ensure_group("s1", "g1", "secondary")
    _, secret = pg.create_token("s1", "g1", 5, T0 + DAY, "test", T0)
    pg.enrol_device(secret, "d-1", "pc-1", "linux", "1.0", "abc", T0)
    june = _month_ms(2031, 6)
    # Before its partition exists a June capture lands in the default partition...
    ingest(pg, [dataclasses.replace(cap(1), received_at=june + 5)], june + 5, POLICY)
    assert pg.maintain_partitions(now_ms=june + DAY, months=2) == 4  # captures+audit, Jun+Jul
    assert pg.maintain_partitions(now_ms=june + DAY, months=2) == 0  # idempotent
    ingest(pg, [dataclasses.replace(cap(2), received_at=june + 9)], june + 9, POLICY)
    ingest(pg, [dataclasses.replace(cap(3), received_at=_month_ms(2031, 7) + 1)], june, POLICY)
    where = {r["id"]: r["part"] for r in pg.db.rows(
        "SELECT id, tableoid::regclass::text AS part FROM captures ORDER BY id")}
    # ... and is moved into June's partition when that is created; nothing is duplicated.
    assert where == {"c1": "captures_p203106", "c2": "captures_p203106",
                     "c3": "captures_p203107"}
    again = ingest(pg, [dataclasses.replace(cap(1), received_at=june + 99)], june, POLICY)
    assert again.existing_ids == ["c1"] and again.stored_ids == []
    assert pg.db.scalar("SELECT COUNT(*) FROM pg_class WHERE relname = 'audit_p203107'") == 1


def test_two_collectors_receiving_one_capture_store_it_once(pg_url: str, tmp_path: Path
                                                             ) -> None:
    a = open_postgres_store(pg_url, tmp_path)
    b = open_postgres_store(pg_url, tmp_path)
    try:
        a.ensure_site("s1", "School One", T0)
        a.ensure_group("s1", "g1", "secondary")
        _, secret = a.create_token("s1", "g1", 5, T0 + DAY, "test", T0)
        a.enrol_device(secret, "d-1", "pc-1", "linux", "1.0", "abc", T0)
        results = {}

        def collector_b() -> None:
            results["b"] = ingest(b, [dataclasses.replace(cap(1), received_at=T0 + 777)],
                                  T0 + 777, POLICY)

        with a.transaction():  # collector A's batch, not yet committed
            results["a"] = ingest(a, [cap(1)], T0, POLICY)
            t = threading.Thread(target=collector_b)
            t.start()
            # B's batch is now waiting for A's: its lock on capture id c1 is not granted
            _wait_until(lambda: a.db.scalar(
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ) == 1, "collector B to wait on collector A")
        t.join(_WAIT_S)
        assert not t.is_alive()
        assert results["a"].stored_ids == ["c1"]
        assert results["b"].stored_ids == [] and results["b"].existing_ids == ["c1"]
        assert a.db.scalar("SELECT COUNT(*) FROM captures WHERE id = 'c1'") == 1
        item = a.get_queue_item(results["a"].items[0].id)
        assert item is not None and item.count == 1
        assert a.db.scalar("SELECT COUNT(*) FROM queue_items") == 1
    finally:
        a.close()
        b.close()


def test_capture_ids_alone_refuse_a_second_copy(pg: PostgresStore) -> None:
    """Even a caller that skips the ownership check cannot store one id twice."""
    pg.ensure_site("s1", "School One", T0)
    rows = [pg.capture_row(cap(1), None, None, None),
            pg.capture_row(dataclasses.replace(cap(1), received_at=T0 + 60 * DAY), None, None,
                           None)]
    with pg.transaction():
        pg.insert_captures(rows[:1])
    with pg.transaction():
        pg.insert_captures(rows[1:])
    assert pg.db.scalar("SELECT COUNT(*) FROM captures") == 1


async def test_notify_reaches_a_listener_on_another_connection(pg_url: str, tmp_path: Path
                                                                ) -> None:
    publisher = open_postgres_store(pg_url, tmp_path)
    other = open_postgres_store(pg_url, tmp_path)  # another collector's store
    listener = other.listener()
    await listener.start()
    try:
        heard: list[str] = []
        listener.subscribe("vigil_queue", heard.append)
        waiting = asyncio.create_task(listener.wait_for("vigil_rules", timeout=_WAIT_S))
        await asyncio.to_thread(publisher.add_rule_version, 1, "h1", b"b1", "me", "", T0)
        assert await waiting == "1"
        publisher.ensure_site("s1", "School One", T0)
        publisher.ensure_group("s1", "g1", "secondary")
        _, secret = publisher.create_token("s1", "g1", 5, T0 + DAY, "test", T0)
        publisher.enrol_device(secret, "d-1", "pc-1", "linux", "1.0", "abc", T0)
        queue = asyncio.create_task(listener.wait_for("vigil_queue", timeout=_WAIT_S))
        r = await asyncio.to_thread(ingest, publisher, [cap(1)], T0, POLICY)
        assert await queue == str(r.items[0].id)
        assert heard == [str(r.items[0].id)]
        with pytest.raises(ValueError, match="not listening"):
            await listener.wait_for("elsewhere")
    finally:
        await listener.close()
        publisher.close()
        other.close()


def test_audit_is_append_only_on_postgres(pg: PostgresStore, pg_url: str) -> None:
    pg.audit("cli:me", "test.action", "x", None, {"k": 1})
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for stmt in ("UPDATE audit SET actor = 'x'", "DELETE FROM audit", "TRUNCATE audit"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(stmt)
    assert pg.audit_rows("test.action")[0]["actor"] == "cli:me"


def test_migrations_are_idempotent_and_safe_to_run_at_once(pg_server: PgServer) -> None:
    url = pg_server.create_database()
    errors: list[BaseException] = []
    applied: list[list[str]] = []
    start = threading.Barrier(2)

    def run() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                start.wait()
                applied.append(pg_schema.migrate(conn))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(_WAIT_S)
    assert errors == []
    assert sorted(map(len, applied)) == [0, len(pg_schema.migration_names())]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone() == (
            len(pg_schema.migration_names()),)
    pg_server.drop_database(url.rsplit("/", 1)[1])


def test_the_configured_store_is_postgres_for_a_postgres_url(pg_url: str, tmp_path: Path
                                                              ) -> None:
    from collector.config import Config, ConfigError
    from collector.store import SqliteStore, open_configured_store

    cfg = Config(data_dir=tmp_path)
    lite = open_configured_store(cfg)
    assert isinstance(lite, SqliteStore) and lite.db_path == tmp_path / "vigil.db"
    lite.close()
    cfg.store.url, cfg.store.trust_id = pg_url, "north-trust"
    pg = open_configured_store(cfg)
    try:
        assert isinstance(pg, PostgresStore)
        pg.ensure_site("s1", "School One", T0)
        assert pg.db.scalar("SELECT trust_id FROM sites") == "north-trust"
    finally:
        pg.close()
    with pytest.raises(ConfigError, match="store url"):
        open_configured_store(cfg, url="mysql://nope")


def test_the_postgres_schema_has_every_sqlite_column(pg: PostgresStore, tmp_path: Path) -> None:
    """The repositories' SQL is shared, so both schemas must agree column for column (PG
    adds only the tenant columns). Fails when a SQLite migration has no PG counterpart."""
    import sqlite3

    from collector.store.sqlite import open_store

    open_store(tmp_path / "lite.db", tmp_path).close()
    conn = sqlite3.connect(tmp_path / "lite.db")
    names = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
             if not t.startswith(("sqlite_", "_"))]
    lite = {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in names}
    assert {"captures", "audit", "console_sessions"} <= set(lite)
    conn.close()
    pgcols: dict[str, set[str]] = {}
    for r in pg.db.rows("SELECT c.table_name AS t, c.column_name AS c FROM "
                        "information_schema.columns c JOIN pg_class k ON k.relname = "
                        "c.table_name WHERE c.table_schema = 'public' AND NOT k.relispartition"):
        pgcols.setdefault(r["t"], set()).add(r["c"])
    problems = []
    for table, cols in sorted(lite.items()):
        if table not in pgcols:
            problems.append(f"table {table} missing on PostgreSQL")
            continue
        if cols - pgcols[table]:
            problems.append(f"{table}: columns {sorted(cols - pgcols[table])} missing on PG")
        extra = pgcols[table] - cols - {"trust_id", "site_id"}
        if extra:
            problems.append(f"{table}: PG-only columns {sorted(extra)}")
    assert problems == []


def _console_calls(s: PostgresStore | Store) -> list[object]:
    """Every console repository method once, over the same data; returns what each gave
    (minus ids and backend-only columns) so the two backends can be compared."""
    from collector.store.repos.queue import QueueQuery

    st: object = s
    assert isinstance(st, PostgresStore) or hasattr(st, "db_path")
    c: object = s
    _two_sites(c)  # type: ignore[arg-type]
    r = ingest(s, [_at("s1", cap(1, device="d-1", user="amy")),
                   _at("s1", cap(2, device="d-1", user="amy", rule="r2", sev=5))], T0, POLICY)
    qid = r.items[0].id
    x: Any = s
    out: list[object] = []
    keep = lambda rows: [{k: v for k, v in row.items()  # noqa: E731
                          if k not in ("trust_id", "site_id", "id")} for row in rows]
    x.upsert_pupils("s1", [("amy", "Amy Smith", "Year 9", "secondary"),
                           ("bob", "Bob Jones", "Year 7", "secondary")])
    x.add_account(username="dsl1", display_name="D One", email="d@x", password_hash="h",
                  role="dsl", sites=["s1"], now_ms=T0)
    out += [x.account_row("dsl1")["role"], x.account_taken("dsl1"), keep(x.account_list()),
            x.set_password_hash("dsl1", "h2"), x.site_ids()]
    x.add_session(token_hash="t", username="dsl1", csrf="c", ip="1", now_ms=T0,
                  expires_at=T0 + DAY)
    x.touch_session("t", T0 + 5)
    out += [x.session_row("t")["last_seen_at"]]
    x.add_known_device("k", "dsl1", T0)
    x.add_known_device("k", "dsl1", T0 + 9)
    out += [x.known_device("k", "dsl1", T0 + 1)]
    for ok, at in ((False, T0 + 1), (True, T0 + 2), (False, T0 + 3), (False, T0 + 4)):
        x.record_login_attempt(at=at, username="dsl1", ip="1", throttle_key="k", ok=ok)
    out += [x.login_failures("dsl1", "k", T0), x.login_failures("nobody", "k", T0)]
    x.prune_login_attempts(T0 + 2)
    x.prune_known_devices(T0)
    x.prune_sessions(T0, T0)
    out += [x.delete_sessions_of("dsl1")]
    x.delete_session("t")
    out += [keep([x.queue_item(qid)]), x.pupil_brief("s1", "amy"), x.device_brief("d-1"),
            keep(x.item_captures(qid, content=False)), keep(x.item_captures(qid, content=True)),
            x.site_assignees("s1"), x.capture_screenshot(qid, "c1")]
    x.record_action(qid, actor="dsl1", action="note", note="n", now_ms=T0 + 7,
                    item_changes={"assignee": "dsl1", "updated_at": T0 + 7})
    out += [x.item_actions(qid)]
    uid = x.add_unlock(qid=qid, site_id="s1", requested_by="dsl1", now_ms=T0, reason="r")
    out += [keep(x.pending_unlocks(["s1"], "dsl2", T0 - 1)),
            x.approve_unlock_row(uid, "dsl2", T0 + 1, T0 + DAY),
            x.approve_unlock_row(uid, "dsl2", T0 + 1, T0 + DAY),
            x.unlock_active(qid, "dsl1", T0 + 2), keep([x.unlock_row(uid)]),
            keep([x.latest_unlock(qid, "dsl1", T0 + 2, T0 - 1)]),
            x.rule_precision_rows(["s1", "s2"]), x.rule_version_history()]
    q = QueueQuery(sites=["s1"], statuses=["new"], min_severity=1, os_users=["amy"],
                   start_ms=T0 - 1, end_ms=T0 + 1)
    out += [x.pupils_named_like(["s1"], "%smi%"), x.pupils_named_like(["s1"], "%SMITH"),
            x.devices_named(["s1", "s2"], "pc-d-1"), x.queue_count(q),
            keep(x.queue_rows(q, 10))]
    out += [x.site_profile("s1"), x.site_names(["s1", "s2"]),
            x.items_count(["s1"], T0 - 1, T0 + 1),
            x.items_by("severity", ["s1"], T0 - 1, T0 + 1),
            x.items_per_period(["s1"], [(T0 - 10, T0), (T0, T0 + 10)]),
            x.open_items("s1"), keep(x.silent_devices("s1", T0 + 1)),
            x.active_devices(["s1", "s2"]), keep(x.export_items(["s1"], None, None)),
            {k: keep(v) for k, v in x.actions_of_items([qid]).items()}]
    out += [x.site_known("s2"), keep(x.site_devices(["s1", "s2"])),
            [t["group_name"] for t in x.site_tokens(["s1"])], x.device_site("d-2"),
            x.set_device_room("d-1", "R1"), x.set_device_room("nope", "R1")]
    return out


def test_console_repositories_answer_alike_on_both_backends(pg: PostgresStore,
                                                            tmp_path: Path) -> None:
    from collector.store.sqlite import open_store

    lite = open_store(tmp_path / "lite.db", tmp_path)
    try:
        expected = _console_calls(lite)
    finally:
        lite.close()
    got = _console_calls(pg)
    for i, (a, b) in enumerate(zip(expected, got, strict=True)):
        assert a == b, f"call {i}: SQLite {a!r} != PostgreSQL {b!r}"


def test_one_collector_leads_each_periodic_job_and_another_takes_over(
    pg_url: str, tmp_path: Path
) -> None:
    """Escalation e-mails and the scheduled purge run in exactly one of N collectors; when
    that process goes away (its connection closes), the next one to ask takes the job."""
    a = open_postgres_store(pg_url, tmp_path)
    b = open_postgres_store(pg_url, tmp_path)
    try:
        assert a.is_leader("escalations") and a.is_leader("escalations")  # held, re-entrant
        assert not b.is_leader("escalations")
        assert b.is_leader("retention")  # another job, another leader
        assert not a.is_leader("retention")
        a.close()  # the leader's process ends
        # the server releases the lock when it notices the closed connection: the next
        # interval's ask takes over (hang guard only; a loaded server is slow, not wrong)
        _wait_until(lambda: b.is_leader("escalations"), "the second collector to take over")
    finally:
        b.close()
