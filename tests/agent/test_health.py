"""Never fail silently: a source that dies is restarted with back-off, and its state reaches
``vigil-agent status`` and the heartbeat. Real sources: the X11 key source on an X server
without the RECORD extension, the X11 window source on a real Xvfb that is then killed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent.config import Config
from agent.enrol import enroll
from agent.paths import DataDir
from agent.platform import Backends
from agent.sources.input_x11 import X11InputSource
from agent.sources.window_x11 import X11WindowSource
from agent.status import status_report
from proto import vigil_pb2 as pb
from tests.agent.minicollector import MiniCollector
from tests.support.agent import InProcessAgent
from tests.support.x11 import XDesktop, have_x_tools

pytestmark = [pytest.mark.x11,
              pytest.mark.skipif(not have_x_tools(), reason="needs Xvfb, openbox, xdotool")]


def sources(hb: pb.Heartbeat) -> dict[str, pb.SourceHealth]:
    return {s.name: s for s in hb.sources}


async def test_dead_sources_are_restarted_and_reported(
        data: DataDir, config: Config, collector: MiniCollector, tmp_path: Path) -> None:
    ca = collector.write_ca(tmp_path / "ca.crt")
    await asyncio.to_thread(enroll, data, collector.enroll_address, "tok-1", ca,
                            collector.address)
    x = await asyncio.to_thread(XDesktop().start)
    bare = await asyncio.to_thread(XDesktop(window_manager=False, record=False).start)
    try:
        backends = Backends("x11", X11WindowSource(x.display), X11InputSource(bare.display),
                            None)
        # a long back-off: one failure is enough to see, and no retry races the test's end
        cfg = config.replace(watch_media=False, backoff_initial_seconds=4.0,
                             backoff_max_seconds=8.0)
        async with InProcessAgent(data, cfg, backends=backends) as agent:
            await asyncio.to_thread(x.open_xterm, "Health")

            def keys_down() -> bool:
                hb = collector.heartbeats[-1] if collector.heartbeats else None
                s = sources(hb) if hb else {}
                return ("keys" in s and s["keys"].state in ("restarting", "failed")
                        and s.get("window") is not None
                        and s["window"].state == "running"
                        and s["window"].last_event_unix_ms > 0)

            await agent.wait_for(keys_down, what="a heartbeat with the keys source down")
            hb = sources(collector.heartbeats[-1])
            assert "RECORD" in hb["keys"].error
            await agent.wait_for(lambda: json.loads(data.state_json.read_text())
                                 .get("sources", {}).get("keys", {}).get("state") in
                                 ("restarting", "failed"), what="state.json with the keys source")
            report = status_report(data, cfg)
            assert "WARNING: not monitoring keys" in report
            assert "Source window: running (last event" in report
            assert "Screenshots: the focused window only" in report

            await asyncio.to_thread(x.stop)  # the display server goes away
            await agent.wait_for(lambda: collector.heartbeats and sources(
                collector.heartbeats[-1])["window"].state in ("restarting", "failed"),
                what="a heartbeat with the window source down")
            assert agent.runtime.monitor.health["window"].failures >= 1
    finally:
        await asyncio.to_thread(x.stop)
        await asyncio.to_thread(bare.stop)
