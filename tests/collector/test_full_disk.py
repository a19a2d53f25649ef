"""A full disk under the data dir: the collector stops acknowledging, tells agents to back off,
keeps serving, and stores the captures once space is back. Real tmpfs mount (needs root)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from pathlib import Path

import grpc
import pytest

from tests.support.agent_client import AgentClient, make_capture
from tests.support.collector import start_collector

pytestmark = pytest.mark.mount


def _fill(path: Path) -> None:
    with open(path, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting tmpfs needs root")
async def test_full_disk_backs_off_then_recovers(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    c = None
    try:
        # --no-model: init copies the scorer artefact (~23 MB) into the data dir, which can
        # never fit this 8 MiB tmpfs (init refuses with a clear ENOSPC error instead). This
        # test is about the store filling up while serving, not about the model.
        c = start_collector(mnt, {"ingest": {"busy_timeout_ms": 200, "backoff_ms": 1000}},
                            init_args=("--no-model",))
        a = AgentClient(c.enrol_addr, c.stream_addr, c.ca_pem)
        await a.enrol(c.create_token())
        filler = mnt / "filler"
        async with a.connect() as s:
            warm = make_capture()
            await s.send_captures([warm])
            await s.wait_for(lambda s: warm.id in s.acked)
            _fill(filler)
            big = [make_capture(context="x" * 400, window_title="y" * 400) for _ in range(300)]
            await s.send_captures(big)
            await s.wait_for(lambda s: s.backoffs)
            await asyncio.wait_for(s.closed.wait(), 20)  # ended UNAVAILABLE + retry-after-ms
            assert s.error is not None and s.error.code() == grpc.StatusCode.UNAVAILABLE
            assert not ({x.id for x in big} & s.acked)  # nothing acknowledged while full
        filler.unlink()
        async with a.connect() as s:  # the agent reconnects and resends
            await s.send_captures(big)
            await s.wait_for(lambda s: {x.id for x in big} <= s.acked)
        assert c.query("SELECT COUNT(*) FROM captures")[0][0] == 301
        assert "store busy" in c.log()
    finally:
        if c is not None:
            c.stop()
        subprocess.run(["umount", "-l", str(mnt)], check=False)
