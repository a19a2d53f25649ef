"""One simulated agent: its own mTLS connection and ``Connect`` stream, as a laptop has.

It behaves like ``agent.uplink`` on the wire: a heartbeat first and then every
``heartbeat_seconds`` (random phase, so 10,000 agents do not beat in step), captures in
batches, a ``RulesAck`` plus a fresh heartbeat for every rule bundle. Messages are written
pre-serialised. Every ack is matched to the batch it acknowledges, which gives the ack
latency (send -> ``Ack`` after the collector's commit).

Each agent gets its own TCP/TLS connection: gRPC would otherwise share one subchannel
between channels with identical arguments, so the channel sets
``grpc.use_local_subchannel_pool``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from proto import vigil_pb2 as pb
from proto.identity import KEEPALIVE_OPTIONS

from .identity import Identity
from .mix import CaptureMix

__all__ = ["BundleCheck", "SimAgent", "Tally"]

_METHOD = "/vigil.v1.Collector/Connect"
_RETRY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


@dataclass
class Tally:
    """Counters shared by every agent of one simulator process."""

    sent: int = 0
    acked: int = 0
    rejected: int = 0
    backoffs: int = 0
    heartbeats: int = 0
    bundles: int = 0
    reconnects: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    record: bool = True


class BundleCheck:
    """What an agent does with every bundle it receives: parse the envelope and verify the
    Ed25519 signature over the payload, EVERY time (that is the per-agent cost a fleet pays).
    Only the opening of an identical, already-verified payload into a rule set is cached: a
    simulator process stands in for thousands of laptops, and building the matcher is the
    agent's own CPU, measured in bench/rules.py, not the collector's fan-out."""

    def __init__(self, public_pem: bytes | None) -> None:
        self.public_pem = public_pem
        self.verified = 0
        self._opened: dict[bytes, tuple[bool, str, int]] = {}
        self._key: Any = None
        if public_pem is not None:
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            self._key = load_pem_public_key(public_pem)

    def __call__(self, bundle: bytes, version: int) -> tuple[bool, str, int]:
        if self.public_pem is None:
            return (True, "", version)
        import base64
        import json

        from cryptography.exceptions import InvalidSignature

        try:
            env = json.loads(bundle.decode("utf-8"))
            payload = env["payload"].encode("utf-8")
            self._key.verify(base64.b64decode(env["signature"], validate=True), payload)
        except (InvalidSignature, ValueError, KeyError, TypeError, AttributeError):
            return (False, "bad signature or envelope", version)
        self.verified += 1
        digest = hashlib.sha256(payload).digest()
        hit = self._opened.get(digest)
        if hit is None:
            import rules

            try:
                _, info = rules.load_bundle(bundle, self.public_pem)
                hit = (True, "", info.version)
            except rules.BundleError as exc:
                hit = (False, str(exc)[:200], version)
            self._opened[digest] = hit
        return hit


class SimAgent:
    def __init__(self, ident: Identity, stream_addr: str, ca_pem: bytes, tally: Tally,
                 check: BundleCheck, *, heartbeat_seconds: float = 30.0, seed: int = 0,
                 rules_version: int = 0) -> None:
        self.ident, self.stream_addr, self.ca_pem = ident, stream_addr, ca_pem
        self.tally, self.check = tally, check
        self.heartbeat_seconds = heartbeat_seconds
        self.rules_version = rules_version
        self.mix = CaptureMix(seed, hostname=ident.hostname)
        self.rng = random.Random(seed)
        self.configured = asyncio.Event()
        self.closed = asyncio.Event()
        self.error: str = ""
        self.bundle_at: dict[int, float] = {}     # version -> time.time() the bundle arrived
        self.rules_ack_at: dict[int, float] = {}  # version -> time.time() RulesAck was written
        # first id -> (perf_counter at first send, n, serialised batch)
        self._pending: dict[str, tuple[float, int, bytes]] = {}
        self._acked_event = asyncio.Event()
        self._lock = asyncio.Lock()
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self.on_rules: Callable[[SimAgent, int], None] | None = None
        self._closing = False

    # -- connection ------------------------------------------------------------------------
    async def connect(self, timeout: float = 120.0) -> None:
        """Open the stream, send the first heartbeat, wait for the collector's AgentConfig."""
        await self._open()
        await asyncio.wait_for(self.configured.wait(), timeout)
        self._tasks.append(asyncio.create_task(self._beat()))

    async def _open(self) -> None:
        creds = grpc.ssl_channel_credentials(root_certificates=self.ca_pem,
                                             private_key=self.ident.key_pem,
                                             certificate_chain=self.ident.cert_pem)
        options = [*KEEPALIVE_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
        self.configured.clear()
        self._channel = grpc.aio.secure_channel(self.stream_addr, creds, options=options)
        self._call = self._channel.stream_stream(
            _METHOD, request_serializer=None,
            response_deserializer=pb.CollectorMessage.FromString)()
        self._tasks.append(asyncio.create_task(self._read()))
        await self.heartbeat()

    async def _reconnect(self, delay: float) -> None:
        """What the real uplink does when the collector ends the stream with UNAVAILABLE or
        RESOURCE_EXHAUSTED: wait ``retry-after-ms``, reconnect, resend everything
        unacknowledged (capture ids make that idempotent)."""
        self.tally.reconnects += 1
        old = self._channel
        await asyncio.sleep(delay)
        if old is not None:
            await old.close(grace=None)
        try:
            await self._open()
            await asyncio.wait_for(self.configured.wait(), 60)
        except Exception as exc:
            self.error = f"reconnect failed: {exc!r}"[:300]
            self.closed.set()
            self._acked_event.set()
            return
        for _, _, data in list(self._pending.values()):
            await self.write(data)

    async def close(self) -> None:
        self._closing = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        if self._call is not None:
            self._call.cancel()
        if self._channel is not None:
            await self._channel.close(grace=None)

    async def write(self, data: bytes) -> bool:
        """Write one message; False when the stream is down (a batch stays pending and is
        resent after the reconnect; heartbeats and RulesAcks are simply sent again)."""
        try:
            async with self._lock:
                await self._call.write(data)
        except (asyncio.InvalidStateError, grpc.RpcError):
            return False
        return True

    async def heartbeat(self) -> None:
        hb = pb.Heartbeat(agent_version="sim-0.1", rules_version=self.rules_version,
                          os_user=self.mix.os_user, hostname=self.ident.hostname, os="linux")
        await self.write(pb.AgentMessage(heartbeat=hb).SerializeToString())
        self.tally.heartbeats += 1

    async def _beat(self) -> None:
        await asyncio.sleep(self.rng.random() * self.heartbeat_seconds)
        while True:
            await self.heartbeat()
            await asyncio.sleep(self.heartbeat_seconds)

    # -- receiving -------------------------------------------------------------------------
    async def _read(self) -> None:
        try:
            async for msg in self._call:
                kind = msg.WhichOneof("body")
                if kind == "ack":
                    self._ack(msg.ack)
                elif kind == "config":
                    self.configured.set()
                elif kind == "rules":
                    await self._rules(msg.rules)
                elif kind == "backoff":
                    # The batch was not stored: resend what is unacknowledged after the pause
                    # (ids make it idempotent), as the real uplink does.
                    self.tally.backoffs += 1
                    self._tasks.append(asyncio.create_task(
                        self._resend(msg.backoff.retry_after_ms / 1000)))
        except grpc.aio.AioRpcError as exc:
            self.error = f"{exc.code().name}: {exc.details()}"
            if exc.code() in _RETRY and not self._closing:
                delay = 1.0
                for key, value in exc.trailing_metadata() or ():
                    if key == "retry-after-ms" and str(value).isdigit():
                        delay = int(value) / 1000
                self._tasks.append(asyncio.create_task(self._reconnect(delay)))
                return
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            self.error = repr(exc)
        self.closed.set()
        self._acked_event.set()

    def _ack(self, ack: pb.Ack) -> None:
        now = time.perf_counter()
        first = ack.stored_ids[0] if ack.stored_ids else (
            ack.rejected[0].id if ack.rejected else None)
        self.tally.acked += len(ack.stored_ids)
        self.tally.rejected += len(ack.rejected)
        sent = self._pending.pop(first, None) if first is not None else None
        if sent is not None and self.tally.record:
            self.tally.latencies_ms.append((now - sent[0]) * 1000)
        self._acked_event.set()

    async def _rules(self, bundle: pb.RuleBundle) -> None:
        self.bundle_at[bundle.version] = time.time()
        self.tally.bundles += 1
        applied, error, version = self.check(bundle.bundle, bundle.version)
        await self.write(pb.AgentMessage(rules_ack=pb.RulesAck(
            version=version, applied=applied, error=error)).SerializeToString())
        self.rules_ack_at[version] = time.time()
        if applied:
            self.rules_version = max(self.rules_version, version)
        await self.heartbeat()
        if self.on_rules is not None:
            self.on_rules(self, version)

    async def _resend(self, delay: float) -> None:
        await asyncio.sleep(delay)
        for _, _, data in list(self._pending.values()):
            await self.write(data)

    # -- sending captures ------------------------------------------------------------------
    @property
    def inflight(self) -> int:
        return len(self._pending)

    async def send_batch(self, first_id: str, data: bytes, n: int) -> None:
        self._pending[first_id] = (time.perf_counter(), n, data)
        await self.write(data)
        self.tally.sent += n

    async def load(self, rate: float, seconds: float) -> None:
        """Captures one at a time at ``rate`` per second (Poisson), for ``seconds``."""
        due = time.monotonic()
        end = due + seconds
        while True:
            due += self.rng.expovariate(rate)
            if due >= end or self.closed.is_set():
                return
            await asyncio.sleep(due - time.monotonic())
            first, data = self.mix.batch_bytes(1)
            await self.send_batch(first, data, 1)

    async def burst(self, batches: list[tuple[str, bytes, int]], window: int) -> None:
        """Send every batch, at most ``window`` unacknowledged at once (like the agent's
        ``max_inflight``), and return when all are acknowledged."""
        for first, data, n in batches:
            while self.inflight >= window and not self.closed.is_set():
                self._acked_event.clear()
                await self._acked_event.wait()
            await self.send_batch(first, data, n)
        await self.drain()

    async def drain(self, timeout: float = 300.0) -> None:
        """Wait until every batch sent has been acknowledged (or the stream closed)."""
        async def _wait() -> None:
            while self._pending and not self.closed.is_set():
                self._acked_event.clear()
                await self._acked_event.wait()
        await asyncio.wait_for(_wait(), timeout)
