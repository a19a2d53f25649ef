"""End to end: a phrase typed by xdotool into a real X window becomes a row in the store.

Real everything: Xvfb + openbox + xterm, a real ``vigil-agent run`` process (keys through
XRecord), a real ``vigil-collector serve`` (mTLS gRPC, SQLite). Each sample types
``echo <phrase>`` and then, with the clock running, the space that completes the word
boundary (a phrase hit completes on the boundary after it, see rules/README.md). The clock
stops when a read-only SQLite connection polling every millisecond sees the committed row.

Two start times are kept: just before the ``xdotool`` process for the space is started (an
upper bound: it includes starting xdotool) and just after it exits (a lower bound). The
capture's own times (``time_ms`` stamped by the agent, ``received_at`` by the collector)
split the path into agent / wire / commit.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from .meter import pct

__all__ = ["measure_end_to_end", "phrases"]

_WORDS = ("alpha", "bravo", "delta", "foxtrot", "hotel", "kilo", "lima", "oscar", "romeo",
          "sierra", "tango", "victor", "whiskey", "yankee", "zulu")


def phrases(n: int) -> list[str]:
    """``n`` distinct three-word phrases that no ordinary sentence contains."""
    pairs = itertools.islice(itertools.permutations(_WORDS, 2), n)
    return [f"quokka {a} {b}" for a, b in pairs]


def _library(root: Path, ps: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    body = ['category = "bullying"', ""]
    for i, p in enumerate(ps):
        body += ["[[rule]]", f'id = "e2e.p{i:03d}"', "severity = 2", f'phrases = ["{p}"]',
                 'sources = ["keys"]', "screenshot = false", ""]
    (root / "bullying.toml").write_text("\n".join(body))
    return root


def _summary(xs: list[float]) -> dict[str, float]:
    return {"p50_ms": statistics.median(xs), "p99_ms": pct(xs, 0.99), "max_ms": max(xs),
            "min_ms": min(xs)}


def measure_end_to_end(samples: int = 50, timeout: float = 30.0) -> dict[str, Any]:
    from tests.support.agent import AgentProcess, enroll_cli, write_config
    from tests.support.collector import start_collector
    from tests.support.x11 import XDesktop, wait_for

    ps = phrases(samples)
    with tempfile.TemporaryDirectory(prefix="vigil-bench-e2e-") as d:
        tmp = Path(d)
        lib = _library(tmp / "lib", ps)
        c = start_collector(tmp, {"server": {"rules_poll_seconds": 1.0}}, rules_dir=lib)
        data = tmp / "agent"
        cfg = write_config(tmp / "agent.toml", rules_library=str(lib), watch_media=False,
                           screenshot_min_severity=6)
        rows: list[dict[str, float]] = []
        try:
            enroll_cli(data, c.enrol_addr, c.create_token(group="secondary"), c.ca_path,
                       c.stream_addr)
            with XDesktop() as x, AgentProcess(data, config_file=cfg, env=x.env) as agent:
                agent.wait_for_log("Vigil agent is running")

                def rules_v1() -> bool:
                    try:
                        return int(json.loads((data / "rules.json").read_text())
                                   ["version"]) >= 1
                    except (OSError, ValueError, KeyError):
                        return False
                wait_for(rules_v1, timeout=60, what="the agent to apply the collector's rules")
                x.open_xterm("Form tutor chat")
                db = sqlite3.connect(f"file:{c.db_path}?mode=ro", uri=True, timeout=10)
                try:
                    for i, p in enumerate(ps):
                        x.type_text(f"echo {p}")
                        t_before = time.time()
                        x.xdotool("type", "--delay", "0", "--", " ")
                        t_after = time.time()
                        deadline = time.monotonic() + timeout
                        row = None
                        while row is None and time.monotonic() < deadline:
                            row = db.execute("SELECT time_ms, received_at FROM captures "
                                             "WHERE rule_id = ?", (f"e2e.p{i:03d}",)).fetchone()
                            if row is None:
                                time.sleep(0.001)
                        t_seen = time.time()
                        x.key("Return")
                        if row is None:
                            rows.append({"lost": 1.0})
                            continue
                        rows.append({
                            "upper_ms": (t_seen - t_before) * 1000,
                            "lower_ms": (t_seen - t_after) * 1000,
                            "xdotool_ms": (t_after - t_before) * 1000,
                            "key_to_capture_ms": row[0] - t_before * 1000,
                            "capture_to_received_ms": row[1] - row[0],
                            "received_to_visible_ms": t_seen * 1000 - row[1]})
                finally:
                    db.close()
        finally:
            c.stop()
    ok = [r for r in rows if "lost" not in r]
    out: dict[str, Any] = {"samples": samples, "stored": len(ok),
                           "lost": len(rows) - len(ok)}
    if ok:
        for k in ("upper_ms", "lower_ms", "xdotool_ms", "key_to_capture_ms",
                  "capture_to_received_ms", "received_to_visible_ms"):
            out[k] = _summary([r[k] for r in ok])
    return out
