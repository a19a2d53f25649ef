"""Scale benchmark: thousands of simulated agents against a real collector, end to end.

    python -m bench scale                       # the full suite (about 20 minutes)
    python -m bench scale --parts fleet,ingest  # some parts only
    python -m bench --quick scale               # reduced (CI): N=100, a few captures

Parts:

* ``e2e``: a phrase typed by xdotool into a real X window -> row in the collector's store
  (real agent process, real collector), p50/p99 (:mod:`bench.sim.endtoend`).
* ``fleet``: N = 100 -> 1,000 -> 5,000 -> 10,000 simulated agents, each with its own key,
  certificate and mTLS connection, on one collector: connect rate, collector RSS/CPU idle,
  ack latency under load, rule fan-out (:mod:`bench.sim.scan`). The first agents enrol over
  the wire (``Enrollment.Enroll``, timed: enrolment throughput); the rest are minted from the
  collector's CA and store (:func:`bench.sim.identity.mint`) to save time.
* ``ingest``: stored captures/s at 50 and 1,000 concurrent streams on the same collector,
  and the ratio to raw ``executemany`` into the same schema in the same run
  (:mod:`bench.sim.ingest`).
* ``growth``: ingest and queue-page latency with 10k, 100k and 1M captures stored
  (:mod:`bench.sim.growth`).
* ``others``: agent footprint and matcher cost, from ``bench.agent`` and ``bench.rules``
  (their last recorded results, or run them with ``--rerun-others``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "markdown"]

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("e2e", "fleet", "ingest", "growth", "others")
#: The simulator comes from one address, so the per-address enrolment limit is raised
#: (the default 5/s with a burst of 20 protects a real school from a token-guessing client).
BENCH_CONFIG: dict[str, dict[str, Any]] = {
    "server": {"rules_poll_seconds": 1.0},
    "enrolment": {"rate_per_second": 10_000.0, "burst": 10_000},
}
#: A school has its DSL's address set (so an alert is recorded once per queue item); no SMTP
#: server is configured, so alert emails are recorded as not sent instead of being delivered.
BENCH_INIT = ("--dsl-email", "dsl@school.example")


_T0 = time.monotonic()


def _say(msg: str) -> None:
    print(f"scale [{time.monotonic() - _T0:7.1f} s] {msg}", flush=True)


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="reduced sizes (CI)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {PARTS}")
    p.add_argument("--sizes", help="fleet sizes (default 100,1000,5000,10000)")
    p.add_argument("--workers", type=int, default=2, help="simulator processes (2)")
    p.add_argument("--rate", type=float, help="captures/s per agent during the load phase")
    p.add_argument("--idle-seconds", type=float, help="idle window per fleet size")
    p.add_argument("--load-seconds", type=float, help="load window per fleet size")
    p.add_argument("--fanout-runs", type=int, help="publishes per fleet size (median)")
    p.add_argument("--ingest-runs", type=int, help="bursts per stream count (median)")
    p.add_argument("--wire-enrol", type=int, help="agents enrolled over the wire (timed)")
    p.add_argument("--e2e-samples", type=int, help="typed phrases for the end-to-end part")
    p.add_argument("--growth-sizes", help="store sizes (default 10000,100000,1000000)")
    p.add_argument("--plots-dir", help="write the PNG plots here (default docs/; none "
                   "with --quick)")
    p.add_argument("--profile-dir", type=Path,
                   help="sample the collector with py-spy during the first ingest burst of "
                        "each stream count and the largest idle/fan-out stage; write here")
    p.add_argument("--keep-other-parts", action="store_true",
                   help="keep the parts not run now from the last bench/results/scale.json")
    p.add_argument("--rerun-others", action="store_true",
                   help="run bench.agent and bench.rules instead of reading their results")
    a = p.parse_args(argv)
    q = a.quick
    a.parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    unknown = set(a.parts) - set(PARTS)
    if unknown:
        p.error(f"unknown part(s) {sorted(unknown)}; choose from {PARTS}")
    a.sizes = _ints(a.sizes) if a.sizes else ([100] if q else [100, 1000, 5000, 10000])
    a.rate = a.rate if a.rate is not None else (1.0 if q else 0.05)
    a.idle_seconds = a.idle_seconds if a.idle_seconds is not None else (1.0 if q else 30.0)
    a.load_seconds = a.load_seconds if a.load_seconds is not None else (2.0 if q else 20.0)
    a.fanout_runs = a.fanout_runs or (1 if q else 3)
    a.ingest_runs = a.ingest_runs or (1 if q else 3)
    a.wire_enrol = a.wire_enrol if a.wire_enrol is not None else (20 if q else 1000)
    a.e2e_samples = a.e2e_samples or (3 if q else 50)
    a.growth_sizes = _ints(a.growth_sizes) if a.growth_sizes else (
        [2000] if q else [10_000, 100_000, 1_000_000])
    a.ingest_shapes = ([(10, 200, 50), (100, 20, 10)] if q
                       else [(50, 2000, 100), (1000, 100, 50)])  # streams, per stream, batch
    return a


def _fleet_and_ingest(a: argparse.Namespace, results: dict[str, Any]) -> None:
    import rules
    from tests.support.collector import start_collector

    from .sim import Fleet, enrol_over_wire, mint
    from .sim.ingest import bursts, raw_executemany
    from .sim.scan import stage

    lib = rules.DEFAULT_LIBRARY
    do_fleet, do_ingest = "fleet" in a.parts, "ingest" in a.parts
    need_ingest_at = max(s for s, _, _ in a.ingest_shapes)
    sizes = a.sizes if do_fleet else [need_ingest_at]
    if do_ingest and max(sizes) < need_ingest_at:
        sizes = [*sizes, need_ingest_at]
    with tempfile.TemporaryDirectory(prefix="vigil-bench-scale-") as d:
        c = start_collector(Path(d), BENCH_CONFIG, rules_dir=lib, init_args=BENCH_INIT)
        try:
            n_wire = min(a.wire_enrol, max(sizes))
            token = c.create_token(uses=max(n_wire, 1), expires="1d")
            wire_ids, enrol = asyncio.run(enrol_over_wire(
                c.enrol_addr, c.stream_addr, c.ca_pem, token, n_wire))
            results["enrolment"] = enrol
            _say(f"enrolled {enrol['enrolled']} agents over the wire ({enrol['per_s']:.0f}/s)")
            t0 = time.perf_counter()
            minted, mint_t = mint(c.data_dir, max(sizes) - len(wire_ids), start=len(wire_ids))
            results["mint"] = {"n": len(minted), "seconds": time.perf_counter() - t0, **mint_t}
            ids = wire_ids + minted
            _say(f"minted {len(minted)} more identities")
            pub = (c.data_dir / "rules" / "signing-public.pem").read_bytes()
            fleet = Fleet(c.stream_addr, c.ca_pem, pub, workers=a.workers)
            stages: list[dict[str, Any]] = []
            results["fleet"] = {"workers": a.workers, "rate_per_agent": a.rate,
                                "stages": stages}
            try:
                have, version = 0, 1
                for n in sizes:
                    _say(f"fleet of {n} agents ...")
                    # the largest fleet idles twice as long: it is the headline number
                    idle = a.idle_seconds * (2 if n == max(sizes) and len(sizes) > 1 else 1)
                    st = stage(c, fleet, ids[have:n], lib, idle_s=idle,
                               load_s=a.load_seconds, rate=a.rate,
                               fanout_runs=a.fanout_runs if do_fleet else 0,
                               rules_version=version,
                               profile=a.profile_dir / f"fanout-{n}.txt"
                               if a.profile_dir and n == max(sizes) else None)
                    have = n
                    runs = st["fanout"]["runs"]
                    version = runs[-1]["version"] if runs else version
                    stages.append(st)
                    print(json.dumps({k: v for k, v in st.items() if k != "fanout"},
                                     default=str)[:600], flush=True)
                    if do_ingest and n >= need_ingest_at and "ingest" not in results:
                        results["ingest"] = _ingest(a, fleet, c.proc.pid, bursts,
                                                    raw_executemany)
            finally:
                fleet.close()
                _say("simulators closed")
            results["collector_log_tail"] = c.log()[-1500:]
        finally:
            c.stop()
            _say("collector stopped")
    if not do_fleet:
        results.pop("fleet", None)


def _ingest(a: argparse.Namespace, fleet: Any, pid: int, bursts: Any,
            raw_executemany: Any) -> dict[str, Any]:
    from .sim.ingest import store_only

    out: dict[str, Any] = {"by_streams": []}
    for streams, per_stream, batch in a.ingest_shapes:
        _say(f"ingest burst, {streams} streams ...")
        prof = a.profile_dir / f"ingest-{streams}.txt" if a.profile_dir else None
        r = bursts(fleet, pid, streams, per_stream, batch, 10, a.ingest_runs, prof)
        raws = [raw_executemany(streams * per_stream, seed=i) for i in range(a.ingest_runs)]
        r["raw"] = raws
        r["raw_median_per_s"] = sorted(x["captures_per_s"] for x in raws)[len(raws) // 2]
        r["ratio"] = r["median_per_s"] / r["raw_median_per_s"]
        r["store_only"] = store_only(streams, min(per_stream, 100_000 // streams), batch)
        out["by_streams"].append(r)
        _say(f"{streams} streams: {r['median_per_s']:,.0f}/s, raw "
              f"{r['raw_median_per_s']:,.0f}/s")
    return out


def _growth(a: argparse.Namespace, results: dict[str, Any]) -> None:
    import rules

    from .sim.growth import growth_point

    pts = []
    for size in a.growth_sizes:
        _say(f"growth, {size:,} captures stored ...")
        streams, per_stream = (10, 100) if a.quick else (50, 1000)
        pts.append(growth_point(size, streams=streams, per_stream=per_stream, batch=100,
                                window=10, runs=1 if a.quick else 2,
                                page_runs=5 if a.quick else 30, workers=a.workers,
                                rules_dir=rules.DEFAULT_LIBRARY, init_args=BENCH_INIT))
    results["growth"] = pts


def _others(a: argparse.Namespace, results: dict[str, Any]) -> None:
    import importlib

    out: dict[str, Any] = {}
    for area in ("agent", "rules"):
        path = ROOT / "bench" / "results" / f"{area}.json"
        try:
            if a.rerun_others:
                mod = importlib.import_module(f"bench.{area}")
                out[area] = {"source": f"bench.{area}.main() in this run",
                             **mod.main(["--quick"] if a.quick else [])}
            elif path.exists():
                r = json.loads(path.read_text())
                out[area] = {"source": f"bench/results/{area}.json "
                                       f"({r.get('machine', {}).get('date', '?')})", **r}
            else:
                out[area] = {"missing": f"no bench/results/{area}.json; run "
                                        f"`python -m bench {area}`"}
        except Exception as exc:  # another area's failure must not lose these numbers
            out[area] = {"missing": f"bench.{area} failed: {exc!r}"[:300]}
    results["others"] = out


_PART_KEYS = {"e2e": ("e2e",), "fleet": ("fleet", "enrolment", "mint"), "ingest": ("ingest",),
              "growth": ("growth",), "others": ("others",)}


def _merge_previous(results: dict[str, Any], ran: list[str]) -> None:
    """Carry the parts not run now over from the last recorded bench/results/scale.json, so
    the suite can be recorded part by part; ``part_runs`` says when each part ran."""
    path = ROOT / "bench" / "results" / "scale.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    for part, keys in _PART_KEYS.items():
        if part in ran:
            continue
        for k in keys:
            if k in old and k not in results:
                results[k] = old[k]
        if part in old.get("part_runs", {}):
            results["part_runs"][part] = old["part_runs"][part]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from .sim.worker import raise_nofile

    a = _args(argv)
    results: dict[str, Any] = {"quick": a.quick, "parts": a.parts,
                               "nofile": raise_nofile()}
    t0 = time.perf_counter()
    if "e2e" in a.parts:
        from tests.support.x11 import have_x_tools

        from .sim.endtoend import measure_end_to_end

        _say("end to end ...")
        results["e2e"] = (measure_end_to_end(a.e2e_samples) if have_x_tools()
                          else {"missing": "needs Xvfb, openbox, xterm, xdotool"})
    if "fleet" in a.parts or "ingest" in a.parts:
        _fleet_and_ingest(a, results)
    if "growth" in a.parts:
        _growth(a, results)
    if "others" in a.parts:
        _others(a, results)
    results["seconds"] = time.perf_counter() - t0
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results["part_runs"] = {p: {"date": stamp, "argv": list(argv or [])} for p in a.parts}
    if a.keep_other_parts:
        _merge_previous(results, a.parts)
    plots = a.plots_dir or (None if a.quick else str(ROOT / "docs"))
    if plots:
        from .plot import plot

        results["plots"] = [str(p) for p in plot(results, Path(plots))]
    return results


def markdown(r: dict[str, Any]) -> str:
    from .sim.report import render

    return render(r)
