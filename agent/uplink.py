"""The uplink: one bidirectional ``Collector.Connect`` stream over mutual TLS.

It sends captures from the spool in batches (most severe first) and heartbeats; it receives
acks (delete stored ids; drop and count rejected ones), signed rule bundles (verified and
swapped in by :class:`agent.rulestate.ActiveRules`, answered with ``RulesAck``), agent config
and backoff requests. When the stream fails it reconnects with exponential backoff and
jitter, and honours ``retry-after-ms`` trailing metadata (sent with RESOURCE_EXHAUSTED or
UNAVAILABLE) and ``Backoff`` messages. Everything in flight when a stream ends is resent on
the next one; capture ids make that idempotent at the collector.

Refusals (docs/wire.md): a ``Rejected`` with ``retry_after_ms`` 0 is dropped and counted; one
with a delay is resent after it. A stream ended with INVALID_ARGUMENT (a message the collector
could not decode) counts against every capture that was in flight, and until those are
settled captures go one at a time, so the culprit is found. A capture refused twice is
quarantined (dropped, counted as ``quarantined:<reason>``). PERMISSION_DENIED (revoked) and
ABORTED (a newer stream of the same device replaced this one) are reported distinctly in
``last_error``; ``retry-after-ms: never`` makes the agent check again only every
``backoff_max`` seconds.

The clock, the sleep, the random source and the channel factory are injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from proto import vigil_pb2 as pb
from proto import vigil_pb2_grpc as pb_grpc
from proto.identity import KEEPALIVE_OPTIONS

from .aio import wait_event
from .rulestate import ActiveRules
from .spool import Spool

__all__ = ["REFUSALS_BEFORE_QUARANTINE", "Uplink", "backoff_delay", "mtls_channel_factory",
           "never_retry", "retry_after_seconds"]

log = logging.getLogger(__name__)

ChannelFactory = Callable[[], grpc.aio.Channel]

#: A capture the collector refuses this many times is quarantined (dropped and counted).
REFUSALS_BEFORE_QUARANTINE = 2


def backoff_delay(attempt: int, initial: float, maximum: float,
                  rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter: a random point in [base/2, base]."""
    base = min(maximum, initial * (2 ** min(attempt, 30)))
    return float(base / 2 + rng() * base / 2)


def retry_after_seconds(metadata: Any) -> float | None:
    """The ``retry-after-ms`` value from gRPC (trailing) metadata, in seconds, if present."""
    for key, value in metadata or ():
        if key == "retry-after-ms":
            try:
                return max(0.0, int(value) / 1000)
            except (TypeError, ValueError):
                return None
    return None


def never_retry(metadata: Any) -> bool:
    """True when the trailing metadata says ``retry-after-ms: never``."""
    return any(k == "retry-after-ms" and v == "never" for k, v in metadata or ())


def mtls_channel_factory(address: str, ca_pem: bytes, key_pem: bytes,
                         cert_pem: bytes) -> ChannelFactory:
    creds = grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=key_pem,
                                         certificate_chain=cert_pem)

    def factory() -> grpc.aio.Channel:
        return grpc.aio.secure_channel(address, creds, options=list(KEEPALIVE_OPTIONS))

    return factory


