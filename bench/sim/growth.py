"""Growth: ingest rate and DSL queue-page latency as the store grows (10k -> 100k -> 1M).

For each size a fresh collector data dir is initialised and filled with a year of captures
by ``bench.console``'s own filler (``_fill``: 4 captures per queue item, 3 sites, ~3 % of
items open), then the real collector is started on it and a burst of captures is streamed in
by simulated agents (stored captures/s at that size). Then the queue page is timed with
``bench.console``'s page timer (full HTTP stack in process, as the console benchmark does).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from .fleet import Fleet
from .identity import mint
from .ingest import bursts

__all__ = ["growth_point"]


def _pages(db: Path, data_dir: Path, runs: int) -> dict[str, Any]:
    from starlette.testclient import TestClient

    from bench import console as console_bench
    from collector.console import create_app

    app = create_app(db, data_dir, public_url="https://testserver", allowed_hosts=["testserver"])
    with TestClient(app, base_url="https://testserver") as client:
        page = client.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        if token is None:
            raise RuntimeError("console login page has no CSRF token")
        r = client.post("/login", data={"username": "dsl", "password": "benchmark password",
                                        "csrf": token.group(1)}, follow_redirects=False)
        if r.status_code != 303:
            raise RuntimeError(f"console login failed ({r.status_code})")
        return {"queue": console_bench._time(client, "/queue", runs),
                "queue_all": console_bench._time(client, "/queue?status=all", runs)}


def growth_point(size: int, *, streams: int, per_stream: int, batch: int, window: int,
                 runs: int, page_runs: int, workers: int, rules_dir: Path,
                 init_args: tuple[str, ...] = ()) -> dict[str, Any]:
    from bench import console as console_bench
    from tests.support.collector import init_data_dir, start_collector

    with tempfile.TemporaryDirectory(prefix="vigil-bench-growth-") as d:
        tmp = Path(d)
        data_dir = tmp / "collector"
        init_data_dir(data_dir, "--rules", str(rules_dir), *init_args)
        filled = console_bench._fill(data_dir / "vigil.db", size)
        # The filler spreads a year of history; keep it (the scheduled purge would delete
        # the old closed and false-positive items at start-up and shrink the store).
        keep: dict[str, dict[str, Any]] = {
            "server": {"rules_poll_seconds": 1.0},
            "retention": {"false_positive_days": 36_500, "closed_days": 36_500}}
        c = start_collector(tmp, keep, rules_dir=rules_dir, init_args=init_args)
        try:
            ids, _ = mint(c.data_dir, streams)
            fleet = Fleet(c.stream_addr, c.ca_pem, workers=workers)
            try:
                fleet.connect(ids, rules_version=1)
                ingest = bursts(fleet, c.proc.pid, streams, per_stream, batch, window, runs)
            finally:
                fleet.close()
        finally:
            c.stop()
        total = c.query("SELECT COUNT(*) FROM captures")[0][0]
        pages = _pages(data_dir / "vigil.db", data_dir, page_runs)
        return {"size": size, "fill": filled, "captures_after": total,
                "db_mb": round((data_dir / "vigil.db").stat().st_size / 1e6, 1),
                "ingest": ingest, "pages": pages}
