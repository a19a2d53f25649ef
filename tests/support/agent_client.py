"""A minimal agent-like gRPC client over real mutual TLS, for tests and benchmarks.

It does what a real agent does on the wire, and nothing more::

    client = AgentClient(collector.enrol_addr, collector.stream_addr, collector.ca_pem)
    resp = await client.enrol(token)              # P-256 key + CSR -> device cert
    async with client.connect() as stream:         # mTLS Connect stream
        await stream.heartbeat(rules_version=0)
        await stream.send_captures([make_capture(severity=5)])
        await stream.wait_for(lambda s: s.acked >= {"c-1"})
        bundle = await stream.wait_for(lambda s: s.bundles and s.bundles[-1])

Everything the collector sends is kept on the :class:`Stream` (``messages``, ``acked``,
``rejected``, ``bundles``, ``configs``, ``backoffs``). ``wait_for`` polls a condition with a
generous timeout, never a bare sleep. ``AgentClient.channel(cert=False)`` opens a stream
channel without a client certificate (to prove it is refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proto import vigil_pb2 as pb
from proto import vigil_pb2_grpc as pb_grpc
from proto.identity import KEEPALIVE_OPTIONS, device_id_from_spki

if TYPE_CHECKING:
    from tests.support.collector import RunningCollector

__all__ = ["AgentClient", "Stream", "client", "enrolled", "make_capture", "refusal"]

T = TypeVar("T")


def make_capture(
    id: str | None = None,
    *,
    severity: int = 3,
    rule_id: str = "test-rule",
    category: str = "self_harm",
    os_user: str = "pupil1",
    source: int = pb.SOURCE_KEYS,
    match: str = "example phrase",
    context: str = "…typed example phrase here…",
    time_ms: int | None = None,
    match_kind: int = pb.MATCH_KIND_EXACT,
    **fields: Any,
) -> pb.Capture:
    """A valid capture with sensible defaults; override any field by keyword."""
    t = time_ms if time_ms is not None else int(time.time() * 1000)
    values: dict[str, Any] = {
        "id": id or f"c-{uuid.uuid4().hex}", "os_user": os_user, "time_unix_ms": t,
        "last_time_unix_ms": t, "count": 1, "source": source, "rule_id": rule_id,
        "category": category, "severity": severity, "match": match, "context": context,
        "window_title": "Notepad", "process": "notepad", "match_kind": match_kind,
        "hostname": "pc-test"}
    values.update(fields)
    return pb.Capture(**values)


class Stream:
    """One open Connect stream. Read the collected messages or ``wait_for`` a condition."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.messages: list[pb.CollectorMessage] = []
        self.acked: set[str] = set()
        self.rejected: dict[str, str] = {}
        self.bundles: list[pb.RuleBundle] = []
        self.configs: list[pb.AgentConfig] = []
        self.backoffs: list[pb.Backoff] = []
        self.error: grpc.aio.AioRpcError | None = None
        self.closed = asyncio.Event()
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.call:
                kind = msg.WhichOneof("body")
                if kind == "ack":
                    self.acked.update(msg.ack.stored_ids)
                    self.rejected.update({r.id: r.reason for r in msg.ack.rejected})
                elif kind == "rules":
                    self.bundles.append(msg.rules)
                elif kind == "config":
                    self.configs.append(msg.config)
                elif kind == "backoff":
                    self.backoffs.append(msg.backoff)
                self.messages.append(msg)
                async with self._changed:
                    self._changed.notify_all()
        except grpc.aio.AioRpcError as exc:
            self.error = exc
        except asyncio.CancelledError:
            pass
        finally:
            self.closed.set()
            async with self._changed:
                self._changed.notify_all()

    async def send(self, msg: pb.AgentMessage) -> None:
        await self.call.write(msg)

    async def send_captures(self, captures: list[pb.Capture]) -> None:
        await self.send(pb.AgentMessage(captures=pb.CaptureBatch(captures=captures)))

    async def heartbeat(self, rules_version: int = 0, **fields: Any) -> None:
        fields.setdefault("agent_version", "test-0.1")
        fields.setdefault("os_user", "pupil1")
        fields.setdefault("hostname", "pc-test")
        fields.setdefault("os", "linux")
        await self.send(pb.AgentMessage(heartbeat=pb.Heartbeat(rules_version=rules_version,
                                                               **fields)))

    async def rules_ack(self, version: int, applied: bool = True, error: str = "") -> None:
        await self.send(pb.AgentMessage(rules_ack=pb.RulesAck(version=version, applied=applied,
                                                              error=error)))

    async def wait_for(self, cond: Callable[[Stream], T], timeout: float = 20.0) -> T:
        """Wait until ``cond(self)`` is truthy (returns it) or raise TimeoutError."""
        async def _wait() -> T:
            async with self._changed:
                while True:
                    value = cond(self)
                    if value:
                        return value
                    if self.closed.is_set():
                        raise ConnectionError(f"stream closed: {self.error}")
                    await self._changed.wait()
        return await asyncio.wait_for(_wait(), timeout)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.call.done_writing()
        self.call.cancel()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


