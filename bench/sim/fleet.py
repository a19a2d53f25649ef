"""The coordinator's view of the simulator: K worker processes, each holding a share of the
simulated agents, driven in lock-step (send a command to every worker, then collect every
reply).

    fleet = Fleet(stream_addr, ca_pem, rules_public_pem, workers=2)
    fleet.connect(identities)                 # spread round-robin over the workers
    fleet.call("load", seconds=30, rate=0.05)
    fleet.close()
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from typing import Any

from .identity import Identity
from .worker import raise_nofile, worker_main

__all__ = ["Fleet", "FleetError"]


class FleetError(RuntimeError):
    """A simulator process failed a command (the message carries its traceback)."""


class Fleet:
    def __init__(self, stream_addr: str | list[str], ca_pem: bytes,
                 rules_public_pem: bytes | None = None, workers: int = 2,
                 heartbeat_seconds: float = 30.0) -> None:
        """``stream_addr``: one collector, or a list of collectors (worker ``i`` connects its
        agents to ``stream_addr[i % len]``: agents split between collector processes)."""
        raise_nofile()
        addrs = [stream_addr] if isinstance(stream_addr, str) else list(stream_addr)
        ctx = mp.get_context("spawn")
        self.conns = []
        self.procs = []
        for i in range(workers):
            parent, child = ctx.Pipe()
            spec = {"index": i, "stream_addr": addrs[i % len(addrs)], "ca_pem": ca_pem,
                    "rules_public_pem": rules_public_pem,
                    "heartbeat_seconds": heartbeat_seconds}
            p = ctx.Process(target=worker_main, args=(child, spec), daemon=True,
                            name=f"vigil-sim-{i}")
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)
        self.size = 0

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def call(self, name: str, per_worker: list[dict[str, Any]] | None = None,
             **kwargs: Any) -> list[dict[str, Any]]:
        """Run command ``name`` on every worker at once; return their replies."""
        for i, c in enumerate(self.conns):
            c.send((name, per_worker[i] if per_worker is not None else kwargs))
        replies = [c.recv() for c in self.conns]
        for i, r in enumerate(replies):
            if "error" in r:
                raise FleetError(f"simulator {i} failed {name}: {r['error']}")
        return replies

    def connect(self, identities: list[Identity], concurrency: int = 100,
                rules_version: int = 0) -> dict[str, Any]:
        k = len(self.conns)
        shares = [[(i.device_id, i.key_pem, i.cert_pem, i.hostname)
                   for i in identities[w::k]] for w in range(k)]
        replies = self.call("connect", [{"identities": s, "concurrency": concurrency,
                                         "rules_version": rules_version} for s in shares])
        self.size += sum(r["connected"] for r in replies)
        return {"connected": sum(r["connected"] for r in replies),
                "failed": sum(r["failed"] for r in replies),
                "first_failures": [f for r in replies for f in r["first_failures"]][:3],
                "seconds": max(r["seconds"] for r in replies), "total": self.size}

    def stats(self) -> dict[str, Any]:
        rs = self.call("stats")
        out: dict[str, Any] = {k: sum(r[k] for r in rs)
                               for k in ("agents", "alive", "sent", "acked", "rejected",
                                         "backoffs", "heartbeats", "bundles", "reconnects",
                                         "rss_kib", "cpu_s")}
        out["errors"] = [e for r in rs for e in r["errors"]][:3]
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError, FleetError):
            self.call("close")
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
