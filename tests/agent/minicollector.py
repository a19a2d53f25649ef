"""A small but real collector for the agent's tests: grpc.aio over TLS on 127.0.0.1 port 0.

It issues real certificates (a CA made with ``cryptography``), serves ``Enrollment.Enroll`` on
a server-TLS port and ``Collector.Connect`` with ``require_client_auth=True``, stores capture
ids (so "exactly once" can be checked), records every byte it received (for the privacy
tests), and can be told to reject captures, push a rule bundle, or refuse streams with
RESOURCE_EXHAUSTED + ``retry-after-ms``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proto import vigil_pb2 as pb
from proto import vigil_pb2_grpc as pb_grpc
from proto.identity import KEEPALIVE_OPTIONS, device_id_from_spki


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(obj: Any) -> bytes:
    return bytes(obj.public_bytes(serialization.Encoding.PEM))


class PKI:
    """A throwaway CA + server certificate for 127.0.0.1/localhost."""

    def __init__(self) -> None:
        now = dt.datetime.now(dt.UTC)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(_name("Vigil test CA"))
            .issuer_name(_name("Vigil test CA")).public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256()))
        self.server_key = ec.generate_private_key(ec.SECP256R1())
        import ipaddress

        self.server_cert = (
            x509.CertificateBuilder().subject_name(_name("localhost"))
            .issuer_name(self.ca_cert.subject).public_key(self.server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(self.ca_key, hashes.SHA256()))

    @property
    def ca_pem(self) -> bytes:
        return _pem(self.ca_cert)

    def server_credentials(self, client_auth: bool) -> grpc.ServerCredentials:
        key = self.server_key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
        return grpc.ssl_server_credentials(
            [(key, _pem(self.server_cert))], root_certificates=self.ca_pem,
            require_client_auth=client_auth)

    def issue(self, csr_pem: bytes) -> tuple[str, bytes]:
        csr = x509.load_pem_x509_csr(csr_pem)
        spki = csr.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        device_id = device_id_from_spki(spki)
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(_name(device_id))
                .issuer_name(self.ca_cert.subject).public_key(csr.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=1))
                .sign(self.ca_key, hashes.SHA256()))
        return device_id, _pem(cert)


@dataclass
class MiniCollector:
    pki: PKI = field(default_factory=PKI)
    tokens: set[str] = field(default_factory=lambda: {"tok-1"})
    rules_public_pem: bytes = b""
    group: str = "secondary"
    #: Capture id -> times received; stored ids (acked) are kept in ``stored``.
    received: Counter[str] = field(default_factory=Counter)
    stored: dict[str, pb.Capture] = field(default_factory=dict)
    heartbeats: list[pb.Heartbeat] = field(default_factory=list)
    rules_acks: list[pb.RulesAck] = field(default_factory=list)
    wire: bytearray = field(default_factory=bytearray)
    peers: list[str] = field(default_factory=list)
    reject_rule: str = ""            # captures of this rule are rejected
    refuse_streams: int = 0          # refuse this many streams with RESOURCE_EXHAUSTED
    retry_after_ms: int = 200
    bundle: bytes = b""              # pushed after the first heartbeat when version is newer
    bundle_version: int = 0
    config: pb.AgentConfig | None = None
    backoff_ms: int = 0              # sent once, after the first heartbeat
    streams: int = 0
    stream_starts: list[float] = field(default_factory=list)  # time.monotonic() per stream
    refused: int = 0
    port: int = 0
    enroll_port: int = 0
    _server: Any = None
    _enroll_server: Any = None

    async def start(self, port: int = 0) -> MiniCollector:
        opts = list(KEEPALIVE_OPTIONS)
        self._server = grpc.aio.server(options=opts)
        pb_grpc.add_CollectorServicer_to_server(_Stream(self), self._server)
        self.port = self._server.add_secure_port(f"127.0.0.1:{port}",
                                                 self.pki.server_credentials(True))
        await self._server.start()
        self._enroll_server = grpc.aio.server(options=opts)
        pb_grpc.add_EnrollmentServicer_to_server(_Enrol(self), self._enroll_server)
        self.enroll_port = self._enroll_server.add_secure_port(
            "127.0.0.1:0", self.pki.server_credentials(False))
        await self._enroll_server.start()
        return self

    async def stop(self) -> None:
        for s in (self._server, self._enroll_server):
            if s is not None:
                await s.stop(grace=None)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def enroll_address(self) -> str:
        return f"127.0.0.1:{self.enroll_port}"

    def write_ca(self, path: Path) -> Path:
        path.write_bytes(self.pki.ca_pem)
        return path


class _Enrol(pb_grpc.EnrollmentServicer):
    def __init__(self, c: MiniCollector) -> None:
        self.c = c

    async def Enroll(self, request: pb.EnrollRequest, context: Any) -> pb.EnrollResponse:
        if request.token not in self.c.tokens:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "unknown or used token")
        self.c.tokens.discard(request.token)
        device_id, cert = self.c.pki.issue(request.csr_pem)
        return pb.EnrollResponse(device_id=device_id, client_cert_pem=cert,
                                 ca_cert_pem=self.c.pki.ca_pem, site="test-school",
                                 group=self.c.group,
                                 rules_public_key_pem=self.c.rules_public_pem)


class _Stream(pb_grpc.CollectorServicer):
    def __init__(self, c: MiniCollector) -> None:
        self.c = c

    async def Connect(self, request_iterator: Any, context: Any) -> Any:
        c = self.c
        c.streams += 1
        c.stream_starts.append(time.monotonic())
        if c.refused < c.refuse_streams:
            c.refused += 1
            await request_iterator.__anext__()  # refuse after reading the first heartbeat
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "collector busy",
                                trailing_metadata=(("retry-after-ms", str(c.retry_after_ms)),))
        pem = context.auth_context().get("x509_pem_cert", [b""])[0]
        c.peers.append(pem.decode() if isinstance(pem, bytes) else str(pem))
        first = True
        async for msg in request_iterator:
            c.wire += msg.SerializeToString()
            kind = msg.WhichOneof("body")
            if kind == "heartbeat":
                c.heartbeats.append(msg.heartbeat)
                if first and c.config is not None:
                    yield pb.CollectorMessage(config=c.config)
                if first and c.backoff_ms:
                    yield pb.CollectorMessage(backoff=pb.Backoff(retry_after_ms=c.backoff_ms,
                                                                 reason="test"))
                if c.bundle and msg.heartbeat.rules_version < c.bundle_version:
                    yield pb.CollectorMessage(rules=pb.RuleBundle(
                        version=c.bundle_version, bundle=c.bundle))
                first = False
            elif kind == "rules_ack":
                c.rules_acks.append(msg.rules_ack)
                if msg.rules_ack.applied or msg.rules_ack.error:
                    c.bundle_version = 0 if msg.rules_ack.error else c.bundle_version
            elif kind == "captures":
                ack = pb.Ack()
                for cap in msg.captures.captures:
                    c.received[cap.id] += 1
                    if c.reject_rule and cap.rule_id == c.reject_rule:
                        ack.rejected.add(id=cap.id, reason="test_reject")
                        continue
                    c.stored[cap.id] = cap
                    ack.stored_ids.append(cap.id)
                yield pb.CollectorMessage(ack=ack)
            await asyncio.sleep(0)
