"""Identity and access on the wire: real collector subprocess, real mutual TLS, real agent.

Every test here is an attack a security reviewer would try: no certificate, a forged or
expired certificate, one device speaking for another, token replay (including a race),
an enrolment flood, and hostile rule bundles pushed through the agent's real uplink.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import sqlite3
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import rules
from agent.config import Config
from agent.enrol import enroll
from agent.paths import DataDir
from collector.store.sqlite import open_store
from collector.tls import Pki
from tests.support.agent import InProcessAgent, no_backends
from tests.support.agent_client import AgentClient, make_capture
from tests.support.collector import RunningCollector, start_collector

from .helpers import RULES_V1, RULES_V2, client, enrolled, poll, refusal


def _cert(key: ec.EllipticCurvePrivateKey, cn: str, signer: ec.EllipticCurvePrivateKey,
          issuer: x509.Name, not_before: dt.datetime, not_after: dt.datetime) -> bytes:
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .sign(signer, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


async def test_stream_refuses_missing_forged_and_expired_certificates(
        collector: RunningCollector) -> None:
    a = await enrolled(collector)
    now = dt.datetime.now(dt.UTC)
    # 1. no client certificate: the TLS handshake fails before any Python code runs
    async with client(collector).connect(cert=False) as s:
        assert await refusal(s) == grpc.StatusCode.UNAVAILABLE
    # 2. a certificate naming A, made by an attacker's own CA (A's id in the CN)
    rogue_ca = ec.generate_private_key(ec.SECP256R1())
    thief = client(collector)
    thief.cert_pem = _cert(thief.key, a.device_id, rogue_ca,
                           x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Vigil CA")]),
                           now - dt.timedelta(hours=1), now + dt.timedelta(days=1))
    async with thief.connect() as s:
        assert await refusal(s) == grpc.StatusCode.UNAVAILABLE
    # 3. an EXPIRED certificate for A's own key, signed by the real CA
    pki = Pki.in_dir(collector.data_dir)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    stale = AgentClient(collector.enrol_addr, collector.stream_addr, collector.ca_pem)
    stale.key = a.key
    stale.cert_pem = _cert(a.key, a.device_id, ca_key, ca.subject,
                           now - dt.timedelta(days=30), now - dt.timedelta(days=1))
    async with stale.connect() as s:
        assert await refusal(s) in (grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.PERMISSION_DENIED)
    # 4. a VALID certificate from the real CA for A's key that the collector never issued
    #    (e.g. a leaked CA key or a superseded certificate): the serial does not match
    rogue = AgentClient(collector.enrol_addr, collector.stream_addr, collector.ca_pem)
    rogue.key = a.key
    rogue.cert_pem = _cert(a.key, a.device_id, ca_key, ca.subject,
                           now - dt.timedelta(hours=1), now + dt.timedelta(days=1))
    async with rogue.connect() as s:
        assert await refusal(s) == grpc.StatusCode.PERMISSION_DENIED
    # A itself is unaffected by all of the above
    cap = make_capture()
    async with a.connect() as s:
        await s.send_captures([cap])
        await s.wait_for(lambda s: cap.id in s.acked)


async def test_device_b_cannot_submit_or_ack_for_device_a(collector: RunningCollector) -> None:
    a = await enrolled(collector, hostname="pc-a")
    b = await enrolled(collector, hostname="pc-b")
    mine = make_capture(severity=4, context="A's genuine context", hostname="pc-a")
    async with a.connect() as s:
        await s.send_captures([mine])
        await s.wait_for(lambda s: mine.id in s.acked)
    # B claims to be A in every body field it can, sends a rules ack, and replays A's
    # capture id with different content.
    spoof = make_capture(hostname="pc-a", os_user="pupil-of-a")
    clash = make_capture(id=mine.id, severity=1, context="B overwrote A", hostname="pc-a")
    async with b.connect() as s:
        await s.heartbeat(hostname="pc-a", rules_version=1)
        await s.send_captures([spoof, clash])
        # an ack for a version this collector never published is not recorded
        # (docs/wire.md, Connect 5); one for a published version (1, from init) is, under B.
        # Both go in order on one stream, so once the second is stored the first was seen.
        await s.rules_ack(version=4242, applied=False, error="spoofed ack, never published")
        await s.rules_ack(version=1, applied=False, error="spoofed ack")
        await s.wait_for(lambda s: spoof.id in s.acked
                         and (clash.id in s.acked or clash.id in s.rejected))
        clash_acked = clash.id in s.acked
    assert collector.query("SELECT device_id FROM captures WHERE id = ?", (spoof.id,)) == [
        (b.device_id,)]
    # A's capture is untouched: same device, same context, same severity
    assert collector.query("SELECT device_id, context, severity FROM captures WHERE id = ?",
                           (mine.id,)) == [(a.device_id, "A's genuine context", 4)]
    # the rules ack is committed by the writer after it arrives: wait for it, then check
    acks = await poll(lambda: collector.query(
        "SELECT device_id FROM rules_acks WHERE version = 1 AND error = 'spoofed ack'"),
        what="the rules ack row")
    assert acks == [(b.device_id,)]
    assert collector.query("SELECT COUNT(*) FROM rules_acks WHERE version = 4242") == [(0,)]
    # B's clashing capture must be either stored under B or explicitly rejected: an ack for
    # a capture that was NOT stored (it is silently thrown away) breaks "nothing lost".
    if clash_acked:
        stored_for_b = collector.query(
            "SELECT COUNT(*) FROM captures WHERE device_id = ? AND context = 'B overwrote A'",
            (b.device_id,))[0][0]
        assert stored_for_b == 1, "B's capture was acked but never stored (id collision)"


async def test_tokens_reused_raced_expired_and_revoked_are_refused(
        collector: RunningCollector) -> None:
    # a single-use token raced by 8 concurrent enrolments: exactly one device gets in
    token = collector.create_token(uses=1)
    results = await asyncio.gather(*(client(collector).enrol(token) for _ in range(8)),
                                   return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1 and len(refused) == 7, results
    assert {r.code() for r in refused} == {grpc.StatusCode.PERMISSION_DENIED}
    assert collector.query("SELECT uses, max_uses FROM enrol_tokens WHERE uses > 0 "
                           "ORDER BY created_at DESC LIMIT 1") == [(1, 1)]
    # reused afterwards
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client(collector).enrol(token)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # expired (created already past its expiry) and revoked through the real CLI
    store = open_store(collector.db_path, collector.data_dir, migrate=False)
    now = int(time.time() * 1000)
    try:
        _, expired = store.create_token("default", "secondary", 5, now - 1, "test", now)
    finally:
        store.close()
    revoked = collector.create_token(uses=5)
    out = collector.cli("token", "list").stdout.strip().splitlines()
    tid = out[-1].split("\t")[0]
    collector.cli("token", "revoke", tid)
    before = collector.query("SELECT COUNT(*) FROM devices")[0][0]
    for secret, word in ((expired, "expired"), (revoked, "revoked")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client(collector).enrol(secret)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert word in (err.value.details() or "")
    assert collector.query("SELECT COUNT(*) FROM devices")[0][0] == before


async def test_enrolment_flood_is_rate_limited_and_streams_keep_serving(
        tmp_path: Path) -> None:
    c = start_collector(tmp_path, {"enrolment": {"rate_per_second": 0.01, "burst": 4}})
    try:
        good = client(c)
        await good.enrol(c.create_token())  # uses one token from the bucket
        flood = await asyncio.gather(*(client(c).enrol(f"vgl_guess_{i}") for i in range(40)),
                                     return_exceptions=True)
        codes = [r.code() for r in flood if isinstance(r, grpc.aio.AioRpcError)]
        assert len(codes) == 40  # no guessed token ever enrols
        limited = [r for r in flood if isinstance(r, grpc.aio.AioRpcError)
                   and r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert len(limited) >= 40 - 4, codes  # at most the burst reaches the token check
        assert all(int(dict(r.trailing_metadata() or ())["retry-after-ms"]) > 0
                   for r in limited)
        # a genuine token is limited too while the flood's bucket is empty (per address)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client(c).enrol(c.create_token())
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # the already-enrolled device keeps streaming through the flood
        cap = make_capture()
        async with good.connect() as s:
            await s.send_captures([cap])
            await s.wait_for(lambda s: cap.id in s.acked)
        assert c.query("SELECT COUNT(*) FROM devices") == [(1,)]
    finally:
        c.stop()


# -- rule bundles through the agent's real uplink ------------------------------------------

def _tampered(bundle: bytes) -> bytes:
    env = json.loads(bundle)
    env["payload"] = env["payload"].replace("collector test phrase", "attacker phrase")
    return json.dumps(env).encode()


def _unsigned(bundle: bytes) -> bytes:
    env = json.loads(bundle)
    env["signature"] = base64.b64encode(b"").decode()
    return json.dumps(env).encode()


def _insert_active(db: Path, version: int, bundle: bytes) -> None:
    """What a compromised store (or a man in the middle of the publish path) would do."""
    conn = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE rule_versions SET active = 0")
        conn.execute("INSERT INTO rule_versions (version, content_hash, bundle, created_at, "
                     "published_by, active, note) VALUES (?, 'x', ?, ?, 'attacker', 1, '')",
                     (version, bundle, int(time.time() * 1000)))
        conn.execute("COMMIT")
    finally:
        conn.close()


async def test_agent_refuses_tampered_unsigned_wrong_key_and_replayed_bundles(
        tmp_path: Path) -> None:
    c = start_collector(tmp_path)
    try:
        data = DataDir(tmp_path / "agent").ensure()
        await asyncio.to_thread(enroll, data, c.enrol_addr, c.create_token(), c.ca_path,
                                c.stream_addr)
        config = Config(rules_library=str(RULES_V1), heartbeat_seconds=1)
        v1 = bytes(c.query("SELECT bundle FROM rule_versions WHERE version = 1")[0][0])
        async with InProcessAgent(data, config, backends=no_backends()) as agent:
            await agent.wait_for(lambda: agent.runtime.rules.version == 1, what="v1 applied")
            c.cli("rules", "publish", str(RULES_V2))
            await agent.wait_for(lambda: agent.runtime.rules.version == 2, what="v2 applied")
            v2 = bytes(c.query("SELECT bundle FROM rule_versions WHERE version = 2")[0][0])
            other_priv, _ = rules.generate_signing_key()
            attacks = {
                3: ("replay of v1", v1),
                4: ("tampered", _tampered(v2)),
                5: ("unsigned", _unsigned(v2)),
                6: ("wrong key", rules.compile_bundle(rules.load_library(RULES_V2),
                                                      other_priv, 6)),
                7: ("garbage", b"\x00\xff not a bundle"),
            }
            for version, (what, bundle) in attacks.items():
                _insert_active(c.db_path, version, bundle)
                row = await poll(lambda v=version: c.query(  # type: ignore[misc]
                    "SELECT applied, error FROM rules_acks WHERE version = ?", (v,)),
                    what=f"the agent's answer to the {what} bundle")
                applied, error = row[0]
                assert applied == 0 and error, (what, error)
                assert agent.runtime.rules.version == 2, what
                assert data.rules_bundle.read_bytes() == v2, what
        # restart: the last good bundle (v2) comes back from disk
        async with InProcessAgent(data, config, backends=no_backends()) as agent:
            assert agent.runtime.rules.version == 2
            hits = agent.runtime.rules.ruleset.scan("second collector phrase", "keys")
            assert [h.rule.id for h in hits] == ["test.self_harm_two"]
            assert not agent.runtime.rules.ruleset.scan("attacker phrase", "keys")
        reasons = dict(c.query("SELECT version, error FROM rules_acks WHERE applied = 0"))
        assert "older" in reasons[3] and "signature" in reasons[4]
        assert "signature" in reasons[5] and "signature" in reasons[6]
        assert "not a Vigil rule bundle" in reasons[7]
    finally:
        c.stop()


async def test_revoking_a_device_cuts_its_open_stream(tmp_path: Path) -> None:
    """A stolen laptop is revoked while its stream is open: it must not keep sending."""
    c = start_collector(tmp_path)
    try:
        a = await enrolled(c)
        before = make_capture()
        async with a.connect() as s:
            await s.send_captures([before])
            await s.wait_for(lambda s: before.id in s.acked)
            c.cli("devices", "--revoke", a.device_id)
            # keep talking, as a stolen device would; within a generous window the collector
            # must end the stream (or at least stop storing what it sends)
            deadline = time.monotonic() + 30
            sent: list[str] = []
            while time.monotonic() < deadline and not s.closed.is_set():
                cap = make_capture()
                sent.append(cap.id)
                with contextlib.suppress(Exception):
                    await s.send_captures([cap])
                    await s.heartbeat()
                await asyncio.sleep(0.5)  # pacing a stolen device's traffic, not a sync
            closed = s.closed.is_set()
        stored_after = c.query("SELECT COUNT(*) FROM captures WHERE device_id = ? AND id != ?",
                               (a.device_id, before.id))[0][0]
        assert closed, "the revoked device's open stream was never ended"
        assert stored_after <= 2, f"{stored_after} captures stored after the revocation"
    finally:
        c.stop()
