"""Console pages at N captures on SQLite and on PostgreSQL, warm and with a cold OS cache.

The store is filled once with ``bench.console``'s filler (a year of history, 4 captures per
queue item, 3 sites, ~3 % of items open) into SQLite; the PostgreSQL database gets exactly
the same rows (``COPY`` of every filled table, into monthly partitions created for the whole
year, ``capture_ids`` filled, the identity sequence moved on, ``ANALYZE``). Then the full
HTTP stack is timed in process (Starlette TestClient, logged in as the filler's DSL of one
site): session lookup, queries, Jinja2 page, audit row.

Cold, per timed request:

* SQLite: the store's connection frees its page cache (``PRAGMA shrink_memory``) and the
  database, ``-wal`` and ``-shm`` files are dropped from the OS page cache
  (``posix_fadvise(POSIX_FADV_DONTNEED)``);
* PostgreSQL: the server is stopped (shared buffers gone), every file of the cluster is
  dropped from the OS page cache the same way, the server is started again, and the
  console's connection pool replaces its broken connections (``pool.check()``) before the
  timed request. Catalog caches of the new backends are cold too.

Pages are reached as a DSL reaches them: the deep page through the queue's own "next" links
(built as ``page=N`` when the links carry only a page number, OFFSET paging; followed
link by link when they carry a key, keyset paging), the pupil page
through the queue's link to it, when the console has one.

The app itself (templates compiled, session cookie) stays warm: "cold" is the data, as after
a night when the school's server has evicted the console's pages.
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .pg import BenchPg, drop_cache, resident

__all__ = ["copy_to_postgres", "measure_pages", "page_urls"]

_TABLES = ("sites", "devices", "pupils", "users", "queue_items", "captures")
_YEAR_MS = 366 * 86_400_000


def copy_to_postgres(db: Path, url: str, data_dir: Path) -> dict[str, Any]:
    """Copy the filled SQLite store's rows into the (empty) PostgreSQL database at ``url``."""
    import psycopg

    from collector.store.postgres import open_postgres_store

    t0 = time.perf_counter()
    store = open_postgres_store(url, data_dir)
    try:
        now = int(time.time() * 1000)
        store.maintain_partitions(now - _YEAR_MS - 31 * 86_400_000, 15)
    finally:
        store.close()
    src = sqlite3.connect(db)
    counts: dict[str, int] = {}
    try:
        with psycopg.connect(url) as conn:
            for table in _TABLES:
                pg_cols = {r[0] for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                    (table,))}
                cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})")
                        if r[1] in pg_cols]
                names = ", ".join(cols)
                n = 0
                with conn.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as cp:
                    for row in src.execute(f"SELECT {names} FROM {table}"):
                        cp.write_row(row)
                        n += 1
                counts[table] = n
            conn.execute("INSERT INTO capture_ids (id, device_id, received_at, site_id) "
                         "SELECT id, device_id, received_at, site_id FROM captures")
            conn.execute("SELECT setval(pg_get_serial_sequence('queue_items', 'id'), "
                         "(SELECT COALESCE(MAX(id), 1) FROM queue_items))")
            conn.commit()
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE")
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    finally:
        src.close()
    return {"copy_s": round(time.perf_counter() - t0, 1), "rows": counts,
            "db_mb": round(int(size[0]) / 1e6, 1) if size else None}


_HREF = re.compile(r'<a\b[^>]*href="([^"]+)"[^>]*>(.*?)</a>', re.S | re.I)
_KEYED = re.compile(r"[?&](after|before|cursor|key)=")  # a keyset link carries the last key
_NEXT = re.compile(r'rel="next"|\bnext\b|older', re.I)


def _next_link(html: str) -> str | None:
    for m in _HREF.finditer(html):
        tag, text = m.group(0), re.sub(r"<[^>]+>", "", m.group(2))
        if "rel=\"next\"" in tag or _NEXT.search(text):
            return m.group(1).replace("&amp;", "&")
    return None


