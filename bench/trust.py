"""Trust benchmark: SQLite and PostgreSQL side by side, in one run (issue 13, items 6 and 7).

    python -m bench trust                       # everything (about 25 minutes)
    python -m bench trust --parts ingest,grpc   # some parts only
    python -m bench --quick trust               # reduced sizes (CI, under ~3 minutes)

Parts (each skippable with ``--parts``):

* ``ingest``: the collector's own ``IngestService.ingest`` (no gRPC) on each backend, the
  same mix from 50 devices interleaved as the writer gathers them, 5,000 per commit; without
  and with screenshots (150 KB on every capture of severity >= 4, about 7 %); beside the raw
  ceilings: ``executemany`` of the same rows (SQLite), ``COPY`` and ``executemany`` of the
  same rows (PostgreSQL), encrypted screenshot file writes (:mod:`bench.sim.ingest`).
* ``grpc``: stored captures/s through real mTLS ``Connect`` streams from simulated agents
  (50 streams): one collector on SQLite; one and two collector processes on one PostgreSQL
  (agents split between the two processes' ports); the scaling ratio; CPU of the collectors
  and of PostgreSQL per stored capture. The SQLite collector is sampled with py-spy.
* ``fanout``: ``rules publish`` to 1,000 and 10,000 connected agents on one collector
  (SQLite), clock stopped when every ``RulesAck`` is STORED; connected agents per process and
  the collector's RSS (:mod:`bench.sim.scan`).
* ``pages``: the DSL queue, all items, a deep page and one pupil's items at 1M captures on
  both backends, warm and with a cold OS cache (:mod:`bench.sim.pages`).

The markdown adds a sizing table computed from these numbers (:mod:`bench.sim.trust_report`).
PostgreSQL runs with fsync, synchronous_commit and full_page_writes ON (:mod:`bench.sim.pg`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["main", "markdown"]

PARTS = ("ingest", "grpc", "fanout", "pages")
SHOT_BYTES = 150_000
DSL_EMAIL = "dsl@school.example"
_T0 = time.monotonic()


def _say(msg: str) -> None:
    print(f"trust [{time.monotonic() - _T0:7.1f} s] {msg}", flush=True)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench trust", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="reduced sizes (CI)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {PARTS}")
    p.add_argument("--runs", type=int, help="repeats of each ingest measurement (median)")
    p.add_argument("--fanout-sizes", help="connected agents (default 1000,10000)")
    p.add_argument("--page-captures", type=int, help="captures stored for the pages "
                   "(default 1,000,000)")
    p.add_argument("--profile-dir", type=Path, help="keep py-spy's collapsed stacks here "
                   "(default: a temp dir; the summary is in the results either way)")
    a = p.parse_args(argv)
    a.parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    unknown = set(a.parts) - set(PARTS)
    if unknown:
        p.error(f"unknown part(s) {sorted(unknown)}; choose from {PARTS}")
    q = a.quick
    a.runs = a.runs or (1 if q else 3)
    a.streams = 50
    a.store_shape = (50, 100) if q else (50, 2000)        # devices x captures each
    a.shot_shape = (50, 100) if q else (50, 400)
    a.grpc_shape = (50, 100, 50) if q else (50, 2000, 100)  # streams, per stream, batch
    a.fanout_sizes = ([int(x) for x in a.fanout_sizes.split(",")] if a.fanout_sizes
                      else [200] if q else [1000, 10_000])
    a.idle_s, a.load_s, a.rate = (1.0, 1.0, 1.0) if q else (10.0, 10.0, 0.05)
    a.fanout_runs = 1 if q else 3
    a.page_captures = a.page_captures or (20_000 if q else 1_000_000)
    a.warm_runs, a.cold_runs = (5, 2) if q else (20, 5)
    return a


# -- part a: the store alone -----------------------------------------------------------------
def _ingest(a: argparse.Namespace, pg: Any) -> dict[str, Any]:
    from collector.store.postgres import open_postgres_store

    from .sim.ingest import raw_executemany, raw_postgres, raw_screenshot_writes, store_only

    out: dict[str, Any] = {"devices": a.store_shape[0], "commit": 5000,
                           "screenshot_bytes": SHOT_BYTES, "cases": []}
    for backend in ("sqlite", "postgresql"):
        if backend == "postgresql" and pg is None:
            continue
        for shots, (devs, each) in ((0, a.store_shape), (SHOT_BYTES, a.shot_shape)):
            runs = []
            for i in range(a.runs if not shots else 1):
                url = pg.create_database(f"store_{shots}_{i}") if backend == "postgresql" \
                    else None
                runs.append(store_only(devs, each, 100, 5000, screenshot_bytes=shots,
                                       store_url=url))
                if url:
                    pg.drop_database(url.rsplit("/", 1)[1])
            med = statistics.median(r["captures_per_s"] for r in runs)
            out["cases"].append({"backend": backend, "screenshot_bytes": shots, "runs": runs,
                                 "median_per_s": med})
            _say(f"store alone, {backend}, screenshots {shots}: {med:,.0f}/s")
    n = a.store_shape[0] * a.store_shape[1]
    raws = [raw_executemany(n, seed=i) for i in range(a.runs)]
    out["raw_sqlite"] = {"runs": raws,
                         "median_per_s": statistics.median(r["captures_per_s"] for r in raws)}
    if pg is not None:
        for mode in ("copy", "executemany"):
            rs = []
            for i in range(a.runs):
                url = pg.create_database(f"raw_{mode}_{i}")
                with tempfile.TemporaryDirectory() as d:
                    open_postgres_store(url, Path(d)).close()
                rs.append(raw_postgres(url, n, seed=i, mode=mode))
                pg.drop_database(url.rsplit("/", 1)[1])
            out[f"raw_postgresql_{mode}"] = {
                "runs": rs, "median_per_s": statistics.median(r["captures_per_s"] for r in rs)}
    shots = max((r["screenshots"] for c in out["cases"] for r in c["runs"]), default=0)
    out["raw_screenshots"] = raw_screenshot_writes(max(shots, 50), SHOT_BYTES)
    return out


# -- part b: through gRPC ------------------------------------------------------------------
@contextlib.contextmanager
def _collectors(tmp: Path, url: str | None, processes: int) -> Iterator[list[Any]]:
    import rules
    from tests.support.collector import init_data_dir, start_collector

    from .scale import BENCH_CONFIG, BENCH_INIT
    from .sim.procs import prepare_postgres, serve_more

    lib = rules.DEFAULT_LIBRARY
    cfg: dict[str, dict[str, Any]] = {k: dict(v) for k, v in BENCH_CONFIG.items()}
    if url:
        cfg["store"] = {"url": url}
        init_data_dir(tmp / "collector", "--rules", str(lib), *BENCH_INIT)
        prepare_postgres(tmp / "collector", url, lib, DSL_EMAIL)
    procs: list[Any] = []
    try:
        procs.append(start_collector(tmp, cfg, rules_dir=lib, init_args=BENCH_INIT))
        for k in range(1, processes):
            procs.append(serve_more(procs[0].data_dir, f"c{k + 1}"))
        yield procs
    finally:
        for c in procs:
            c.stop()


def _stored(c: Any, url: str | None) -> int:
    if url is None:
        return int(c.query("SELECT COUNT(*) FROM captures")[0][0])
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT COUNT(*) FROM captures").fetchone()
        return int(row[0]) if row else 0


def _grpc_case(a: argparse.Namespace, label: str, pg: Any, processes: int,
               profile: Path | None) -> dict[str, Any]:
    from .sim import Fleet, mint
    from .sim.ingest import burst
    from .sim.pg import TreeMeter

    streams, per_stream, batch = a.grpc_shape
    url = pg.create_database(f"grpc_{label.replace('-', '_')}") if pg is not None else None
    with tempfile.TemporaryDirectory(prefix="vigil-bench-trust-") as d, \
            _collectors(Path(d), url, processes) as procs:
        c = procs[0]
        ids, _ = mint(c.data_dir, streams, store_url=url)
        pub = (c.data_dir / "rules" / "signing-public.pem").read_bytes()
        fleet = Fleet([x.stream_addr for x in procs], c.ca_pem, pub, workers=2)
        runs = []
        try:
            conn = fleet.connect(ids, rules_version=1)
            if conn["failed"]:
                raise RuntimeError(f"{label}: agents failed to connect: {conn}")
            groups = {"collectors": [x.proc.pid for x in procs]}
            if pg is not None:
                groups["postgresql"] = [pg.proc.pid]
            for i in range(a.runs):
                with TreeMeter(groups) as tm:
                    r = burst(fleet, c.proc.pid, streams, per_stream, batch, 10,
                              profile if i == 0 else None)
                r["meter"] = tm.result
                runs.append(r)
                _say(f"grpc {label} run {i + 1}: {r['captures_per_s']:,.0f} stored/s")
        finally:
            fleet.close()
        stored = _stored(c, url)
        rss = [x.proc.pid for x in procs]
    acked = sum(r["acked"] for r in runs)
    med = statistics.median(r["captures_per_s"] for r in runs)
    out: dict[str, Any] = {"label": label, "backend": "postgresql" if url else "sqlite",
                           "processes": processes, "streams": streams, "batch": batch,
                           "runs": runs, "median_per_s": med, "acked": acked,
                           "stored": stored, "pids": rss}
    for k in ("collectors", "postgresql"):
        cpu = sum(r["meter"].get(f"{k}_cpu_s", 0.0) for r in runs)
        wall = sum(r["meter"]["seconds"] for r in runs)
        if f"{k}_cpu_s" in runs[0]["meter"]:
            out[f"{k}_cpu_percent"] = cpu / wall * 100
            out[f"{k}_cpu_us_per_capture"] = cpu / acked * 1e6 if acked else None
    if url:
        pg.drop_database(url.rsplit("/", 1)[1])
    return out


def _grpc(a: argparse.Namespace, pg: Any, profile_dir: Path) -> dict[str, Any]:
    cases = [_grpc_case(a, "sqlite-1", None, 1, profile_dir / "grpc-sqlite.txt")]
    if pg is not None:
        cases.append(_grpc_case(a, "postgresql-1", pg, 1, None))
        cases.append(_grpc_case(a, "postgresql-2", pg, 2, None))
    out: dict[str, Any] = {"cases": cases}
    if pg is not None:
        out["scaling_ratio"] = cases[2]["median_per_s"] / cases[1]["median_per_s"]
    return out


# -- part c: fan-out -------------------------------------------------------------------------
def _fanout(a: argparse.Namespace, profile_dir: Path) -> dict[str, Any]:
    import psutil

    import rules
    from tests.support.collector import start_collector

    from .scale import BENCH_CONFIG, BENCH_INIT
    from .sim import Fleet, mint
    from .sim.scan import stage

    lib = rules.DEFAULT_LIBRARY
    sizes = sorted(a.fanout_sizes)
    stages: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vigil-bench-trust-fan-") as d:
        c = start_collector(Path(d), BENCH_CONFIG, rules_dir=lib, init_args=BENCH_INIT)
        try:
            time.sleep(1.0)  # let start-up settle before the baseline RSS
            rss0 = psutil.Process(c.proc.pid).memory_info().rss / 2**20
            t0 = time.perf_counter()
            ids, _ = mint(c.data_dir, max(sizes))
            _say(f"minted {len(ids)} identities in {time.perf_counter() - t0:.1f} s")
            pub = (c.data_dir / "rules" / "signing-public.pem").read_bytes()
            fleet = Fleet(c.stream_addr, c.ca_pem, pub, workers=2)
            try:
                have, version = 0, 1
                for n in sizes:
                    _say(f"fan-out: {n} agents ...")
                    st = stage(c, fleet, ids[have:n], lib, idle_s=a.idle_s, load_s=a.load_s,
                               rate=a.rate, fanout_runs=a.fanout_runs, rules_version=version,
                               profile=profile_dir / f"fanout-{n}.txt" if n == sizes[-1]
                               else None)
                    have = n
                    version = st["fanout"]["runs"][-1]["version"]
                    stages.append(st)
                    _say(f"fan-out {n}: all stored {st['fanout']['median_all_stored_s']} s, "
                         f"RSS {st['idle']['rss_mib']:.0f} MiB")
            finally:
                fleet.close()
        finally:
            c.stop()
    return {"backend": "sqlite", "processes": 1, "rss_base_mib": rss0, "stages": stages}


# -- part d: pages ---------------------------------------------------------------------------
def _pages(a: argparse.Namespace, pg: Any) -> dict[str, Any]:
    from .sim.pages import measure_pages

    with tempfile.TemporaryDirectory(prefix="vigil-bench-trust-pages-") as d:
        _say(f"pages: filling {a.page_captures:,} captures ...")
        return measure_pages(Path(d), a.page_captures, pg=pg, warm_runs=a.warm_runs,
                             cold_runs=a.cold_runs)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from tests.support.postgres import PgUnavailable

    from .sim.pg import BenchPg
    from .sim.worker import raise_nofile

    a = _args(argv)
    results: dict[str, Any] = {"quick": a.quick, "parts": a.parts, "nofile": raise_nofile(),
                               "load_average_start": list(_loadavg())}
    pg = None
    tmp_prof = tempfile.TemporaryDirectory(prefix="vigil-bench-trust-prof-")
    profile_dir = a.profile_dir or Path(tmp_prof.name)
    t0 = time.perf_counter()
    try:
        if {"ingest", "grpc", "pages"} & set(a.parts):
            try:
                pg = BenchPg.start()
            except PgUnavailable as exc:  # SQLite numbers only, and the report says so
                results["postgresql"] = {"missing": str(exc)}
                _say(f"no PostgreSQL: {exc}")
            else:
                results["postgresql"] = {"settings": pg.settings, "bin_dir": str(pg.bin_dir)}
                _say(f"PostgreSQL started ({pg.bin_dir}, fsync on)")
        if "ingest" in a.parts:
            results["ingest"] = _ingest(a, pg)
        if "grpc" in a.parts:
            results["grpc"] = _grpc(a, pg, profile_dir)
        if "fanout" in a.parts:
            results["fanout"] = _fanout(a, profile_dir)
        if "pages" in a.parts:
            results["pages"] = _pages(a, pg)
    finally:
        if pg is not None:
            pg.stop()
            _say("PostgreSQL stopped")
        tmp_prof.cleanup()
    results["seconds"] = time.perf_counter() - t0
    results["load_average_end"] = list(_loadavg())
    print(json.dumps({k: v for k, v in results.items() if k not in ("pages",)},
                     default=str)[:800], flush=True)
    return results


def _loadavg() -> tuple[float, float, float]:
    import os

    return os.getloadavg()


def markdown(r: dict[str, Any]) -> str:
    from .sim.trust_report import render

    return render(r)
