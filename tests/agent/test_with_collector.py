"""End to end with the REAL collector (tests/support/collector.py): a phrase typed into a real
X window reaches the collector's store, survives a collector outage and an agent restart, and
is stored exactly once; a sentence that matches nothing is in none of the collector's files."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.conftest import write_library
from tests.support.agent import AgentProcess, enroll_cli, spool_captures, write_config
from tests.support.collector import start_collector
from tests.support.x11 import XDesktop, have_x_tools, wait_for

pytestmark = [pytest.mark.x11,
              pytest.mark.skipif(not have_x_tools(), reason="needs Xvfb, openbox, xdotool")]

SECRET_TOKENS = [b"wombat", b"glasshouse", b"tangerine"]


@pytest.fixture(scope="module")
def x() -> Iterator[XDesktop]:
    with XDesktop() as desk:
        yield desk


def rules_version(data: Path) -> int:
    import json

    try:
        return int(json.loads((data / "rules.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return -1


def test_typed_phrase_survives_outage_and_restart_exactly_once(x: XDesktop,
                                                               tmp_path: Path) -> None:
    c = start_collector(tmp_path)
    data = tmp_path / "agent"
    cfg = write_config(tmp_path / "agent.toml",
                       rules_library=str(write_library(tmp_path / "lib")),
                       watch_media=False, screenshot_min_severity=6, heartbeat_seconds=1)
    agent = None
    try:
        token = c.create_token(group="secondary")
        enroll_cli(data, c.enrol_addr, token, c.ca_path, c.stream_addr)
        agent = AgentProcess(data, config_file=cfg, env=x.env,
                             extra_args=("--verbose",)).start()
        agent.wait_for_log("Vigil agent is running")
        # the collector pushes its signed rules (version 1); the agent pins and applies them
        wait_for(lambda: rules_version(data) == 1, timeout=30, what="rules version 1")
        status = wait_for(lambda: "Connection: connected" in (out := subprocess.run(
            [sys.executable, "-m", "agent.cli", "status", "--data-dir", str(data)],
            capture_output=True, text=True, timeout=60).stdout) and out, what="status")
        assert f"Collector: {c.stream_addr}" in status and "Rules version: 1" in status
        agent.wait_for_focus(x.open_xterm("Form tutor chat"))
        x.type_text("echo my wombat glasshouse tangerine")
        x.key("Return")
        x.type_text("echo this is the collector test phrase")
        x.key("Return")
        first = wait_for(lambda: c.query("SELECT id, context, window_title FROM captures "
                                         "WHERE rule_id = 'test.self_harm'"),
                         timeout=30, what="the capture in the collector's store")
        assert first[0][2] == "Form tutor chat"
        wait_for(lambda: not spool_captures(data), what="the spool to empty after the ack")

        assert c.stop() == 0  # outage
        agent.wait_for_focus(x.open_xterm("Second window"))
        x.type_text("echo collector test phrase while offline")
        x.key("Return")
        [waiting] = wait_for(lambda: spool_captures(data), what="the capture in the spool")
        assert agent.stop() == 0
        assert [w.id for w in spool_captures(data)] == [waiting.id]  # restart keeps it

        c = start_collector(tmp_path)  # same data dir, new port
        agent = AgentProcess(data, config_file=cfg, env=x.env,
                             extra_args=("--collector", c.stream_addr)).start()
        wait_for(lambda: c.query("SELECT COUNT(*) FROM captures WHERE id = ?",
                                 (waiting.id,))[0][0] == 1, timeout=30,
                 what="the offline capture delivered after the restart")
        wait_for(lambda: not spool_captures(data), what="the spool to empty")
        rows = c.query("SELECT id FROM captures WHERE rule_id = 'test.self_harm'")
        assert sorted(r[0] for r in rows) == sorted([first[0][0], waiting.id])

        # a technician publishes new rules: the connected agent applies them within seconds
        new_rules = tmp_path / "rules_v2"
        new_rules.mkdir()
        (new_rules / "drugs.toml").write_text(
            'category = "drugs"\n[[rule]]\nid = "test.new_rule"\nseverity = 3\n'
            'phrases = ["freshly published phrase"]\nsources = ["keys"]\n')
        c.cli("rules", "publish", str(new_rules))
        wait_for(lambda: rules_version(data) == 2, timeout=30, what="rules version 2")
        x.type_text("echo a freshly published phrase")
        x.key("Return")
        wait_for(lambda: c.query("SELECT rules_version FROM captures "
                                 "WHERE rule_id = 'test.new_rule'") == [(2,)], timeout=30,
                 what="a capture under the new rules")
    finally:
        if agent is not None:
            agent.stop()
        c.stop()
    for f in c.data_dir.rglob("*"):
        if f.is_file():
            blob = f.read_bytes().lower()
            for token in SECRET_TOKENS:
                assert token not in blob, f"{token!r} found in collector file {f}"


def status_of(data: Path) -> str:
    return subprocess.run([sys.executable, "-m", "agent.cli", "status", "--data-dir",
                           str(data)], capture_output=True, text=True, timeout=60).stdout


def test_repeats_of_a_concerning_window_are_one_queue_item_with_a_count(
        x: XDesktop, tmp_path: Path) -> None:
    """A pupil goes back to the same concerning window again and again within
    ``merge_seconds``. Collector up: each showing is sent at once (the DSL is told without
    waiting) and the collector's queue groups them into ONE item whose count is the number of
    showings. Collector down: the repeats merge in the spool into one capture with a count.
    Either way the DSL sees one item with the right count, and nothing is lost."""
    x.close_windows()
    c = start_collector(tmp_path)
    data = tmp_path / "agent"
    cfg = write_config(tmp_path / "agent.toml",
                       rules_library=str(write_library(tmp_path / "lib")),
                       watch_media=False, watch_keys=False, screenshot_min_severity=6,
                       heartbeat_seconds=1)
    agent = None

    def stored() -> list[tuple[str, int]]:
        return c.query("SELECT id, count FROM captures WHERE rule_id = 'test.self_harm'")

    def queue() -> list[tuple[int, ...]]:
        return c.query("SELECT count FROM queue_items WHERE rule_id = 'test.self_harm'")

    try:
        enroll_cli(data, c.enrol_addr, c.create_token(group="secondary"), c.ca_path,
                   c.stream_addr)
        agent = AgentProcess(data, config_file=cfg, env=x.env,
                             extra_args=("--verbose",)).start()
        agent.wait_for_log("Vigil agent is running")
        wait_for(lambda: rules_version(data) == 1, timeout=30, what="rules version 1")
        other = x.open_xterm("Maths homework")
        concern = x.open_xterm("collector test phrase forum")
        agent.wait_for_focus(concern)
        for n in (1, 2, 3):
            if n > 1:
                x.activate(other)
                agent.wait_for_focus(other)
                x.activate(concern)
                agent.wait_for_focus(concern)
            wait_for(lambda n=n: len(stored()) == n and not spool_captures(data),
                     what=f"showing {n} stored and acknowledged")
        assert queue() == [(3,)], "the DSL should see one item counting three showings"

        assert c.stop() == 0  # outage: the repeats wait in the spool, merged
        wait_for(lambda: "Connection: not connected" in status_of(data),
                 what="the agent to notice the collector is down")
        for _ in range(3):
            x.activate(other)
            agent.wait_for_focus(other)
            x.activate(concern)
            agent.wait_for_focus(concern)
        [merged] = wait_for(lambda: [k for k in spool_captures(data) if k.count == 3],
                            what="one spooled capture counting three showings")
        assert len(spool_captures(data)) == 1
        assert agent.stop() == 0

        c = start_collector(tmp_path)  # same data dir, new port
        agent = AgentProcess(data, config_file=cfg, env=x.env,
                             extra_args=("--collector", c.stream_addr)).start()
        wait_for(lambda: not spool_captures(data), timeout=30, what="the spool to empty")
        assert (merged.id, 3) in stored() and len(stored()) == 4  # nothing lost
        assert queue() == [(6,)]
    finally:
        if agent is not None:
            agent.stop()
        c.stop()
