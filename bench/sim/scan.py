"""The scan over N connected agents: 100 -> 1,000 -> 5,000 -> 10,000 on one collector.

Agents are added stage by stage (already connected ones stay connected). At each stage:

1. connect the new agents (each: TLS handshake with its own certificate, ``Connect``,
   heartbeat, wait for the collector's ``AgentConfig``);
2. idle: collector CPU and RSS over ``idle_s`` (heartbeats every 30 s, keepalive pings);
3. load: every agent sends captures at ``rate`` per second for ``load_s``; ack latency;
4. fan-out: ``vigil-collector rules publish`` (the real CLI, a separate process) and the time
   until every connected agent has sent ``RulesAck`` for the new version, and until the
   collector has stored all those acks; ``fanout_runs`` times, median reported.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from tests.support.collector import RunningCollector

from .fleet import Fleet
from .identity import Identity
from .meter import Meter, summary
from .profile import Profile

__all__ = ["fanout", "stage"]


def fanout(c: RunningCollector, fleet: Fleet, rules_dir: Path, n: int,
           timeout: float = 180.0) -> dict[str, Any]:
    """Publish once; time until all ``n`` connected agents acked (sent and stored)."""
    t0 = time.time()
    out = c.cli("rules", "publish", str(rules_dir))
    t_cli = time.time()
    version = int(out.stdout.split("published version", 1)[1].split()[0])
    rs = fleet.call("rules_wait", version=version, timeout=timeout)
    acked = sum(r["acked"] for r in rs)
    last_ack = max((r["last_ack"] for r in rs if r["last_ack"]), default=None)
    first_bundle = min((r["first_bundle"] for r in rs if r["first_bundle"]), default=None)
    stored_at = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stored = c.query("SELECT COUNT(*) FROM rules_acks WHERE version = ? AND applied = 1",
                         (version,))[0][0]
        if stored >= n:
            stored_at = time.time()
            break
        time.sleep(0.02)
    acks = sorted(a - t0 for r in rs for a in r["ack_times"])
    return {"version": version, "agents": n, "acked": acked,
            "cli_s": t_cli - t0,
            "first_bundle_s": first_bundle - t0 if first_bundle else None,
            "all_acked_s": last_ack - t0 if last_ack and acked >= n else None,
            "p50_acked_s": acks[len(acks) // 2] if acks else None,
            "all_stored_s": stored_at - t0 if stored_at else None}


def stage(c: RunningCollector, fleet: Fleet, new: list[Identity], rules_dir: Path, *,
          idle_s: float, load_s: float, rate: float, fanout_runs: int,
          rules_version: int, profile: Path | None = None) -> dict[str, Any]:
    """Grow the fleet by ``new`` agents and measure this size (``profile``: sample the
    collector with py-spy during the first fan-out)."""
    with Meter(c.proc.pid) as mc:
        conn = fleet.connect(new, rules_version=rules_version)
    n = fleet.size
    result: dict[str, Any] = {
        "n": n, "connect": {**conn, "per_s": conn["connected"] / conn["seconds"]
                            if conn["seconds"] else None,
                            "collector_cpu_percent": mc.result["cpu_percent"]}}
    time.sleep(2.0)  # let the last handshakes' heartbeats commit before the idle window
    sim0 = fleet.stats()
    with Meter(c.proc.pid) as m:
        time.sleep(idle_s)
    sim1 = fleet.stats()
    result["idle"] = {**m.result, "alive": sim1["alive"], "reconnects": sim1["reconnects"],
                      "heartbeats": sim1["heartbeats"] - sim0["heartbeats"],
                      "simulator_rss_mib": sim1["rss_kib"] / 1024,
                      "simulator_cpu_percent": (sim1["cpu_s"] - sim0["cpu_s"]) / idle_s * 100}
    with Meter(c.proc.pid) as m:
        rs = fleet.call("load", seconds=load_s, rate=rate)
    lat = [x for r in rs for x in r["latencies_ms"]]
    result["load"] = {"rate_per_agent": rate, "seconds": load_s,
                      "sent": sum(r["sent"] for r in rs), "acked": sum(r["acked"] for r in rs),
                      "ack_latency": summary(lat), "collector_cpu_percent": m.result["cpu_percent"],
                      "collector_rss_mib": m.result["rss_mib"]}
    runs = []
    for i in range(fanout_runs):
        with Profile(c.proc.pid, profile if i == 0 else None) as prof:
            runs.append(fanout(c, fleet, rules_dir, n))
        if prof.summary:
            runs[-1]["profile"] = prof.summary
    done = [r["all_acked_s"] for r in runs if r["all_acked_s"] is not None]
    # The headline stops the clock when the collector has STORED every agent's RulesAck
    # (a run where some ack never reached the store counts as not done).
    stored = [r["all_stored_s"] for r in runs if r["all_stored_s"] is not None]
    result["fanout"] = {"runs": runs,
                        "median_all_acked_s": statistics.median(done) if done else None,
                        "median_all_stored_s": (statistics.median(stored)
                                                if len(stored) == len(runs) else None)}
    result["errors"] = fleet.stats()["errors"]
    return result
