"""Ingest: stored captures per second through the real collector, and the raw SQLite ceiling.

A burst: ``streams`` simulated agents each send ``per_stream`` captures in batches of
``batch`` (at most ``window`` unacknowledged batches per stream, like the agent's
``max_inflight``). The clock runs from the first send to the last ``Ack``; the collector acks
only after the SQLite commit, so this is *stored* captures per second, triage included.

The raw ceiling: the same number of rows (same mix) inserted with one plain ``executemany``
into the same schema, in one transaction, in this process.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from .fleet import Fleet
from .meter import Meter, summary
from .mix import CaptureMix
from .profile import Profile

__all__ = ["burst", "raw_executemany", "raw_postgres", "raw_screenshot_writes", "split",
           "store_only"]

_SOURCE = {1: "keys", 2: "window", 3: "media"}
_INSERT = ("INSERT INTO captures (id, device_id, site_id, os_user, hostname, time_ms, "
           "last_time_ms, count, source, rule_id, category, severity, match, context, "
           "window_title, process, match_kind, media, rules_version, received_at) "
           "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")


def split(total: int, parts: int) -> list[int]:
    """``total`` spread as evenly as possible over ``parts``."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def burst(fleet: Fleet, collector_pid: int, streams: int, per_stream: int, batch: int,
          window: int, profile: Path | None = None) -> dict[str, Any]:
    """One timed burst on the first ``streams`` connected agents (``profile``: sample the
    collector with py-spy into this file meanwhile)."""
    shares = split(streams, len(fleet.conns))
    fleet.call("burst_prepare", [{"streams": s, "per_stream": per_stream, "batch": batch}
                                 for s in shares])
    with Profile(collector_pid, profile) as prof, Meter(collector_pid) as m:
        rs = fleet.call("burst_go", window=window)
    start, end = min(r["start"] for r in rs), max(r["end"] for r in rs)
    acked = sum(r["acked"] for r in rs)
    lat = [x for r in rs for x in r["latencies_ms"]]
    return {"streams": streams, "captures": sum(r["sent"] for r in rs), "acked": acked,
            "batch": batch, "window": window, "seconds": end - start,
            "captures_per_s": acked / (end - start), "backoffs": sum(r["backoffs"] for r in rs),
            "reconnects": sum(r["reconnects"] for r in rs),
            "batch_ack_latency": summary(lat), "collector_cpu_percent": m.result["cpu_percent"],
            "collector_rss_mib": m.result["rss_mib"],
            "simulator_cpu_s": sum(r["cpu_s"] for r in rs),
            **({"profile": prof.summary} if profile is not None else {})}


def bursts(fleet: Fleet, collector_pid: int, streams: int, per_stream: int, batch: int,
           window: int, runs: int, profile: Path | None = None) -> dict[str, Any]:
    """``runs`` bursts; the headline is the median. The first one is profiled if asked."""
    rs = [burst(fleet, collector_pid, streams, per_stream, batch, window,
                profile if i == 0 else None) for i in range(runs)]
    return {"streams": streams, "runs": rs,
            "median_per_s": statistics.median(r["captures_per_s"] for r in rs)}


def _raw_rows(n: int, seed: int, now: int) -> list[tuple[Any, ...]]:
    mix = CaptureMix(seed)
    rows = []
    for i in range(n):
        c = mix.capture(now)
        rows.append((c.id, f"d-{i % 50}", "default", c.os_user, c.hostname, c.time_unix_ms,
                     c.last_time_unix_ms, c.count, _SOURCE[c.source], c.rule_id, c.category,
                     c.severity, c.match, c.context, c.window_title, c.process, "exact", None,
                     c.rules_version, now))
    return rows


def raw_executemany(n: int, seed: int = 1) -> dict[str, Any]:
    """``n`` rows of the same mix, one ``executemany`` in one transaction, fresh store."""
    from collector.store.sqlite import open_store

    now = int(time.time() * 1000)
    rows = _raw_rows(n, seed, now)
    with tempfile.TemporaryDirectory(prefix="vigil-bench-raw-") as d:
        store = open_store(Path(d) / "raw.db", Path(d))
        try:
            t0 = time.perf_counter()
            with store.transaction():
                store.sqlite.conn.executemany(_INSERT, rows)
            elapsed = time.perf_counter() - t0
        finally:
            store.close()
    return {"captures": n, "seconds": elapsed, "captures_per_s": n / elapsed}