class AgentClient:
    """An agent identity (its own P-256 key) that can enrol and stream."""

    def __init__(self, enrol_addr: str, stream_addr: str, ca_pem: bytes,
                 hostname: str = "pc-test") -> None:
        self.enrol_addr, self.stream_addr, self.ca_pem = enrol_addr, stream_addr, ca_pem
        self.hostname = hostname
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert_pem: bytes | None = None
        self.enrolment: pb.EnrollResponse | None = None

    @property
    def device_id(self) -> str:
        spki = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return device_id_from_spki(spki)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def csr_pem(self, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vigil-agent")]))
               .sign(key or self.key, hashes.SHA256()))
        return csr.public_bytes(serialization.Encoding.PEM)

    async def enrol(self, token: str, csr_pem: bytes | None = None) -> pb.EnrollResponse:
        """Enrol; raises grpc.aio.AioRpcError with the collector's status on refusal."""
        creds = grpc.ssl_channel_credentials(root_certificates=self.ca_pem)
        async with grpc.aio.secure_channel(self.enrol_addr, creds,
                                           options=list(KEEPALIVE_OPTIONS)) as ch:
            resp: pb.EnrollResponse = await pb_grpc.EnrollmentStub(ch).Enroll(
                pb.EnrollRequest(token=token, csr_pem=csr_pem or self.csr_pem(),
                                 hostname=self.hostname, os="linux", agent_version="test-0.1"),
                timeout=20)
        self.cert_pem = resp.client_cert_pem
        self.enrolment = resp
        return resp

    def channel(self, cert: bool = True) -> grpc.aio.Channel:
        if cert and self.cert_pem is None:
            raise RuntimeError("enrol first (no client certificate yet)")
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.key_pem if cert else None,
            certificate_chain=self.cert_pem if cert else None)
        return grpc.aio.secure_channel(self.stream_addr, creds, options=list(KEEPALIVE_OPTIONS))

    @contextlib.asynccontextmanager
    async def connect(self, cert: bool = True) -> AsyncIterator[Stream]:
        """Open a Connect stream (mTLS) and yield it; closed on exit."""
        ch = self.channel(cert)
        stream = Stream(pb_grpc.CollectorStub(ch).Connect())
        try:
            yield stream
        finally:
            await stream.close()
            await ch.close()


def client(c: RunningCollector, hostname: str = "pc-test") -> AgentClient:
    """An (unenrolled) agent-like client for the collector *c*."""
    return AgentClient(c.enrol_addr, c.stream_addr, c.ca_pem, hostname)


async def enrolled(c: RunningCollector, group: str = "secondary",
                   hostname: str = "pc-test") -> AgentClient:
    """A client enrolled into *group* of *c*'s default site with a fresh token."""
    a = client(c, hostname)
    await a.enrol(c.create_token(group=group))
    return a


async def refusal(s: Stream) -> grpc.StatusCode:
    """Use a stream the collector should refuse; return the status code it ended with."""
    try:
        await s.heartbeat()
        await s.wait_for(lambda s: s.messages)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    except ConnectionError:
        assert s.error is not None
        return s.error.code()
    raise AssertionError(f"stream was not refused: {s.messages}")
