"""Enrolment and streaming over real mutual TLS against a real collector subprocess."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from collector.store.sqlite import open_store
from collector.validate import TRUNCATED
from proto import vigil_pb2 as pb
from tests.support.agent_client import (
    AgentClient,
    client,
    enrolled,
    make_capture,
    refusal,
)
from tests.support.collector import RunningCollector


def self_signed(key: ec.EllipticCurvePrivateKey, cn: str) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


async def test_enrol_stream_ack_and_queue(collector: RunningCollector) -> None:
    a = client(collector, "pc-lab-1")
    resp = await a.enrol(collector.create_token(group="year-9"))
    assert resp.device_id == a.device_id  # derived from the agent's own public key
    assert resp.ca_cert_pem == collector.ca_pem and resp.site == "default"
    assert b"PUBLIC KEY" in resp.rules_public_key_pem
    cap = make_capture(severity=4, os_user="pupil-a", rule_id="test.self_harm")
    async with a.connect() as s:
        await s.heartbeat(rules_version=1, spool_depth=7, drops={"spool_full": 2})
        config = await s.wait_for(lambda s: s.configs and s.configs[0])
        assert config.group == "secondary"  # new group 'year-9' defaults to the secondary band
        await s.send_captures([cap])
        await s.wait_for(lambda s: cap.id in s.acked)
    rows = collector.query("SELECT device_id, os_user, severity, queue_item_id FROM captures "
                           "WHERE id = ?", (cap.id,))
    assert rows == [(a.device_id, "pupil-a", 4, rows[0][3])] and rows[0][3] is not None
    (status, count), = collector.query("SELECT status, count FROM queue_items WHERE id = ?",
                                       (rows[0][3],))
    assert (status, count) == ("new", 1)
    out = collector.cli("devices", "--json").stdout
    assert a.device_id in out and '"spool_depth": 7' in out and '"spool_full": 2' in out


async def test_token_single_use_refused_on_reuse(collector: RunningCollector) -> None:
    token = collector.create_token()
    await client(collector).enrol(token)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client(collector).enrol(token)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "used up" in (err.value.details() or "")


async def test_token_with_n_uses(collector: RunningCollector) -> None:
    token = collector.create_token(uses=2)
    await client(collector).enrol(token)
    await client(collector).enrol(token)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client(collector).enrol(token)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_expired_and_revoked_and_unknown_tokens_refused(
    collector: RunningCollector,
) -> None:
    store = open_store(collector.db_path, collector.data_dir, migrate=False)
    now = int(time.time() * 1000)
    try:
        _, expired = store.create_token("default", "secondary", 5, now - 1000, "test", now)
    finally:
        store.close()
    revoked = collector.create_token(uses=5)
    tid = collector.cli("token", "list").stdout.strip().splitlines()[-1].split("\t")[0]
    collector.cli("token", "revoke", tid)
    for token, words in ((expired, "expired"), (revoked, "revoked"), ("vgl_nonsense", "unknown")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client(collector).enrol(token)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert words in (err.value.details() or "")
    # only hashes are stored
    assert collector.query("SELECT COUNT(*) FROM enrol_tokens WHERE token_hash = ?",
                           (revoked,)) == [(0,)]


async def test_enrolment_never_replaces_a_device(collector: RunningCollector) -> None:
    a = await enrolled(collector)
    again = AgentClient(collector.enrol_addr, collector.stream_addr, collector.ca_pem)
    again.key = a.key  # same key => same device id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await again.enrol(collector.create_token())
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    (serial,), = collector.query("SELECT COUNT(*) FROM devices WHERE id = ?", (a.device_id,))
    assert serial == 1


async def test_csr_must_be_p256_and_well_formed(collector: RunningCollector) -> None:
    a = client(collector)
    other = ec.generate_private_key(ec.SECP384R1())
    for csr, words in ((a.csr_pem(other), "P-256"), (b"not a csr", "PEM")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await a.enrol(collector.create_token(), csr_pem=csr)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in (err.value.details() or "")


async def test_stream_without_client_certificate_is_refused(
    collector: RunningCollector,
) -> None:
    a = client(collector)
    async with a.connect(cert=False) as s:
        assert await refusal(s) == grpc.StatusCode.UNAVAILABLE  # TLS handshake fails


async def test_device_b_cannot_send_as_device_a(collector: RunningCollector) -> None:
    a = await enrolled(collector)
    b = await enrolled(collector)
    # B with a home-made certificate naming A (not signed by the collector's CA) is refused
    # at the TLS layer.
    thief = AgentClient(collector.enrol_addr, collector.stream_addr, collector.ca_pem)
    thief.key, thief.cert_pem = b.key, self_signed(b.key, a.device_id)
    async with thief.connect() as s:
        assert await refusal(s) == grpc.StatusCode.UNAVAILABLE
    # Whatever B writes in the body, its captures and rules acks are recorded as B's.
    cap = make_capture(hostname="pretending-to-be-a")
    async with b.connect() as s:
        await s.send_captures([cap])
        await s.rules_ack(version=99, applied=False, error="test")
        await s.wait_for(lambda s: cap.id in s.acked)
    assert collector.query("SELECT device_id FROM captures WHERE id = ?", (cap.id,)) == [
        (b.device_id,)]
    assert collector.query("SELECT COUNT(*) FROM captures WHERE device_id = ?",
                           (a.device_id,)) == [(0,)]


async def test_revoked_device_is_cut_off_and_refused(collector: RunningCollector) -> None:
    a = await enrolled(collector)
    async with a.connect() as s:
        await s.heartbeat(rules_version=1)
        await s.wait_for(lambda s: s.configs)
        collector.cli("devices", "--revoke", a.device_id)
        await asyncio.wait_for(s.closed.wait(), 20)  # the live stream is ended
    async with a.connect() as s:
        assert await refusal(s) == grpc.StatusCode.PERMISSION_DENIED


async def test_redelivery_is_acked_but_stored_once(collector: RunningCollector) -> None:
    a = await enrolled(collector)
    cap = make_capture(severity=2)
    async with a.connect() as s:
        await s.send_captures([cap, cap])
        await s.wait_for(lambda s: cap.id in s.acked)
    async with a.connect() as s:  # the agent lost the ack and resends after reconnecting
        await s.send_captures([cap])
        await s.wait_for(lambda s: cap.id in s.acked)
    assert collector.query("SELECT COUNT(*) FROM captures WHERE id = ?", (cap.id,)) == [(1,)]
    (item,), = collector.query("SELECT queue_item_id FROM captures WHERE id = ?", (cap.id,))
    assert collector.query("SELECT count FROM queue_items WHERE id = ?", (item,)) == [(1,)]


async def test_invalid_captures_rejected_and_long_text_truncated(
    collector: RunningCollector,
) -> None:
    a = await enrolled(collector)
    bad_sev = make_capture(severity=9)
    bad_src = make_capture(source=pb.SOURCE_UNSPECIFIED)
    long = make_capture(context="x" * 5000, window_title="t" * 5000)
    async with a.connect() as s:
        await s.send_captures([bad_sev, bad_src, long])
        await s.wait_for(lambda s: long.id in s.acked)
        assert s.rejected == {bad_sev.id: "bad_severity", bad_src.id: "unknown_source"}
    (ctx, title), = collector.query("SELECT context, window_title FROM captures WHERE id = ?",
                                    (long.id,))
    assert ctx.endswith(TRUNCATED) and len(ctx) == 500 and title.endswith(TRUNCATED)
    assert collector.query("SELECT COUNT(*) FROM captures WHERE id IN (?, ?)",
                           (bad_sev.id, bad_src.id)) == [(0,)]


async def test_screenshots_encrypted_at_rest_and_never_for_csam(
    collector: RunningCollector,
) -> None:
    from collector.store.screenshots import read_screenshot

    a = await enrolled(collector)
    png = b"\x89PNG\r\n\x1a\n" + b"pixels" * 100
    shot = make_capture(severity=4, screenshot_png=png)
    illegal = make_capture(severity=5, category="csam", screenshot_png=png)
    async with a.connect() as s:
        await s.send_captures([shot, illegal])
        await s.wait_for(lambda s: {shot.id, illegal.id} <= s.acked)
    (path,), = collector.query("SELECT screenshot_path FROM captures WHERE id = ?", (shot.id,))
    raw = (collector.data_dir / path).read_bytes()
    assert b"pixels" not in raw and read_screenshot(collector.data_dir, path) == png
    assert collector.query("SELECT screenshot_path FROM captures WHERE id = ?",
                           (illegal.id,)) == [(None,)]
    assert collector.query("SELECT q.refer_police, q.pinned FROM captures c JOIN queue_items q "
                           "ON q.id = c.queue_item_id WHERE c.id = ?", (illegal.id,)) == [(1, 1)]


async def test_health_service_reports_serving(collector: RunningCollector) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    creds = grpc.ssl_channel_credentials(root_certificates=collector.ca_pem)
    async with grpc.aio.secure_channel(collector.enrol_addr, creds) as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="vigil.v1.Enrollment"), timeout=20)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_agent_config_age_band_comes_from_the_roster(collector: RunningCollector) -> None:
    import sqlite3

    conn = sqlite3.connect(collector.db_path, timeout=10)
    with conn:
        conn.execute("INSERT INTO pupils (site_id, username, display_name, year_group, age_band)"
                     " VALUES ('default', 'y5pupil', 'A Pupil', 'Year 5', 'primary')")
    conn.close()
    a = await enrolled(collector, group="secondary")
    async with a.connect() as s:
        await s.heartbeat(rules_version=1, os_user="y5pupil")
        config = await s.wait_for(lambda s: s.configs and s.configs[-1])
        assert config.group == "primary"
        await s.heartbeat(rules_version=1, os_user="not-on-roster")
        config = await s.wait_for(lambda s: len(s.configs) == 2 and s.configs[-1])
        assert config.group == "secondary"


async def test_capture_id_of_another_device_is_rejected_not_acked(
    collector: RunningCollector,
) -> None:
    a = await enrolled(collector)
    b = await enrolled(collector)
    mine = make_capture(context="A's context")
    async with a.connect() as s:
        await s.send_captures([mine])
        await s.wait_for(lambda s: mine.id in s.acked)
    clash = make_capture(mine.id, context="B's context")
    async with b.connect() as s:
        await s.send_captures([clash])
        reason = await s.wait_for(lambda s: s.rejected.get(clash.id))
        assert reason == "id_conflict" and clash.id not in s.acked
    assert collector.query("SELECT device_id, context FROM captures WHERE id = ?",
                           (mine.id,)) == [(a.device_id, "A's context")]


async def test_unparseable_messages_get_invalid_argument(collector: RunningCollector) -> None:
    a = await enrolled(collector)
    async with a.channel() as ch:
        call = ch.stream_stream("/vigil.v1.Collector/Connect")()  # raw bytes, no serializer
        await call.write(b"\xff\xff\xff\xff")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "does not parse" in (err.value.details() or "")
    creds = grpc.ssl_channel_credentials(root_certificates=collector.ca_pem)
    async with grpc.aio.secure_channel(collector.enrol_addr, creds) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary("/vigil.v1.Enrollment/Enroll")(b"\x0a\xff\xff\xff\xff\x0f",
                                                                 timeout=20)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
