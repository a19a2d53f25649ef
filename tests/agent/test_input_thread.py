"""The OS input thread only enqueues: a key handler that is slow is removed by the OS
(Windows' low-level hook timeout), so the screenshot (mss + PNG) and the spool's SQLite write
of a capture must run on the agent's input worker, never on the thread that delivered the
key. Real monitor, capture builder and SQLite spool; the screenshot blocks on purpose until
the test has seen every key handler return."""

from __future__ import annotations

import threading
from pathlib import Path

from agent.capture import CaptureBuilder
from agent.config import Config
from agent.monitor import Monitor
from agent.paths import DataDir
from agent.rulestate import ActiveRules
from agent.sources import KeyEvent, WindowInfo
from agent.spool import Spool


def test_key_handlers_return_while_the_capture_is_still_being_built(tmp_path: Path,
                                                                    library: Path) -> None:
    data = DataDir(tmp_path / "data").ensure()
    spool = Spool(data.spool)
    entered, release = threading.Event(), threading.Event()
    shot_threads: list[str] = []

    def slow_screenshot() -> bytes:
        shot_threads.append(threading.current_thread().name)
        entered.set()
        release.wait(30)
        return b"\x89PNG"

    builder = CaptureBuilder(spool, os_user="pupil", hostname="laptop",
                             screenshot=slow_screenshot)
    mon = Monitor(Config(rules_library=str(library), scorer=False),
                  ActiveRules(data, library).load(), builder)
    mon.start(None, None, None)
    try:
        mon.on_window(WindowInfo("Diary", "gedit", 7))
        for ch in "i cut myself":  # severity 4, screenshot allowed: a slow capture
            mon.on_key(KeyEvent("char", ch))
        mon.on_key(KeyEvent("reset"))
        assert entered.wait(30), "the capture was never built"
        # the worker is stuck in the screenshot; the input thread is not
        for ch in "more typing while the screenshot is taken":
            mon.on_key(KeyEvent("char", ch))
        assert spool.all() == []  # still being built, on another thread
        assert shot_threads == ["vigil-input"]
        release.set()
        assert mon.wait_inputs(30)
        [cap] = spool.all()
        assert cap.rule_id == "self_harm.test" and cap.screenshot_png == b"\x89PNG"
    finally:
        release.set()
        mon.stop()
        spool.close()
