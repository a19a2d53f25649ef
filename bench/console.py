"""Console benchmark: queue page render time with 10k / 100k / 1M captures stored.

    python -m bench console            # 10k, 100k, 1M captures (target: queue page <= 200 ms)
    python -m bench console --quick    # 10k only

A real SQLite file is filled with captures (4 captures per queue item on average, 3 sites,
~3 % of items still open, like a store after a school year), then the full HTTP stack is
timed in process (Starlette TestClient): session lookup, query, template, audit row.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "markdown"]

TARGET_MS = 200.0
SITES = ("north", "south", "east")
CATEGORIES = ("self_harm", "suicide", "bullying", "radicalisation", "grooming", "drugs",
              "weapons", "adult_content", "gambling", "csam")
STATUSES = ("closed",) * 70 + ("false_positive",) * 17 + ("actioned",) * 10 + ("new", "in_review",
                                                                           "new")
PER_ITEM = 4
DAY_MS = 86400_000


def _fill(db: Path, n_captures: int, seed: int = 7) -> dict[str, float]:
    import sqlite3

    from collector.console.auth import hash_password
    from collector.console.db import migrate_all

    rnd = random.Random(seed)
    migrate_all(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    t0 = time.perf_counter()
    now = int(time.time() * 1000)
    conn.execute("BEGIN")
    for s in SITES:
        conn.execute("INSERT INTO sites (id, name, created_at) VALUES (?, ?, ?)",
                     (s, s.title(), now))
    devices = []
    for i in range(1500):
        site = SITES[i % len(SITES)]
        dev = f"dev{i:05d}"
        devices.append((dev, site))
        conn.execute("INSERT INTO devices (id, site_id, group_name, hostname, os, room, "
                     "cert_serial, enrolled_at, last_seen_at) VALUES (?,?,?,?,?,?,?,?,?)",
                     (dev, site, "year-9", f"LAP-{i:05d}", "linux",
                      f"Room {i % 40}" if i % 3 else None, f"s{i}", now, now))
    conn.executemany("INSERT INTO pupils VALUES (?, ?, ?, ?, ?)",
                     [(SITES[i % 3], f"pupil{i}", f"Pupil Number{i}", "Year 9", "secondary")
                      for i in range(6000)])
    pw = hash_password("benchmark password")
    conn.execute("INSERT INTO users (username, display_name, password_hash, role, sites, "
                 "created_at) VALUES ('dsl', 'DSL', ?, 'dsl', '[\"north\"]', ?)", (pw, now))
    conn.execute("COMMIT")
    n_items = n_captures // PER_ITEM
    span = 365 * DAY_MS
    batch_items: list[tuple[Any, ...]] = []
    batch_caps: list[tuple[Any, ...]] = []
    cid = 0

    def flush() -> None:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO queue_items (id, site_id, device_id, os_user, rule_id, category, "
            "severity, priority, pinned, refer_police, status, count, first_time_ms, "
            "last_time_ms, latest_capture_id, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", batch_items)
        conn.executemany(
            "INSERT INTO captures (id, device_id, site_id, queue_item_id, os_user, hostname, "
            "time_ms, last_time_ms, count, source, rule_id, category, severity, match, context, "
            "window_title, process, match_kind, received_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", batch_caps)
        conn.execute("COMMIT")
        batch_items.clear()
        batch_caps.clear()

    for qid in range(1, n_items + 1):
        dev, site = devices[rnd.randrange(len(devices))]
        cat = CATEGORIES[rnd.randrange(len(CATEGORIES) - 1)] if rnd.random() > 0.001 else "csam"
        sev = 5 if cat in ("csam", "suicide") and rnd.random() < 0.5 else rnd.randint(1, 4)
        first = now - span + int(rnd.random() * span)
        status = STATUSES[rnd.randrange(len(STATUSES))]
        user = f"pupil{rnd.randrange(7000)}"
        n = PER_ITEM if qid < n_items else n_captures - cid
        last = first + n * 60_000
        rule = f"{cat}.r{rnd.randrange(20)}"
        for k in range(n):
            cid += 1
            t = first + k * 60_000
            batch_caps.append((f"c{cid:09d}", dev, site, qid, user, "", t, t, 1, "keys", rule,
                               cat, sev, "matched phrase", "some bounded context " * 4,
                               "Document - Writer", "soffice", "exact", t))
        batch_items.append((qid, site, dev, user, rule, cat, sev, sev * 20 + rnd.randrange(10),
                            int(sev == 5), int(cat == "csam"), status, n, first, last,
                            f"c{cid:09d}", first, last))
        if len(batch_caps) >= 200_000:
            flush()
    flush()
    conn.execute("ANALYZE")
    conn.close()
    return {"fill_s": round(time.perf_counter() - t0, 1), "captures": cid,
            "queue_items": n_items}


def _time(client: Any, url: str, runs: int) -> dict[str, float]:
    client.get(url)  # warm
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        r = client.get(url)
        samples.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, (url, r.status_code)
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 1),
            "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 1),
            "max_ms": round(samples[-1], 1)}


def _measure(n: int, runs: int) -> dict[str, Any]:
    import re

    from starlette.testclient import TestClient

    from collector.console import create_app

    with tempfile.TemporaryDirectory(prefix="vigil-bench-console-") as tmp:
        db = Path(tmp) / "vigil.db"
        result: dict[str, Any] = {"size": n, **_fill(db, n)}
        result["db_mb"] = round(db.stat().st_size / 1e6, 1)
        app = create_app(db, Path(tmp), public_url="https://testserver",
                         allowed_hosts=["testserver"])
        with TestClient(app, base_url="https://testserver") as c:
            page = c.get("/login")
            token = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert token
            r = c.post("/login", data={"username": "dsl", "password": "benchmark password",
                                       "csrf": token.group(1)}, follow_redirects=False)
            assert r.status_code == 303
            result["queue"] = _time(c, "/queue", runs)
            result["queue_all"] = _time(c, "/queue?status=all", runs)
            result["queue_category"] = _time(c, "/queue?status=all&category=bullying", runs)
            result["queue_pupil"] = _time(c, "/queue?status=all&pupil=Number42", runs)
            result["queue_poll"] = _time(c, "/queue/rows", runs)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench console", description=__doc__)
    p.add_argument("--quick", action="store_true", help="10k captures only")
    p.add_argument("--sizes", help="comma-separated capture counts (default 10000,100000,1000000)")
    p.add_argument("--runs", type=int, default=30, help="timed requests per URL")
    args = p.parse_args(argv)
    sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes
             else [10_000] if args.quick else [10_000, 100_000, 1_000_000])
    results = []
    for n in sizes:
        print(f"console: {n} captures ...", flush=True)
        r = _measure(n, args.runs)
        print(json.dumps(r), flush=True)
        results.append(r)
    return {"target_ms": TARGET_MS, "runs": args.runs, "results": results}


def markdown(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    lines = [
        "## Console: queue page render time",
        "",
        f"Full HTTP stack in process (Starlette TestClient: session, query, Jinja2 page, audit "
        f"row), a DSL of one of 3 sites, 50 rows per page, {results['runs']} requests per URL. "
        f"4 captures per queue item, ~3 % of items open. Target: queue page <= "
        f"{results['target_ms']:.0f} ms at 1M captures.",
        "",
        "| captures | queue items | DB MB | fill s | /queue (open) median / p95 ms "
        "| status=all | + category | + pupil name | poll /queue/rows |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["results"]:
        def cell(key: str, r: dict[str, Any] = r) -> str:
            return f"{r[key]['median_ms']} / {r[key]['p95_ms']}"
        lines.append(f"| {r['captures']:,} | {r['queue_items']:,} | {r['db_mb']} | "
                     f"{r['fill_s']} | {cell('queue')} | {cell('queue_all')} | "
                     f"{cell('queue_category')} | {cell('queue_pupil')} | {cell('queue_poll')} |")
    if m:
        lines += ["", f"Machine: {m.get('cpu')}, {m.get('cores')} cores, Python "
                  f"{m.get('python')}, {m.get('date')}. Command: `{results.get('command')}`."]
    return "\n".join(lines) + "\n"
