"""The collector refuses what it cannot trust, on the real server over real mTLS, and every
refusal names its capture and carries a retry hint (docs/wire.md "Refusals")."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.spool import Spool
from agent.uplink import Uplink, mtls_channel_factory
from proto import vigil_pb2 as pb
from proto.identity import device_id_from_spki
from rules import DEFAULT_LIBRARY, load_library
from tests.support.agent_client import AgentClient, Stream, client, enrolled, make_capture
from tests.support.collector import RunningCollector, start_collector

RULES_WIRE = Path(__file__).resolve().parent / "rules_wire"
CONNECT = "/vigil.v1.Collector/Connect"


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCollector]:
    """A collector with the product default ``ingest.check_rules = true``."""
    c = start_collector(tmp_path_factory.mktemp("strict"), rules_dir=RULES_WIRE,
                        config={"ingest": {"check_rules": True}})
    try:
        yield c
    finally:
        c.stop()


def good(**fields: object) -> pb.Capture:
    fields.setdefault("rule_id", "wire.self_harm")
    fields.setdefault("severity", 4)
    return make_capture(**fields)  # type: ignore[arg-type]


def refusals(s: Stream) -> dict[str, pb.Rejected]:
    return {r.id or f"#{r.index}": r for m in s.messages if m.WhichOneof("body") == "ack"
            for r in m.ack.rejected}


async def test_captures_that_no_published_rule_allows_are_refused(
        strict: RunningCollector) -> None:
    builtin = load_library(DEFAULT_LIBRARY).rules[0]
    ok = {
        "plain": good(),
        "window": good(source=pb.SOURCE_WINDOW),
        "weighted_lower": good(rule_id="wire.weighted", severity=2),
        "model": good(rule_id="model.suicide", category="suicide", severity=5),
        "builtin": good(rule_id=builtin.id, category=builtin.category,
                        severity=builtin.severity, source=pb.SOURCE_KEYS, rules_version=0),
    }
    bad = {
        "unknown_rule": good(rule_id="no.such.rule"),
        "category_mismatch": good(category="suicide"),
        "unknown_category": good(category="nonsense"),
        "source_mismatch": good(rule_id="wire.weighted", severity=3, source=pb.SOURCE_WINDOW),
        "severity_mismatch": good(severity=2),
        "weighted_higher": good(rule_id="wire.weighted", severity=5),
        "model_mismatch": good(rule_id="model.suicide", category="self_harm"),
        "model_unknown": good(rule_id="model.nonsense", category="self_harm"),
        "future_time": good(time_ms=int(time.time() * 1000) + 2 * 86_400_000),
    }
    reasons = {"weighted_higher": "severity_mismatch", "model_mismatch": "category_mismatch",
               "model_unknown": "unknown_rule"}
    a = await enrolled(strict)
    batch = [*ok.values(), *bad.values()]
    async with a.connect() as s:
        await s.send_captures(batch)
        await s.wait_for(lambda s: s.messages and any(m.ack.stored_ids for m in s.messages))
        got = refusals(s)
    assert {c.id for c in ok.values()} <= s.acked
    for name, cap in bad.items():
        r = got[cap.id]
        assert r.reason == reasons.get(name, name), name
        assert r.retry_after_ms == 0 and r.index == batch.index(cap), name
        assert cap.id not in s.acked
    marks = ",".join("?" * len(bad))
    assert strict.query(f"SELECT COUNT(*) FROM captures WHERE id IN ({marks})",
                        tuple(c.id for c in bad.values())) == [(0,)]


async def test_unknown_rule_of_an_unknown_newer_version_may_be_retried(
        strict: RunningCollector) -> None:
    a = await enrolled(strict)
    newer = good(rule_id="wire.from_the_future", rules_version=99)
    nameless = good(rules_version=1)
    nameless.id = ""
    async with a.connect() as s:
        await s.send_captures([good(), newer, nameless])
        await s.wait_for(lambda s: len(refusals(s)) == 2)
        got = refusals(s)
    assert got[newer.id].reason == "unknown_rule" and got[newer.id].retry_after_ms > 0
    assert got["#2"].reason == "bad_id" and got["#2"].retry_after_ms == 0  # named by position


def _undecodable(cap: pb.Capture) -> bytes:
    """``cap`` with its context (string field 11) replaced by bytes that are not UTF-8."""
    return cap.SerializeToString() + b"\x5a\x02\xc3\x28"


def _batch_frame(*raw_captures: bytes) -> bytes:
    body = b"".join(b"\x0a" + _len(r) + r for r in raw_captures)
    return b"\x0a" + _len(body) + body


def _len(b: bytes) -> bytes:
    n, out = len(b), b""
    while True:
        out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            return out


async def test_an_undecodable_capture_is_refused_alone_and_the_stream_goes_on(
        strict: RunningCollector) -> None:
    a = await enrolled(strict)
    first, broken, after = good(), good(), good()
    nameless = good()
    nameless.id = ""
    garbled_id = b"\x0a\x02\xff\xfe" + nameless.SerializeToString()  # id is not UTF-8
    async with a.channel() as ch:
        call = ch.stream_stream(CONNECT)()  # raw bytes: a client with a broken encoder
        await call.write(_batch_frame(first.SerializeToString(), _undecodable(broken),
                                      garbled_id))
        acks = []
        while len(acks) < 1:
            msg = pb.CollectorMessage.FromString(await call.read())
            if msg.WhichOneof("body") == "ack":
                acks.append(msg.ack)
        await call.write(pb.AgentMessage(captures=pb.CaptureBatch(captures=[after]))
                         .SerializeToString())
        while len(acks) < 2:
            msg = pb.CollectorMessage.FromString(await call.read())
            if msg.WhichOneof("body") == "ack":
                acks.append(msg.ack)
        call.cancel()
    assert list(acks[0].stored_ids) == [first.id]
    assert [(r.id, r.reason, r.index, r.retry_after_ms) for r in acks[0].rejected] == [
        (broken.id, "undecodable", 1, 0), ("", "undecodable", 2, 0)]
    assert list(acks[1].stored_ids) == [after.id]


async def test_rules_ack_for_a_version_never_published_is_not_recorded(
        strict: RunningCollector) -> None:
    a = await enrolled(strict)
    cap = good()
    async with a.connect() as s:
        await s.rules_ack(version=4242, applied=True)
        await s.rules_ack(version=1, applied=True)
        await s.send_captures([cap])  # acked after the commit that holds the acks before it
        await s.wait_for(lambda s: cap.id in s.acked)
    assert strict.query("SELECT version FROM rules_acks WHERE device_id = ?",
                        (a.device_id,)) == [(1,)]


async def _ended(s: Stream) -> grpc.aio.AioRpcError:
    await asyncio.wait_for(s.closed.wait(), 20)
    assert s.error is not None, "the stream ended with OK"
    return s.error


def _trailer(err: grpc.aio.AioRpcError) -> str:
    return dict(err.trailing_metadata() or ()).get("retry-after-ms", "")  # type: ignore[arg-type]


async def test_replaced_and_revoked_streams_end_with_distinct_codes(
        strict: RunningCollector) -> None:
    a = await enrolled(strict)
    async with a.connect() as old:
        await old.heartbeat(rules_version=1)
        await old.wait_for(lambda s: s.configs)
        async with a.connect() as new:
            await new.heartbeat(rules_version=1)
            err = await _ended(old)
            assert err.code() == grpc.StatusCode.ABORTED and int(_trailer(err)) >= 1000
            await new.wait_for(lambda s: s.configs)
            strict.cli("devices", "--revoke", a.device_id)
            err = await _ended(new)
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED
            assert _trailer(err) == "never"


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    size = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + \
        n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + size + body


def compressed_csr(key: ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes]:
    """A PKCS#10 CSR (PEM) whose SubjectPublicKeyInfo holds the point compressed, and that
    SPKI. Built by hand: cryptography always writes the point uncompressed."""
    point = key.public_key().public_bytes(serialization.Encoding.X962,
                                          serialization.PublicFormat.CompressedPoint)
    spki = bytes.fromhex("3039301306072a8648ce3d020106082a8648ce3d030107032200") + point
    cn = _der(0x30, _der(0x06, bytes.fromhex("550403")) + _der(0x0C, b"vigil-agent"))
    info = _der(0x30, b"\x02\x01\x00" + _der(0x30, _der(0x31, cn)) + spki + b"\xa0\x00")
    sig = key.sign(info, ec.ECDSA(hashes.SHA256()))
    alg = _der(0x30, _der(0x06, bytes.fromhex("2a8648ce3d040302")))
    der = _der(0x30, info + alg + _der(0x03, b"\x00" + sig))
    b64 = base64.encodebytes(der).decode().replace("\n", "")
    lines = "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{lines}\n-----END CERTIFICATE REQUEST-----\n" \
        .encode(), spki


async def test_a_csr_with_a_compressed_point_keeps_the_id_the_client_computed(
        strict: RunningCollector) -> None:
    a: AgentClient = client(strict)
    csr, spki = compressed_csr(a.key)
    computed = device_id_from_spki(spki)
    resp = await a.enrol(strict.create_token(), csr_pem=csr)
    cert = x509.load_pem_x509_certificate(resp.client_cert_pem)
    assert resp.device_id == computed == a.device_id
    assert cert.subject.rfc4514_string() == f"CN={computed}"
    cap = good()
    async with a.connect() as s:  # the issued certificate works for mTLS
        await s.send_captures([cap])
        await s.wait_for(lambda s: cap.id in s.acked)
    assert strict.query("SELECT device_id FROM captures WHERE id = ?", (cap.id,)) == [
        (computed,)]


class _Spool(Spool):
    """The real spool, with an event set once it is empty (the uplink runs in this loop)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.empty = asyncio.Event()

    def _settle(self) -> None:
        if self.stats().depth == 0:
            self.empty.set()

    def ack(self, ids: object) -> int:
        n = super().ack(ids)  # type: ignore[arg-type]
        self._settle()
        return n

    def reject(self, capture_id: str, reason: str, prefix: str = "rejected") -> None:
        super().reject(capture_id, reason, prefix)
        self._settle()


async def test_python_agent_quarantines_a_capture_refused_twice(
        strict: RunningCollector, tmp_path: Path) -> None:
    a = await enrolled(strict)
    assert a.cert_pem is not None
    spool = _Spool(tmp_path / "spool.db")
    retryable = good(rule_id="wire.from_the_future", rules_version=99)
    permanent = good(category="suicide")
    stored = good()
    for c in (retryable, permanent, stored):
        spool.put(c)
    up = Uplink(spool, None,  # type: ignore[arg-type]  # no bundle is pushed (version 1)
                mtls_channel_factory(strict.stream_addr, strict.ca_pem, a.key_pem, a.cert_pem),
                heartbeat=lambda: pb.Heartbeat(rules_version=1, os_user="pupil1"))
    stop = asyncio.Event()
    task = asyncio.create_task(up.run(stop))
    try:
        await asyncio.wait_for(spool.empty.wait(), 30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    drops = spool.stats().drops
    spool.close()
    assert drops == {"quarantined:unknown_rule": 1, "rejected:category_mismatch": 1}
    assert strict.query("SELECT id FROM captures WHERE id IN (?, ?, ?)",
                        (retryable.id, permanent.id, stored.id)) == [(stored.id,)]