class Uplink:
    def __init__(self, spool: Spool, rules: ActiveRules, channel_factory: ChannelFactory, *,
                 heartbeat: Callable[[], pb.Heartbeat],
                 on_config: Callable[[pb.AgentConfig], None] = lambda _c: None,
                 batch_size: int = 100, heartbeat_seconds: float = 30.0,
                 backoff_initial: float = 1.0, backoff_max: float = 60.0,
                 max_inflight: int = 1000,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: Callable[[], float] = random.random) -> None:
        self.spool, self.rules = spool, rules
        self.channel_factory = channel_factory
        self.heartbeat, self.on_config = heartbeat, on_config
        self.batch_size, self.heartbeat_seconds = batch_size, heartbeat_seconds
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.max_inflight = max_inflight
        self.clock, self.sleep, self.rng = clock, sleep, rng
        self.connected = False
        self.last_error = ""
        self.sessions = 0
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused_until = 0.0
        self._inflight: set[str] = set()
        self._retry_after = 0.0
        #: (status code name, delay before the next attempt), most recent last.
        self.retries: list[tuple[str, float]] = []
        #: capture id -> refusals so far (retryable rejections, INVALID_ARGUMENT stream ends)
        self.refusals: dict[str, int] = {}
        self._held: dict[str, float] = {}  # capture id -> monotonic time it may be resent

    def notify(self) -> None:
        """Thread-safe: new captures are in the spool."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        """Keep a stream up until *stop* is set."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        attempt = 0
        while not stop.is_set():
            delay: float | None = None
            try:
                got_reply = await self._session(stop)
                if got_reply:
                    attempt, self._retry_after = 0, 0.0
                self.last_error = "stream closed by collector"
            except grpc.aio.AioRpcError as exc:
                self.last_error = f"{exc.code().name}: {exc.details()}"
                delay = retry_after_seconds(exc.trailing_metadata())
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    for capture_id in list(self._inflight):
                        self._refused(capture_id, "undecodable_stream")
                elif exc.code() == grpc.StatusCode.ABORTED:
                    log.warning("another stream of this device replaced ours: if this agent "
                                "did not reconnect, a second process is using its identity")
                if never_retry(exc.trailing_metadata()):
                    delay = self.backoff_max  # refused for good (revoked, unknown): rarely
                    if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                        self.last_error = f"revoked: {self.last_error}"
                if delay is not None:
                    self._retry_after = delay
                elif exc.code() == grpc.StatusCode.INTERNAL and self._retry_after:
                    # A local write raced the collector's refusal and gRPC replaced its
                    # status (and retry-after-ms) with INTERNAL: keep honouring the last one.
                    delay = self._retry_after
                log.warning("collector stream ended: %s", self.last_error)
            except (OSError, grpc.RpcError, asyncio.InvalidStateError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("collector stream failed: %s", self.last_error)
            except Exception as exc:  # the uplink must outlive any single stream
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("collector stream failed unexpectedly")
            finally:
                self.connected = False
                self._inflight.clear()
                self.spool.unmark_sent()
            if stop.is_set():
                break
            if delay is None:
                delay = backoff_delay(attempt, self.backoff_initial, self.backoff_max, self.rng)
            self.retries.append((self.last_error.split(":", 1)[0], delay))
            del self.retries[:-50]
            attempt += 1
            await wait_event(stop, delay)

    async def _session(self, stop: asyncio.Event) -> bool:
        self.sessions += 1
        channel = self.channel_factory()
        # Messages go through a queue that gRPC drains itself (a request iterator): a write
        # that races the collector's abort then cannot replace the collector's real status
        # (and its retry-after-ms trailer) with a local INTERNAL error.
        outbox: asyncio.Queue[pb.AgentMessage | None] = asyncio.Queue()

        async def requests() -> AsyncIterator[pb.AgentMessage]:
            while (msg := await outbox.get()) is not None:
                yield msg

        async def write(msg: pb.AgentMessage) -> None:
            await outbox.put(msg)

        try:
            call = pb_grpc.CollectorStub(channel).Connect(requests())
            replied = asyncio.Event()
            self.spool.unmark_sent()
            self._inflight.clear()
            await write(pb.AgentMessage(heartbeat=self.heartbeat()))
            tasks = {asyncio.create_task(self._receive(call, write, replied)),
                     asyncio.create_task(self._send(write, replied)),
                     asyncio.create_task(stop.wait())}
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
            # Bounded: a task that fails to honour its cancellation must not stop the uplink
            # from reconnecting (that is how a network drop once hung it for good).
            _, stuck = await asyncio.wait(pending, timeout=10)
            for t in stuck:
                log.error("uplink task %r did not stop when cancelled; reconnecting anyway", t)
            for t in pending - stuck:
                with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
                    t.result()
            if stop.is_set():
                await outbox.put(None)
                call.cancel()
            for t in done:
                t.result()  # re-raise a stream error
            return replied.is_set()
        finally:
            await channel.close(grace=None)

    async def _receive(self, call: Any, write: Callable[[pb.AgentMessage], Awaitable[None]],
                       replied: asyncio.Event) -> None:
        async for msg in call:
            replied.set()
            self.connected = True
            kind = msg.WhichOneof("body")
            if kind == "ack":
                self.spool.ack(msg.ack.stored_ids)
                for capture_id in msg.ack.stored_ids:
                    self.refusals.pop(capture_id, None)
                for rej in msg.ack.rejected:
                    if rej.retry_after_ms:
                        self._refused(rej.id, rej.reason, rej.retry_after_ms / 1000)
                    else:
                        log.warning("collector rejected capture %s: %s", rej.id, rej.reason)
                        self.spool.reject(rej.id, rej.reason)
                        self.refusals.pop(rej.id, None)
                self._inflight.difference_update(msg.ack.stored_ids)
                self._inflight.difference_update(r.id for r in msg.ack.rejected)
                self._set_wake()
            elif kind == "rules":
                applied, error, version = self.rules.apply_bundle(msg.rules.bundle)
                await write(pb.AgentMessage(rules_ack=pb.RulesAck(
                    version=version or msg.rules.version, applied=applied, error=error)))
                await write(pb.AgentMessage(heartbeat=self.heartbeat()))
            elif kind == "config":
                self.on_config(msg.config)
            elif kind == "backoff":
                self._paused_until = self.clock() + msg.backoff.retry_after_ms / 1000
                # The collector could not store what is in flight (that is why it asks us to
                # wait): put it back so it is resent after the pause on this same stream.
                # A capture it did store is acked again on resend (ids are idempotent).
                self.spool.unmark_sent()
                self._inflight.clear()
                log.info("collector asked to pause %d ms (%s)", msg.backoff.retry_after_ms,
                         msg.backoff.reason)

    def _refused(self, capture_id: str, reason: str, retry_after: float = 0.0) -> None:
        """Count a refusal; quarantine on the second, else resend after ``retry_after``."""
        n = self.refusals.get(capture_id, 0) + 1
        if n >= REFUSALS_BEFORE_QUARANTINE:
            log.error("collector refused capture %s %d times (%s): quarantined", capture_id,
                      n, reason)
            self.spool.quarantine(capture_id, reason)
            self.refusals.pop(capture_id, None)
            self._held.pop(capture_id, None)
            return
        self.refusals[capture_id] = n
        if retry_after > 0:
            self._held[capture_id] = self.clock() + retry_after

    async def _send(self, write: Callable[[pb.AgentMessage], Awaitable[None]],
                    replied: asyncio.Event) -> None:
        assert self._wake is not None
        # Let the collector answer the first heartbeat (config, rules, or a refusal) before
        # captures go out; an old collector that says nothing gets them after a second.
        await wait_event(replied, 1.0)
        next_hb = self.clock() + self.heartbeat_seconds
        while True:
            self._wake.clear()
            now = self.clock()
            if now >= next_hb:
                await write(pb.AgentMessage(heartbeat=self.heartbeat()))
                next_hb = now + self.heartbeat_seconds
            wait = next_hb - now
            due = [i for i, t in self._held.items() if t <= now]
            if due:
                self.spool.unmark(due)
                for i in due:
                    del self._held[i]
            if self._held:
                wait = min(wait, min(self._held.values()) - now)
            if now < self._paused_until:
                wait = min(wait, self._paused_until - now)
            else:
                # after a refusal, one capture at a time until it is settled
                limit = 1 if self.refusals else self.max_inflight
                room = limit - len(self._inflight)
                batch = self.spool.next_batch(min(self.batch_size, room)) if room > 0 else []
                if batch:
                    self._inflight.update(c.id for c in batch)
                    await write(pb.AgentMessage(captures=pb.CaptureBatch(captures=batch)))
                    continue
                if not self._inflight and not self._held:
                    self.refusals.clear()  # nothing left to settle (e.g. evicted)
            await wait_event(self._wake, max(0.01, wait))

    def _set_wake(self) -> None:
        if self._wake is not None:
            self._wake.set()
