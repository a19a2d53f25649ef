"""Privacy, end to end with every real part: a real X session (Xvfb + openbox + xterm + xdotool),
the real agent process, the real collector process, and a loopback TCP proxy between them
that records every byte of the stream. Then retention: purge really removes the data.

What each search proves is written up in docs/security.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.store.sqlite import open_store
from tests.console.support import tiny_png
from tests.support.agent import AgentProcess, enroll_cli, spool_captures, write_config
from tests.support.agent_client import make_capture
from tests.support.collector import start_collector
from tests.support.x11 import XDesktop, have_x_tools, wait_for

from .helpers import RULES_V1, Proxy, enrolled

SENTENCE = "my ocelot marmalade kettledrum"
TOKENS = [b"ocelot", b"marmalade", b"kettledrum"]  # letters only: no chance hits in ids/ports


@pytest.fixture(scope="module")
def x() -> Iterator[XDesktop]:
    if not have_x_tools():
        pytest.skip("needs Xvfb, openbox, xterm, xdotool")
    with XDesktop() as desk:
        yield desk


def _files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.x11
def test_unmatched_sentence_is_nowhere_agent_wire_collector(x: XDesktop, tmp_path: Path) -> None:
    c = start_collector(tmp_path)
    proxy = Proxy(c.stream_addr).start()
    data = tmp_path / "agent"
    agent = None
    places: dict[str, bytes] = {}
    try:
        enroll_cli(data, c.enrol_addr, c.create_token(), c.ca_path, proxy.address)
        cfg = write_config(tmp_path / "agent.toml", rules_library=str(RULES_V1),
                           watch_media=False, screenshot_min_severity=6, heartbeat_seconds=1)
        agent = AgentProcess(data, config_file=cfg, env=x.env,
                             extra_args=("--verbose",)).start()
        agent.wait_for_log("Vigil agent is running")
        wait_for(lambda: c.query("SELECT last_seen_at FROM devices")[0][0], timeout=30,
                 what="the first heartbeat through the proxy")
        x.open_xterm("Homework - chat")
        x.type_text(f"echo {SENTENCE}")
        x.key("Return")
        x.type_text("echo this is the collector test phrase")
        x.key("Return")
        wait_for(lambda: c.query("SELECT context FROM captures"), timeout=30,
                 what="the matching capture at the collector")
        wait_for(lambda: not spool_captures(data), what="the spool to empty after the ack")
        places.update({f"live {k}": v for k, v in _files(data).items()})  # WAL while running
    finally:
        if agent is not None:
            assert agent.stop() == 0, agent.output
        proxy.stop()
        c.stop()
    [(ctx, match)] = c.query("SELECT context, match FROM captures")
    assert match == "collector test phrase"
    places.update(_files(data))
    places["agent stdout/stderr"] = agent.output.encode() if agent else b""
    places.update(_files(c.data_dir))  # vigil.db, -wal, -shm, serve.log, keys, certs
    wire = bytes(proxy.upstream_bytes)
    places["bytes on the wire (agent -> collector)"] = wire
    # positive controls: the searches can see what they look for
    assert any(p.endswith("spool.sqlite3") for p in places)
    assert any(p.endswith("serve.log") for p in places)
    db_bytes = b"".join(v for k, v in places.items() if "vigil.db" in k)
    assert b"collector test phrase" in db_bytes  # the collector's plaintext is searchable
    assert len(wire) > 1000 and b"collector test phrase" not in wire  # the wire is TLS
    assert SENTENCE not in ctx
    for name, blob in places.items():
        low = blob.lower()
        for token in TOKENS:
            assert token not in low, f"{token!r} found in {name}"
            assert token.decode().encode("utf-16-le") not in low, f"{token!r} (UTF-16) in {name}"


async def test_purge_removes_rows_screenshots_and_leaves_no_residue(tmp_path: Path) -> None:
    c = start_collector(tmp_path, {"retention": {"false_positive_days": 30,
                                                 "closed_days": 365}})
    try:
        a = await enrolled(c)
        gone = make_capture(rule_id="purge.fp", context="purgeable-aardvark-context",
                            window_title="purgeable-aardvark-title", severity=4,
                            screenshot_png=tiny_png(20, 10))
        kept = make_capture(rule_id="purge.open", context="keepable-beaver-context",
                            severity=4, screenshot_png=tiny_png(20, 10))
        async with a.connect() as s:
            await s.send_captures([gone, kept])
            await s.wait_for(lambda s: {gone.id, kept.id} <= s.acked)
        rows = dict(c.query("SELECT id, screenshot_path FROM captures"))
        assert rows[gone.id] and rows[kept.id], "screenshots were stored"
        shot_gone = c.data_dir / rows[gone.id]
        shot_kept = c.data_dir / rows[kept.id]
        assert shot_gone.exists() and shot_kept.exists()
        # the DSL marked it a false positive 31 days ago
        (item,), = c.query("SELECT queue_item_id FROM captures WHERE id = ?", (gone.id,))
        store = open_store(c.db_path, c.data_dir, migrate=False)
        try:
            store.set_queue_status(item, "false_positive", "dsl1",
                                   int((time.time() - 31 * 86400) * 1000))
        finally:
            store.close()
        out = c.cli("purge")
        assert out.returncode == 0, out.stderr
        assert [r[0] for r in c.query("SELECT id FROM captures")] == [kept.id]
        assert c.query("SELECT COUNT(*) FROM queue_items WHERE id = ?", (item,)) == [(0,)]
        assert not shot_gone.exists() and shot_kept.exists()
        audit = c.query("SELECT actor, detail FROM audit WHERE action = 'retention.purge'")
        assert audit and any('"captures": 1' in d and '"screenshots": 1' in d
                             for _, d in audit), audit
        await asyncio.sleep(0)  # (async test: the collector keeps running meanwhile)
        # no residue: the purged text is not recoverable from the database files either
        # (deleted SQLite rows otherwise stay in free pages and in the WAL)
        for name, blob in _files(c.data_dir).items():
            assert b"purgeable-aardvark" not in blob, f"purged text still in {name}"
        assert b"keepable-beaver" in b"".join(
            v for k, v in _files(c.data_dir).items() if "vigil.db" in k)
    finally:
        c.stop()


async def test_collector_cannot_widen_the_agents_context_window_without_bound(
        tmp_path: Path) -> None:
    """The context around a hit is the privacy bound on typed text. A collector (mis)configured
    with a huge ``ingest.context_chars`` pushes it to every agent in AgentConfig; the agent
    must clamp it, or whole typed paragraphs leave the laptop around any hit."""
    from agent.config import Config
    from agent.enrol import enroll
    from agent.paths import DataDir
    from agent.sources import KeyEvent
    from tests.support.agent import InProcessAgent, no_backends

    c = start_collector(tmp_path, {"ingest": {"context_chars": 100_000}})
    try:
        data = DataDir(tmp_path / "agent").ensure()
        await asyncio.to_thread(enroll, data, c.enrol_addr, c.create_token(), c.ca_path,
                                c.stream_addr)
        config = Config(rules_library=str(RULES_V1), watch_window=False, watch_media=False,
                        heartbeat_seconds=1)
        filler = " ".join(["lorem ipsum dolor sit amet"] * 80)  # ~2 000 characters
        async with InProcessAgent(data, config, backends=no_backends()) as agent:
            await agent.wait_for(lambda: agent.runtime.config.context_chars != 120,
                                 what="the collector's AgentConfig")
            for ch in f"{filler} collector test phrase {filler}":
                agent.runtime.monitor.on_key(KeyEvent("char", ch))
            agent.runtime.monitor.on_key(KeyEvent("reset"))
            await agent.wait_for(lambda: c.query("SELECT context FROM captures"), timeout=30,
                                 what="the capture")
            sent = agent.runtime.config.context_chars
        [(ctx,)] = c.query("SELECT context FROM captures")
        assert sent <= 500, f"agent accepted a context window of {sent} characters"
        assert len(ctx) <= 500
    finally:
        c.stop()


def test_other_local_users_cannot_read_the_agents_files(tmp_path: Path) -> None:
    """On a shared laptop another pupil's account must not be able to read the spool (context
    around safeguarding hits), the log or the device key, even when the data folder already
    existed with the usual 0755 (e.g. made by an installer or by hand)."""
    import stat

    c = start_collector(tmp_path)
    data = tmp_path / "agent"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    try:
        enroll_cli(data, c.enrol_addr, c.create_token(), c.ca_path, c.stream_addr)
        cfg = write_config(tmp_path / "agent.toml", rules_library=str(RULES_V1),
                           watch_keys=False, watch_window=False, watch_media=False)
        with AgentProcess(data, config_file=cfg) as agent:
            agent.wait_for_log("Vigil agent is running")
            wait_for(lambda: (data / "spool.sqlite3").exists()
                     and (data / "agent.log").exists(), what="the spool and the log")
    finally:
        c.stop()
    exposed = {}
    for p in [data, *data.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        readable_by_others = mode & (stat.S_IROTH | stat.S_IWOTH)
        # a file is protected if it, or the folder holding it, shuts others out
        if readable_by_others and stat.S_IMODE(data.stat().st_mode) & stat.S_IXOTH:
            exposed[str(p.relative_to(tmp_path))] = oct(mode)
    assert exposed == {}, f"readable by other local users: {exposed}"
