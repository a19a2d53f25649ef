"""Collector benchmark: stored captures/s over real mTLS gRPC, and memory per idle agent.

* ``ingest``: a real ``vigil-collector serve`` subprocess; 50 agent-like clients (one asyncio
  loop in this process) each stream batches of captures; the clock runs from the first send
  until every capture is acknowledged (acks go out only after the SQLite commit, so this is
  *stored* captures per second, triage included).
* ``store``: ``Store.ingest`` alone (dedupe check, triage, insert) in both bulk-insert modes
  (``executemany``, the default, and sqlite-utils ``insert_all``).
* ``raw``: the same rows inserted with plain ``executemany`` into the same schema in one
  transaction: the ceiling SQLite itself sets, for the ratio.
* ``idle``: RSS of the collector before and after N idle agents connect and heartbeat.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import uuid6

from collector.domain.triage import TriagePolicy
from collector.services.ingest import IngestService
from collector.store.base import NewCapture
from collector.store.sqlite import open_store
from proto import vigil_pb2 as pb
from tests.support.agent_client import AgentClient, make_capture
from tests.support.collector import RunningCollector, start_collector

__all__ = ["main", "markdown"]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _batches(n_batches: int, batch: int, t0: int) -> list[list[pb.Capture]]:
    out = []
    for b in range(n_batches):  # UUIDv7 ids, as the agent makes them (time-ordered keys)
        out.append([make_capture(f"b-{uuid6.uuid7()}", severity=1 + (i % 4),
                                 os_user=f"pupil{i % 5}", rule_id=f"rule.{i % 3}",
                                 time_ms=t0 + b * batch + i) for i in range(batch)])
    return out


async def _enrol_many(c: RunningCollector, n: int) -> list[AgentClient]:
    token = c.create_token(uses=n, expires="1d")
    agents = [AgentClient(c.enrol_addr, c.stream_addr, c.ca_pem, f"bench-{i}") for i in range(n)]
    sem = asyncio.Semaphore(20)

    async def one(a: AgentClient) -> None:
        async with sem:
            await a.enrol(token)
    await asyncio.gather(*(one(a) for a in agents))
    return agents


async def _ingest(c: RunningCollector, streams: int, per_stream: int, batch: int) -> dict[str, Any]:
    agents = await _enrol_many(c, streams)
    t0 = int(time.time() * 1000)
    work = [_batches(per_stream // batch, batch, t0) for _ in agents]
    total = sum(len(b) for w in work for b in w)
    ctxs = [a.connect() for a in agents]
    ss = [await ctx.__aenter__() for ctx in ctxs]
    for s in ss:
        await s.heartbeat(rules_version=1)
    start = time.perf_counter()

    async def run(s: Any, batches: list[list[pb.Capture]]) -> None:
        ids = set()
        window = 4  # batches in flight per stream, like an agent's uplink window
        for i, b in enumerate(batches):
            ids.update(x.id for x in b)
            await s.send_captures(b)
            if i >= window:
                need = {x.id for x in batches[i - window]}
                await s.wait_for(lambda s, need=need: need <= s.acked, timeout=300)
        await s.wait_for(lambda s: ids <= s.acked, timeout=300)
    await asyncio.gather(*(run(s, w) for s, w in zip(ss, work, strict=True)))
    elapsed = time.perf_counter() - start
    backoffs = sum(len(s.backoffs) for s in ss)
    for ctx in ctxs:
        await ctx.__aexit__(None, None, None)
    stored = c.query("SELECT COUNT(*) FROM captures WHERE id LIKE 'b-%'")[0][0]
    items = c.query("SELECT COUNT(*) FROM queue_items")[0][0]
    return {"streams": streams, "captures": total, "batch": batch, "seconds": elapsed,
            "stored": stored, "queue_items": items, "backoffs": backoffs,
            "captures_per_s": total / elapsed}


def _store_only(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        store = open_store(Path(d) / "s.db", Path(d))
        t0 = int(time.time() * 1000)
        caps = [NewCapture(
            id=f"s-{uuid6.uuid7()}", device_id=f"d-{i % 50}", site_id="default",
            group_name="g", os_user=f"pupil{i % 5}", hostname="pc", time_ms=t0 + i,
            last_time_ms=t0 + i, count=1, source="keys", rule_id=f"rule.{i % 3}",
            category="self_harm", severity=1 + i % 4, match="example phrase",
            context="…typed example phrase here…", window_title="Notepad", process="notepad",
            match_kind="exact", media=None, rules_version=1, received_at=t0)
            for i in range(n)]
        service = IngestService(store, TriagePolicy())
        start = time.perf_counter()
        for k in range(0, n, 5000):
            service.ingest(caps[k:k + 5000], t0)
        elapsed = time.perf_counter() - start
        store.close()
    return {"captures": n, "seconds": elapsed, "captures_per_s": n / elapsed}


def _raw(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        store = open_store(Path(d) / "raw.db", Path(d))
        t0 = int(time.time() * 1000)
        rows = [(f"r-{uuid6.uuid7()}", "d-x", "default", f"pupil{i % 5}", "pc", t0 + i,
                 t0 + i, 1, "keys", f"rule.{i % 3}", "self_harm", 1 + i % 4, "example phrase",
                 "…typed example phrase here…", "Notepad", "notepad", "exact", None, 1, t0)
                for i in range(n)]
        conn = store.sqlite.conn
        start = time.perf_counter()
        with store.transaction():
            conn.executemany(
                "INSERT INTO captures (id, device_id, site_id, os_user, hostname, time_ms, "
                "last_time_ms, count, source, rule_id, category, severity, match, context, "
                "window_title, process, match_kind, media, rules_version, received_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        elapsed = time.perf_counter() - start
        store.close()
    return {"captures": n, "seconds": elapsed, "captures_per_s": n / elapsed}


async def _idle(c: RunningCollector, n: int) -> dict[str, Any]:
    agents = await _enrol_many(c, n)
    before = _rss_kib(c.proc.pid)
    ctxs = [a.connect() for a in agents]
    ss = [await ctx.__aenter__() for ctx in ctxs]
    for s in ss:
        await s.heartbeat(rules_version=1)
    for s in ss:
        await s.wait_for(lambda s: s.configs)
    after = _rss_kib(c.proc.pid)
    for ctx in ctxs:
        await ctx.__aexit__(None, None, None)
    return {"agents": n, "rss_before_kib": before, "rss_after_kib": after,
            "kib_per_agent": (after - before) / n}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench collector")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    streams = 50
    per_stream, batch, idle_n = (200, 100, 50) if args.quick else (4000, 500, 1000)
    cfg = {"enrolment": {"rate_per_second": 1000.0, "burst": 5000},
           "ingest": {"batch_max": 10000}}
    results: dict[str, Any] = {"quick": args.quick}
    with tempfile.TemporaryDirectory() as d:
        c = start_collector(Path(d), cfg)
        try:
            results["ingest"] = asyncio.run(_ingest(c, streams, per_stream, batch))
        finally:
            c.stop()
    n = results["ingest"]["captures"]
    results["raw"] = _raw(n)
    results["store"] = _store_only(n)
    results["ratio"] = results["ingest"]["captures_per_s"] / results["raw"]["captures_per_s"]
    with tempfile.TemporaryDirectory() as d:
        c = start_collector(Path(d), cfg)
        try:
            results["idle"] = asyncio.run(_idle(c, idle_n))
        finally:
            c.stop()
    return results


def markdown(r: dict[str, Any]) -> str:
    i, raw, idle, st = r["ingest"], r["raw"], r["idle"], r["store"]
    return "\n".join([
        "### Collector",
        "",
        "| measure | value |",
        "|---|---|",
        f"| stored captures/s, {i['streams']} concurrent mTLS streams, batches of {i['batch']} "
        f"(ack after commit, triage included) | **{i['captures_per_s']:,.0f}** "
        f"({i['captures']:,} captures in {i['seconds']:.2f} s, {i['backoffs']} back-offs) |",
        f"| `IngestService.ingest` alone (set-wise triage + insert, no gRPC), batches of "
        f"5,000 | {st['captures_per_s']:,.0f}/s |",
        f"| raw `executemany` into the same schema, one transaction | "
        f"{raw['captures_per_s']:,.0f}/s |",
        f"| ratio collector / raw SQLite | {r['ratio']:.2f} |",
        f"| memory per idle connected agent ({idle['agents']} agents) | "
        f"{idle['kib_per_agent']:.1f} KiB (RSS {idle['rss_before_kib'] / 1024:.0f} → "
        f"{idle['rss_after_kib'] / 1024:.0f} MiB) |",
        "",
        "Target: ≥ 50,000 stored captures/s on 2 cores. The collector and the 50 client streams "
        "share the same 2 cores in this run.",
    ])
