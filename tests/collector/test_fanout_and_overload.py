"""Rule fan-out, enrolment rate limiting and store back-pressure, each on a fresh collector."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import grpc
import pytest

import rules
from tests.support.agent_client import AgentClient, make_capture
from tests.support.collector import start_collector

HERE = Path(__file__).parent


async def test_rule_publish_reaches_connected_agents_and_later_ones(tmp_path: Path) -> None:
    c = start_collector(tmp_path)
    try:
        agents = [AgentClient(c.enrol_addr, c.stream_addr, c.ca_pem) for _ in range(2)]
        for a in agents:
            await a.enrol(c.create_token())
        pub = agents[0].enrolment.rules_public_key_pem  # type: ignore[union-attr]
        async with agents[0].connect() as s1, agents[1].connect() as s2:
            for s in (s1, s2):
                await s.heartbeat(rules_version=0)
                first = await s.wait_for(lambda s: s.bundles and s.bundles[-1])
                assert first.version == 1  # older agents get the active bundle
                await s.heartbeat(rules_version=1)
            out = c.cli("rules", "publish", str(HERE / "rules_v2"), "--note", "add rule two")
            assert "published version 2" in out.stdout
            for s in (s1, s2):
                b = await s.wait_for(lambda s: [x for x in s.bundles if x.version == 2])
                ruleset, info = rules.load_bundle(b[0].bundle, pub)
                assert info.version == 2
                assert {r.id for r in ruleset.rules} == {"test.self_harm", "test.self_harm_two"}
            await s1.rules_ack(2, applied=True)
            await s2.rules_ack(2, applied=False, error="disk full")
            await s1.send_captures([make_capture()])  # flushes the writer after the acks
            await s1.wait_for(lambda s: s.acked)
        rows = dict(c.query("SELECT device_id, applied FROM rules_acks WHERE version = 2"))
        assert rows == {agents[0].device_id: 1, agents[1].device_id: 0}

        out = c.cli("rules", "rollback")
        assert "version 3 now active (rollback:1)" in out.stdout
        late = AgentClient(c.enrol_addr, c.stream_addr, c.ca_pem)
        await late.enrol(c.create_token())
        async with late.connect() as s:
            await s.heartbeat(rules_version=1)
            b = await s.wait_for(lambda s: s.bundles and s.bundles[-1])
            ruleset, info = rules.load_bundle(b.bundle, pub)
            assert info.version == 3 and {r.id for r in ruleset.rules} == {"test.self_harm"}
        listing = c.cli("rules", "list").stdout
        assert "* v3" in listing and "add rule two" in listing
        actions = [r[0] for r in c.query("SELECT action FROM audit WHERE actor LIKE 'cli:%'")]
        assert actions.count("rules.publish") == 3  # init, publish, rollback
    finally:
        c.stop()


async def test_bad_rules_are_not_published(tmp_path: Path) -> None:
    c = start_collector(tmp_path)
    try:
        bad = tmp_path / "bad"
        bad.mkdir()
        (bad / "x.toml").write_text('category = "self_harm"\n[[rule]]\nid = "x"\nseverity = 9\n'
                                    'phrases = ["a phrase"]\n')
        out = c.cli("rules", "publish", str(bad), check=False)
        assert out.returncode == 2 and "x.toml" in out.stderr and "Traceback" not in out.stderr
        assert c.query("SELECT MAX(version) FROM rule_versions") == [(1,)]
    finally:
        c.stop()


async def test_enrolment_is_rate_limited(tmp_path: Path) -> None:
    c = start_collector(tmp_path, {"enrolment": {"rate_per_second": 0.01, "burst": 2}})
    try:
        token = c.create_token(uses=10)
        for _ in range(2):
            await AgentClient(c.enrol_addr, c.stream_addr, c.ca_pem).enrol(token)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await AgentClient(c.enrol_addr, c.stream_addr, c.ca_pem).enrol(token)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        meta = dict(err.value.trailing_metadata() or ())
        assert int(meta["retry-after-ms"]) > 0
        assert c.query("SELECT uses FROM enrol_tokens") == [(2,)]
    finally:
        c.stop()


async def test_locked_store_means_backoff_not_ack_and_serving_continues(
    tmp_path: Path,
) -> None:
    c = start_collector(tmp_path, {"ingest": {"busy_timeout_ms": 200, "backoff_ms": 1500}})
    try:
        a = AgentClient(c.enrol_addr, c.stream_addr, c.ca_pem)
        await a.enrol(c.create_token())
        cap = make_capture(severity=5)
        lock = sqlite3.connect(c.db_path, timeout=10, isolation_level=None)
        async with a.connect() as s:
            lock.execute("BEGIN EXCLUSIVE")
            try:
                await s.send_captures([cap])
                backoff = await s.wait_for(lambda s: s.backoffs and s.backoffs[-1])
                assert backoff.retry_after_ms == 1500 and "busy" in backoff.reason
                # ...then the stream ends UNAVAILABLE + retry-after-ms, so the agent resends
                # everything it had in flight after the pause
                await asyncio.wait_for(s.closed.wait(), 20)
                assert s.error is not None and s.error.code() == grpc.StatusCode.UNAVAILABLE
                assert dict(s.error.trailing_metadata() or ())["retry-after-ms"] == "1500"
                assert cap.id not in s.acked
            finally:
                lock.execute("ROLLBACK")
                lock.close()
        async with a.connect() as s:  # the agent reconnects and resends
            await s.send_captures([cap])
            await s.wait_for(lambda s: cap.id in s.acked)
        # the collector kept serving: a second agent enrols and streams meanwhile
        b = AgentClient(c.enrol_addr, c.stream_addr, c.ca_pem)
        await b.enrol(c.create_token())
        assert c.query("SELECT COUNT(*) FROM captures WHERE id = ?", (cap.id,)) == [(1,)]
    finally:
        c.stop()


def test_serve_runs_the_console_in_the_same_process(tmp_path: Path) -> None:
    import ssl

    import httpx

    c = start_collector(tmp_path, console=True)
    try:
        assert c.console_url is not None and c.console_url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(c.ca_path))
        r = httpx.get(c.console_url + "healthz", verify=ctx, timeout=20)
        assert r.status_code == 200
    finally:
        assert c.stop() == 0  # SIGTERM: clean shutdown


async def test_connection_limit_refuses_with_retry_after(tmp_path: Path) -> None:
    c = start_collector(tmp_path, {"server": {"max_connections": 1}})
    try:
        a, b = (AgentClient(c.enrol_addr, c.stream_addr, c.ca_pem) for _ in range(2))
        token = c.create_token(uses=2)
        await a.enrol(token)
        await b.enrol(token)
        async with a.connect() as sa:
            await sa.heartbeat(rules_version=1)
            await sa.wait_for(lambda s: s.configs)
            async with b.connect() as sb:
                await sb.heartbeat(rules_version=1)
                with pytest.raises(ConnectionError):
                    await sb.wait_for(lambda s: s.configs)
                assert sb.error is not None
                assert sb.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert dict(sb.error.trailing_metadata() or ())["retry-after-ms"] == "5000"
    finally:
        c.stop()