def raw_postgres(url: str, n: int, seed: int = 1, mode: str = "copy") -> dict[str, Any]:
    """The PostgreSQL ceiling: ``n`` rows of the same mix into ``captures`` of the (migrated,
    empty) database at ``url``, in one transaction, with ``COPY ... FROM STDIN`` (``mode``
    "copy") or psycopg's ``executemany`` (pipelined, "executemany"); the commit is timed."""
    import psycopg

    now = int(time.time() * 1000)
    rows = _raw_rows(n, seed, now)
    cols = ("id, device_id, site_id, os_user, hostname, time_ms, last_time_ms, count, source, "
            "rule_id, category, severity, match, context, window_title, process, match_kind, "
            "media, rules_version, received_at")
    with psycopg.connect(url) as conn:
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            if mode == "copy":
                with cur.copy(f"COPY captures ({cols}) FROM STDIN") as cp:
                    for r in rows:
                        cp.write_row(r)
            else:
                cur.executemany(f"INSERT INTO captures ({cols}) VALUES "
                                f"({', '.join(['%s'] * 20)})", rows)
        conn.commit()
        elapsed = time.perf_counter() - t0
    return {"captures": n, "mode": mode, "seconds": elapsed, "captures_per_s": n / elapsed}


def store_only(streams: int, per_stream: int, batch: int = 100, commit: int = 5000,
               screenshot_bytes: int = 0, store_url: str | None = None) -> dict[str, Any]:
    """The collector's own ``IngestService.ingest`` (dedupe check, triage, queue items,
    insert, screenshots staged then published after commit) on the same mix with no gRPC:
    batches from ``streams`` devices interleaved as the writer gathers them, ``commit``
    captures per transaction (the writer's ``batch_max``). ``store_url``: a PostgreSQL URL
    (an empty database) instead of a fresh SQLite file."""
    from collector.domain.triage import TriagePolicy
    from collector.services.ingest import IngestService
    from collector.store.base import DeviceRow
    from collector.validate import Limits, to_new_capture

    now = int(time.time() * 1000)
    devs = [DeviceRow(f"d-{i:05d}", "default", "secondary", "secondary", f"sim-{i}", "linux",
                      "sim", 1, 0, 0, {}, "", "s", now, now, None) for i in range(streams)]
    mixes = [CaptureMix(i, screenshot_bytes=screenshot_bytes) for i in range(streams)]
    caps = []
    for _ in range(per_stream // batch):
        for dev, mix in zip(devs, mixes, strict=True):
            for _ in range(batch):
                nc = to_new_capture(mix.capture(now), dev, now, Limits())
                assert not isinstance(nc, str), nc
                caps.append(nc)
    policy = TriagePolicy()
    shots = sum(1 for c in caps if c.screenshot)
    with tempfile.TemporaryDirectory(prefix="vigil-bench-store-") as d:
        store = _open(Path(d), store_url)
        for dev in devs[:1]:
            store.ensure_site(dev.site_id, "Bench", now)
        service = IngestService(store, policy)
        try:
            t0 = time.perf_counter()
            for k in range(0, len(caps), commit):
                service.ingest(caps[k:k + commit], now)
            elapsed = time.perf_counter() - t0
            items = store.db.scalar("SELECT COUNT(*) FROM queue_items")
            files = len(list((Path(d) / "screenshots").glob("*.bin")))
        finally:
            store.close()
    return {"backend": "postgresql" if store_url else "sqlite", "captures": len(caps),
            "seconds": elapsed, "captures_per_s": len(caps) / elapsed, "queue_items": items,
            "commit": commit, "screenshots": shots, "screenshot_files": files,
            "screenshot_bytes": screenshot_bytes,
            "screenshots_per_s": shots / elapsed if shots else None}


def _open(d: Path, store_url: str | None) -> Any:
    if store_url is None:
        from collector.store.sqlite import open_store

        return open_store(d / "s.db", d)
    from collector.store.postgres import open_postgres_store  # type: ignore[import-not-found]

    return open_postgres_store(store_url, d)


def raw_screenshot_writes(n: int, size: int) -> dict[str, Any]:
    """The ceiling for screenshots: ``n`` files of ``size`` bytes encrypted as the collector
    does (collector.store.screenshots.encrypt) and written + renamed into place, no database."""
    import os
    import random

    from collector.store.screenshots import encrypt

    data = random.Random(3).randbytes(size)
    key = os.urandom(32)
    with tempfile.TemporaryDirectory(prefix="vigil-bench-shots-") as d:
        t0 = time.perf_counter()
        for i in range(n):
            tmp = Path(d) / f"{i}.staged"
            tmp.write_bytes(encrypt(key, f"screenshots/{i}.bin", data))
            os.replace(tmp, tmp.with_suffix(".bin"))
        elapsed = time.perf_counter() - t0
    return {"files": n, "bytes": size, "seconds": elapsed, "files_per_s": n / elapsed}