def page_urls(client: Any, visible_items: int) -> tuple[dict[str, str], dict[str, Any]]:
    """The pages timed: the DSL's open queue (page 1), all items, a deep page of all items
    (page ``min(1000, items / 50)``), and one pupil's items. The deep page is reached the way
    a DSL reaches it: by the page's own "next" links. If those carry ``page=N`` (OFFSET
    paging) the deep URL is built directly; if they carry a key (keyset paging) they are
    followed, one page at a time, and the URL of the deep page is kept. A pupil page is timed
    too when the queue page links to one (``/pupil...``)."""
    deep = max(1, min(1000, visible_items // 50))
    urls = {"queue": "/queue", "queue_all": "/queue?status=all"}
    info: dict[str, Any] = {"deep_page": deep, "paging": "none"}
    html = client.get("/queue?status=all").text
    nxt = _next_link(html)
    if nxt and not _KEYED.search(nxt) and re.search(r"[?&]page=\d+", nxt):
        info["paging"] = "offset"
        urls["deep"] = re.sub(r"([?&])page=\d+", rf"\g<1>page={deep}", nxt)
    elif nxt:
        info["paging"] = "keyset"
        url, n = nxt, 2
        while n < deep:
            html = client.get(url).text
            more = _next_link(html)
            if not more:
                break
            url, n = more, n + 1
        urls["deep"] = url
        info["deep_page"] = n
    pupil = re.search(r'href="(/pupils?/[^"]+)"', html)
    urls["pupil_filter"] = "/queue?status=all&pupil=Number42"
    if pupil:
        urls["pupil_page"] = pupil.group(1).replace("&amp;", "&")
    info["pupil_page"] = bool(pupil)
    return urls, info


def _login(client: Any) -> None:
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    if token is None:
        raise RuntimeError("console login page has no CSRF token")
    r = client.post("/login", data={"username": "dsl", "password": "benchmark password",
                                    "csrf": token.group(1)}, follow_redirects=False)
    if r.status_code != 303:
        raise RuntimeError(f"console login failed ({r.status_code})")


def _ms(client: Any, url: str) -> float:
    t = time.perf_counter()
    r = client.get(url)
    ms = (time.perf_counter() - t) * 1000
    if r.status_code != 200:
        raise RuntimeError(f"GET {url}: {r.status_code}")
    return ms


def _stats(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    return {"n": len(s), "median_ms": round(statistics.median(s), 1),
            "p95_ms": round(s[min(len(s) - 1, math.ceil(len(s) * 0.95) - 1)], 1),
            "max_ms": round(s[-1], 1)}


def _time_app(store: Any, data_dir: Path, visible: int, warm_runs: int,
              cold_runs: int, make_cold: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    from starlette.testclient import TestClient

    from collector.console import create_app

    app = create_app(store=store, data_dir=data_dir, public_url="https://testserver",
                     allowed_hosts=["testserver"])
    out: dict[str, Any] = {}
    with TestClient(app, base_url="https://testserver") as client:
        _login(client)
        urls, info = page_urls(client, visible)
        out["paging"] = info
        for name, url in urls.items():
            client.get(url)  # templates compiled, pages cached
            out[name] = {"url": url,
                         "warm": _stats([_ms(client, url) for _ in range(warm_runs)])}
        evidence: list[dict[str, Any]] = []
        for name, url in urls.items():
            cold = []
            for _ in range(cold_runs):
                evidence.append(make_cold())
                cold.append(_ms(client, url))
            out[name]["cold"] = _stats(cold)
    drops = [e.get("resident_after_drop") for e in evidence
             if e.get("resident_after_drop") is not None]
    out["cold_evidence"] = {"samples": len(evidence),
                            "max_resident_after_drop": max(drops) if drops else None,
                            "first": evidence[0] if evidence else None}
    return out


def _visible(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM queue_items WHERE site_id = 'north'"
                                ).fetchone()[0])
    finally:
        conn.close()


def measure_pages(tmp: Path, size: int, *, pg: BenchPg | None, warm_runs: int,
                  cold_runs: int) -> dict[str, Any]:
    """Fill ``size`` captures, time the pages on SQLite and (``pg``) PostgreSQL."""
    from bench import console as console_bench
    from collector.console.db import migrate_all
    from collector.store.sqlite import open_store

    db = tmp / "vigil.db"
    migrate_all(db)
    fill = console_bench._fill(db, size)
    visible = _visible(db)
    result: dict[str, Any] = {"size": size, "fill": fill, "visible_items": visible,
                              "sqlite_db_mb": round(db.stat().st_size / 1e6, 1)}
    files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    store = open_store(db, tmp)
    try:
        def sqlite_cold() -> dict[str, Any]:
            with store.db.lock:
                store.db.conn.execute("PRAGMA shrink_memory")
            before = resident(files)
            drop_cache(files)
            return {"resident_before": before, "resident_after_drop": resident(files)}
        result["sqlite"] = _time_app(store, tmp, visible, warm_runs, cold_runs, sqlite_cold)
    finally:
        store.close()
    if pg is None:
        return result
    from collector.store.postgres import open_postgres_store

    url = pg.create_database(f"pages{size}")
    pg_dir = tmp / "pg"
    pg_dir.mkdir(exist_ok=True)
    result["postgresql_fill"] = copy_to_postgres(db, url, pg_dir)
    pstore = open_postgres_store(url, pg_dir, migrate=False)
    # the pool reports each connection the restart broke; that is the point, not news
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    try:
        def pg_cold() -> dict[str, Any]:
            ev = pg.restart_cold()
            pstore.db.pool.check()
            return ev
        result["postgresql"] = _time_app(pstore, pg_dir, visible, warm_runs, cold_runs, pg_cold)
    finally:
        pstore.close()
    return result
