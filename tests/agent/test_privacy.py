"""Privacy invariant: a typed sentence that matches nothing is found nowhere afterwards.

A real agent process on a real X display, enrolled with a real TLS collector on loopback.
We type a unique sentence, then (after Enter) a matching phrase, wait until the matching
capture is stored at the collector, stop the agent, and search every byte the agent wrote
(spool file, its -wal/-shm, log files, console output) and every byte the collector received.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.agent.minicollector import MiniCollector
from tests.support.agent import AgentProcess, enroll_cli, write_config
from tests.support.x11 import XDesktop, have_x_tools

pytestmark = [pytest.mark.x11,
              pytest.mark.skipif(not have_x_tools(), reason="needs Xvfb, openbox, xdotool")]

SECRET = "my quokka zanzibar plumtree"
# letters only: a digit string could turn up by chance in a port, pid or id
TOKENS = [b"quokka", b"zanzibar", b"plumtree"]


@pytest.fixture(scope="module")
def x() -> Iterator[XDesktop]:
    with XDesktop() as desk:
        yield desk


async def until(cond: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_unmatched_sentence_is_nowhere(x: XDesktop, tmp_path: Path, library: Path,
                                             collector: MiniCollector) -> None:
    data = tmp_path / "data"
    await asyncio.to_thread(enroll_cli, data, collector.enroll_address, "tok-1",
                            collector.write_ca(tmp_path / "ca.crt"), collector.address)
    cfg = write_config(tmp_path / "agent.toml", rules_library=str(library), context_chars=40,
                       watch_media=False, screenshot_min_severity=6, heartbeat_seconds=1)
    agent = AgentProcess(data, config_file=cfg, env=x.env).start()
    try:
        await until(lambda: "Vigil agent is running" in agent.output, "the start notice")
        await until(lambda: collector.heartbeats, "the first heartbeat")
        await asyncio.to_thread(x.open_xterm, "Chat - School")
        await asyncio.to_thread(x.type_text, f"echo {SECRET}")
        await asyncio.to_thread(x.key, "Return")
        await asyncio.to_thread(
            x.type_text, "echo honestly i just want to disappear from everything now ok")
        await asyncio.to_thread(x.key, "Return")
        await until(lambda: any(c.rule_id == "self_harm.test"
                                for c in collector.stored.values()), "the capture")
        await until(lambda: any(h.spool_depth == 0 for h in collector.heartbeats[-2:]),
                    "an empty spool reported")
        # while it runs: the WAL holds the most recent writes
        live = {f"live {p.name}": p.read_bytes() for p in data.iterdir() if p.is_file()}
        assert "live spool.sqlite3-wal" in live
    finally:
        assert await asyncio.to_thread(agent.stop) == 0, agent.output
    [cap] = [c for c in collector.stored.values() if c.rule_id == "self_harm.test"]
    assert cap.match == "want to disappear"
    assert 0 < len(cap.context) <= 40

    places: dict[str, bytes] = {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()}
    assert "spool.sqlite3" in places and "agent.log" in places
    places.update(live)
    places["agent output"] = agent.output.encode()
    places["bytes received by the collector"] = bytes(collector.wire)
    places["captures stored at the collector"] = b"".join(
        c.SerializeToString() for c in collector.stored.values())
    assert len(collector.wire) > 0 and b"disappear" in places["bytes received by the collector"]
    for name, blob in places.items():
        for token in TOKENS:
            assert token not in blob.lower(), f"{token!r} found in {name}"
