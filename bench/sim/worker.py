"""A simulator process: holds thousands of :class:`SimAgent` streams in one asyncio loop and
obeys commands from the coordinator (:class:`bench.sim.fleet.Fleet`) over a pipe.

Commands are ``(name, kwargs)``; every command gets exactly one reply (a dict; on failure
``{"error": "..."}``).
"""

from __future__ import annotations

import asyncio
import resource
import time
import traceback
import zlib
from multiprocessing.connection import Connection
from typing import Any

from .agent import BundleCheck, SimAgent, Tally
from .identity import Identity

__all__ = ["raise_nofile", "worker_main"]


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE to the hard limit (one socket per agent); return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class _Worker:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.tally = Tally()
        self.check = BundleCheck(spec.get("rules_public_pem"))
        self.agents: list[SimAgent] = []
        self.index = int(spec.get("index", 0))
        self.burst_plan: list[tuple[SimAgent, list[tuple[str, bytes, int]]]] = []

    async def connect(self, identities: list[tuple[str, bytes, bytes, str]],
                      concurrency: int = 100, rules_version: int = 0) -> dict[str, Any]:
        sem = asyncio.Semaphore(concurrency)
        new: list[SimAgent] = []
        failures: list[str] = []
        for dev, key, cert, host in identities:
            seed = zlib.crc32(dev.encode())
            new.append(SimAgent(Identity(dev, key, cert, host), self.spec["stream_addr"],
                                self.spec["ca_pem"], self.tally, self.check,
                                heartbeat_seconds=self.spec.get("heartbeat_seconds", 30.0),
                                seed=seed, rules_version=rules_version))

        async def one(a: SimAgent) -> None:
            async with sem:
                try:
                    await a.connect(timeout=self.spec.get("connect_timeout", 180.0))
                except Exception as exc:
                    failures.append(a.error or repr(exc))

        t0 = time.perf_counter()
        await asyncio.gather(*(one(a) for a in new))
        elapsed = time.perf_counter() - t0
        self.agents += [a for a in new if a.configured.is_set()]
        return {"connected": sum(a.configured.is_set() for a in new), "failed": len(failures),
                "first_failures": failures[:3], "seconds": elapsed, "total": len(self.agents)}

    async def stats(self) -> dict[str, Any]:
        t = self.tally
        alive = sum(not a.closed.is_set() for a in self.agents)
        errors = [a.error for a in self.agents if a.error][:3]
        rss = 0
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        return {"agents": len(self.agents), "alive": alive, "sent": t.sent, "acked": t.acked,
                "rejected": t.rejected, "backoffs": t.backoffs, "heartbeats": t.heartbeats,
                "bundles": t.bundles, "reconnects": t.reconnects, "errors": errors,
                "rss_kib": rss, "cpu_s": _cpu_s()}

    async def load(self, seconds: float, rate: float) -> dict[str, Any]:
        """Every agent sends captures at ``rate``/s for ``seconds``; returns ack latencies."""
        t = self.tally
        t.latencies_ms = []
        sent0, acked0 = t.sent, t.acked
        await asyncio.gather(*(a.load(rate, seconds) for a in self.agents))
        await asyncio.gather(*(a.drain(120.0) for a in self.agents), return_exceptions=True)
        return {"sent": t.sent - sent0, "acked": t.acked - acked0,
                "latencies_ms": list(t.latencies_ms)}

    async def burst_prepare(self, streams: int, per_stream: int, batch: int) -> dict[str, Any]:
        """Serialise the captures for a burst on the first ``streams`` agents (not timed)."""
        if streams > len(self.agents):
            return {"error": f"only {len(self.agents)} agents connected, {streams} asked"}
        now = int(time.time() * 1000)
        self.burst_plan = []
        for a in self.agents[:streams]:
            batches = []
            for _ in range(per_stream // batch):
                first, data = a.mix.batch_bytes(batch, now)
                batches.append((first, data, batch))
            self.burst_plan.append((a, batches))
        return {"ready": sum(len(b) * batch for _, b in self.burst_plan)}

    async def burst_go(self, window: int) -> dict[str, Any]:
        t = self.tally
        t.latencies_ms = []
        sent0, acked0, back0, rec0 = t.sent, t.acked, t.backoffs, t.reconnects
        cpu0 = _cpu_s()
        start = time.time()
        await asyncio.gather(*(a.burst(b, window) for a, b in self.burst_plan))
        end = time.time()
        self.burst_plan = []
        return {"start": start, "end": end, "sent": t.sent - sent0, "acked": t.acked - acked0,
                "backoffs": t.backoffs - back0, "reconnects": t.reconnects - rec0,
                "cpu_s": _cpu_s() - cpu0,
                "latencies_ms": list(t.latencies_ms)}

    async def rules_wait(self, version: int, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until every connected agent has acknowledged rules ``version``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(version in a.rules_ack_at or a.closed.is_set() for a in self.agents):
                break
            await asyncio.sleep(0.01)
        acks = [a.rules_ack_at[version] for a in self.agents if version in a.rules_ack_at]
        got = [a.bundle_at[version] for a in self.agents if version in a.bundle_at]
        return {"agents": len(self.agents), "acked": len(acks),
                "first_bundle": min(got, default=None), "last_bundle": max(got, default=None),
                "last_ack": max(acks, default=None), "ack_times": acks}

    async def close(self) -> dict[str, Any]:
        await asyncio.gather(*(a.close() for a in self.agents), return_exceptions=True)
        n = len(self.agents)
        self.agents = []
        return {"closed": n}


async def _serve(conn: Connection, spec: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    w = _Worker(spec)
    while True:
        name, kwargs = await loop.run_in_executor(None, conn.recv)
        try:
            reply = await getattr(w, name)(**kwargs)
        except Exception:
            reply = {"error": traceback.format_exc()[-2000:]}
        conn.send(reply)
        if name == "close":
            return


def worker_main(conn: Connection, spec: dict[str, Any]) -> None:
    """Process entry point (multiprocessing, spawn)."""
    raise_nofile()
    asyncio.run(_serve(conn, spec))
