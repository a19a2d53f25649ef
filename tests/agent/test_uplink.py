"""Enrolment and the uplink against a real gRPC server over (m)TLS on 127.0.0.1 port 0."""

from __future__ import annotations

import asyncio
import itertools
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509

import rules
from agent.config import Config
from agent.enrol import EnrolError, enroll
from agent.paths import DataDir
from agent.sources import KeyEvent
from proto import vigil_pb2 as pb
from tests.agent.minicollector import MiniCollector
from tests.support.agent import InProcessAgent, no_backends, spool_captures


def type_into(agent: InProcessAgent, text: str) -> None:
    for ch in text:
        agent.runtime.monitor.on_key(KeyEvent("char", ch))
    agent.runtime.monitor.on_key(KeyEvent("reset"))


async def enrolled(data: DataDir, c: MiniCollector, tmp_path: Path) -> str:
    ca = c.write_ca(tmp_path / "ca.crt")
    dev = await asyncio.to_thread(enroll, data, c.enroll_address, "tok-1", ca, c.address)
    return dev.device_id


async def test_enrol_stores_identity_and_pins_rules_key(
        data: DataDir, collector: MiniCollector, tmp_path: Path) -> None:
    _, collector.rules_public_pem = rules.generate_signing_key()
    device_id = await enrolled(data, collector, tmp_path)
    assert stat.S_IMODE(os.stat(data.device_key).st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(data.device_cert.read_bytes())
    assert cert.subject.rfc4514_string() == f"CN={device_id}"
    assert data.rules_pub.read_bytes() == collector.rules_public_pem
    # the same token cannot enrol again, and an enrolled dir is never overwritten
    other = DataDir(tmp_path / "other")
    with pytest.raises(EnrolError, match="PERMISSION_DENIED"):
        await asyncio.to_thread(enroll, other, collector.enroll_address, "tok-1",
                                tmp_path / "ca.crt")
    with pytest.raises(EnrolError, match="already holds"):
        await asyncio.to_thread(enroll, data, collector.enroll_address, "tok-2",
                                tmp_path / "ca.crt")


async def test_typed_phrase_reaches_collector_and_leaves_spool(
        data: DataDir, config: Config, collector: MiniCollector, tmp_path: Path) -> None:
    device_id = await enrolled(data, collector, tmp_path)
    async with InProcessAgent(data, config, backends=no_backends()) as agent:
        type_into(agent, "sometimes i cut myself after school")
        await agent.wait_for(lambda: collector.stored, what="the capture at the collector")
        await agent.wait_for(lambda: not spool_captures(data.root), what="the ack")
        [cap] = collector.stored.values()
        assert cap.rule_id == "self_harm.test" and cap.match == "cut myself"
        await agent.wait_for(lambda: any(h.spool_depth == 0 for h in collector.heartbeats))
    hb = collector.heartbeats[0]
    assert hb.agent_version and hb.os_user and hb.hostname
    assert device_id in collector.peers[0] or collector.peers[0].startswith("-----BEGIN")


async def test_rejected_capture_is_dropped_and_counted_in_heartbeat(
        data: DataDir, config: Config, collector: MiniCollector, tmp_path: Path) -> None:
    await enrolled(data, collector, tmp_path)
    collector.reject_rule = "bullying.test"
    async with InProcessAgent(data, config, backends=no_backends()) as agent:
        type_into(agent, "nobody likes you")
        await agent.wait_for(lambda: any(h.drops.get("rejected:test_reject") == 1
                                         for h in collector.heartbeats),
                             what="the drop count in a heartbeat")
    assert spool_captures(data.root) == []


async def test_signed_bundle_applied_bad_one_refused(
        data: DataDir, config: Config, collector: MiniCollector, tmp_path: Path,
        library: Path) -> None:
    priv, collector.rules_public_pem = rules.generate_signing_key()
    await enrolled(data, collector, tmp_path)
    (library / "extra").mkdir()
    (library / "extra" / "drugs.toml").write_text(
        'category = "drugs"\n[[rule]]\nid = "drugs.new"\nseverity = 3\n'
        'phrases = ["brand new phrase"]\nsources = ["keys"]\n')
    collector.bundle = rules.compile_bundle(rules.load_library(library / "extra"), priv, 7)
    collector.bundle_version = 7
    async with InProcessAgent(data, config, backends=no_backends()) as agent:
        await agent.wait_for(lambda: collector.rules_acks, what="RulesAck")
        assert collector.rules_acks[0] == pb.RulesAck(version=7, applied=True)
        type_into(agent, "a brand new phrase")
        await agent.wait_for(lambda: any(c.rule_id == "drugs.new" and c.rules_version == 7
                                         for c in collector.stored.values()))
        # a bundle signed by another key is refused; version 7 stays active
        other, _ = rules.generate_signing_key()
        collector.bundle = rules.compile_bundle(rules.load_library(library), other, 8)
        collector.bundle_version = 8
    assert data.rules_bundle.exists()
    async with InProcessAgent(data, config, backends=no_backends()) as agent:
        assert agent.runtime.rules.version == 7  # last good, from disk
        await agent.wait_for(lambda: len(collector.rules_acks) >= 2)
        bad = collector.rules_acks[1]
        assert not bad.applied and "signature" in bad.error
        assert agent.runtime.rules.version == 7


async def test_resource_exhausted_is_honoured_then_delivered(
        data: DataDir, config: Config, collector: MiniCollector, tmp_path: Path) -> None:
    await enrolled(data, collector, tmp_path)
    collector.refuse_streams, collector.retry_after_ms = 2, 300
    async with InProcessAgent(data, config, backends=no_backends()) as agent:
        type_into(agent, "i want to disappear")
        await agent.wait_for(lambda: collector.stored, what="delivery after backoff")
        assert "RESOURCE_EXHAUSTED" in agent.runtime.uplink.last_error or collector.refused == 2
    assert collector.streams >= 3 and collector.refused == 2
    # the agent waited retry-after-ms (300 ms) after each refusal, not its own 50 ms backoff
    gaps = [b - a for a, b in itertools.pairwise(collector.stream_starts[:3])]
    assert len(gaps) == 2 and all(g >= 0.29 for g in gaps), gaps


async def test_outage_then_restart_delivers_everything_exactly_once(
        data: DataDir, config: Config, collector: MiniCollector, tmp_path: Path) -> None:
    await enrolled(data, collector, tmp_path)
    # merge_seconds=0: three separate captures, not one merged. scorer=False: the learned
    # scorer (on by default) adds captures of its own categories for these lines; this test
    # is about delivering what was spooled exactly once, so only the phrase rules may fire
    # and the count stays exactly 3.
    config = config.replace(merge_seconds=0, scorer=False)
    port = collector.port
    await collector.stop()
    phrases = ["cut myself", "nobody likes you", "want to disappear"]
    async with InProcessAgent(data, config, backends=no_backends()) as agent:
        for p in phrases:
            type_into(agent, f"well {p} ok")
        await agent.wait_for(lambda: len(spool_captures(data.root)) == 3)
    # the agent restarts; the spool is still there
    assert len(spool_captures(data.root)) == 3
    up = MiniCollector(pki=collector.pki)
    await up.start(port)
    try:
        async with InProcessAgent(data, config, backends=no_backends()) as agent:
            await agent.wait_for(lambda: len(up.stored) == 3, what="all three delivered")
            await agent.wait_for(lambda: not spool_captures(data.root))
        assert set(up.received.values()) == {1}
        assert sorted(c.rule_id for c in up.stored.values()) == sorted(
            ["self_harm.test", "bullying.test", "self_harm.test"])
        assert all(c.count == 1 for c in up.stored.values())
    finally:
        await up.stop()


async def test_agent_config_from_collector_is_applied(
        data: DataDir, config: Config, collector: MiniCollector, tmp_path: Path) -> None:
    from agent.sources import WindowInfo

    await enrolled(data, collector, tmp_path)
    collector.config = pb.AgentConfig(context_chars=20, excluded_windows=["Secret Diary"],
                                      group="primary", heartbeat_seconds=1)
    async with InProcessAgent(data, config, backends=no_backends()) as agent:
        await agent.wait_for(lambda: agent.runtime.config.group == "primary",
                             what="the config")
        mon = agent.runtime.monitor
        mon.on_window(WindowInfo("My Secret Diary", "gedit", 1))
        type_into(agent, "i cut myself again")  # excluded by the collector's list
        mon.on_window(WindowInfo("Notes", "gedit", 2))
        type_into(agent, "a long long preamble here and then i cut myself and a long tail")
        await agent.wait_for(lambda: collector.stored, what="the capture")
    [cap] = collector.stored.values()
    assert cap.window_title == "Notes" and len(cap.context) <= 20


async def test_backoff_message_pauses_sending(
        data: DataDir, config: Config, collector: MiniCollector, tmp_path: Path) -> None:
    await enrolled(data, collector, tmp_path)
    collector.backoff_ms = 1500
    async with InProcessAgent(data, config, backends=no_backends()) as agent:
        await agent.wait_for(lambda: collector.heartbeats, what="the stream")
        await agent.wait_for(lambda: agent.runtime.uplink.connected)
        started = asyncio.get_running_loop().time()
        type_into(agent, "i cut myself")
        await agent.wait_for(lambda: collector.stored, what="delivery after the pause")
        # never earlier than the pause allows (a slow machine only makes this later)
        assert asyncio.get_running_loop().time() - started >= 1.0


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    from agent.uplink import backoff_delay, retry_after_seconds

    assert backoff_delay(0, 1.0, 60.0, rng=lambda: 0.0) == 0.5
    assert backoff_delay(3, 1.0, 60.0, rng=lambda: 1.0) == 8.0
    assert backoff_delay(20, 1.0, 60.0, rng=lambda: 1.0) == 60.0
    assert 30.0 <= backoff_delay(20, 1.0, 60.0) <= 60.0
    assert retry_after_seconds((("x", "1"), ("retry-after-ms", "2500"))) == 2.5
    assert retry_after_seconds((("retry-after-ms", "soon"),)) is None
    assert retry_after_seconds(None) is None
