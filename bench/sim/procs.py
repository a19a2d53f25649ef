"""Collector processes for the trust benchmark: a PostgreSQL-backed data dir set up the way
``init`` and the technician CLI do it, and a second ``serve`` on an existing data dir (two
stateless collectors on one store, as in tests/e2e/test_failover.py)."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.collector import RunningCollector

__all__ = ["prepare_postgres", "serve_more"]

_LINE = re.compile(r"^(stream|enrol|console): (\S+)$")
_ROOT = Path(__file__).resolve().parents[2]


def prepare_postgres(data_dir: Path, url: str, rules_dir: Path, dsl_email: str) -> int:
    """What ``init`` did for the SQLite file, in the PostgreSQL database at ``url``: the
    default site with its DSL contact, the group, ``rules_dir`` published. Returns the
    published version."""
    from collector.config import load_config
    from collector.services import rules as rules_admin
    from collector.store import open_configured_store

    now = int(time.time() * 1000)
    store = open_configured_store(load_config(None, data_dir), url=url)
    try:
        store.ensure_site("default", "Default", now)
        store.set_site_contacts("default", [dsl_email], None)
        store.ensure_group("default", "secondary", "secondary")
        try:
            p = rules_admin.publish(store, data_dir, rules_dir, "cli:bench", now)
        except Exception:  # no learned model in this data dir: the rules alone
            p = rules_admin.publish(store, data_dir, rules_dir, "cli:bench", now, model="none")
        return int(p.version.version)
    finally:
        store.close()


def serve_more(data_dir: Path, name: str, timeout: float = 60) -> RunningCollector:
    """Another ``vigil-collector serve`` on ``data_dir`` (same config, PKI and store),
    returned once it prints ``ready``."""
    log_path = data_dir / f"serve-{name}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "serve", "--data-dir", str(data_dir),
             "--listen", "127.0.0.1:0", "--enroll-listen", "127.0.0.1:0",
             "--console-listen", "127.0.0.1:0", "--no-console"],
            stdout=subprocess.PIPE, stderr=log, text=True, cwd=_ROOT)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            proc.kill()
            proc.wait(10)
            raise TimeoutError(f"{name} not ready in {timeout} s:\n{log_path.read_text()}"
                               ) from None
        if line == "ready":
            return RunningCollector(data_dir, proc, found["enrol"], found["stream"], None,
                                    log_path, lines)
        if line == "" and proc.poll() is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode}):\n{log_path.read_text()}")
        if m := _LINE.match(line):
            found[m.group(1)] = m.group(2)
