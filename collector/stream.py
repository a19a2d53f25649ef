"""The Collector service (mutual-TLS port): one bidirectional stream per agent, and model
artefact downloads (``FetchModel``).

The device is identified from the client certificate the TLS layer verified
(``context.auth_context()['x509_pem_cert']``), never from a message body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from collector.artefacts import ArtefactStore, FetchLimit
from collector.fanout import Connection, Hub
from collector.store.base import DeviceRow, Heartbeat, RulesAckRow, Store
from collector.store.ingest import Work, Writer
from collector.tls import device_id_from_cert_pem
from collector.validate import Limits, bound, safe_text, to_new_capture
from proto import vigil_pb2 as pb
from proto import vigil_pb2_grpc as pb_grpc

__all__ = ["CHUNK_BYTES", "AgentSettings", "CollectorService", "Malformed", "lenient"]

log = logging.getLogger(__name__)

#: Largest ModelChunk.data (the wire contract says at most 1 MiB).
CHUNK_BYTES = 1 << 20


def _read_at(path: Any, offset: int, n: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(n)


class Malformed:
    """Stands in for a request that did not parse, so the servicer can answer
    ``INVALID_ARGUMENT`` (gRPC itself would answer ``UNKNOWN``)."""

    def __init__(self, type_name: str, size: int, error: str) -> None:
        self.type_name, self.size, self.error = type_name, size, error

    def __str__(self) -> str:
        return f"{self.type_name} of {self.size} bytes does not parse ({self.error})"


def lenient(cls: Any) -> Callable[[bytes], Any]:
    """A request deserializer that returns :class:`Malformed` instead of raising."""
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except Exception as exc:
            return Malformed(cls.DESCRIPTOR.full_name, len(data), str(exc)[:200])
    return parse


def _i64(v: int) -> int:
    """uint64 wire values clamped to what SQLite's INTEGER holds."""
    return min(int(v), 2**63 - 1)


class AgentSettings:
    """What goes into ``AgentConfig`` (besides the age band)."""

    def __init__(self, heartbeat_seconds: int = 60, context_chars: int = 120,
                 screenshot_min_severity: int = 4, excluded_windows: list[str] | None = None,
                 excluded_processes: list[str] | None = None) -> None:
        self.heartbeat_seconds = heartbeat_seconds
        self.context_chars = context_chars
        self.screenshot_min_severity = screenshot_min_severity
        self.excluded_windows = excluded_windows or []
        self.excluded_processes = excluded_processes or []


class CollectorService(pb_grpc.CollectorServicer):
    def __init__(
        self,
        store: Store,
        run: Callable[..., asyncio.Future[Any]],
        writer: Writer,
        hub: Hub,
        limits: Limits,
        settings: AgentSettings,
        clock: Callable[[], float] = time.time,
        max_connections: int = 20000,
        retry_after_ms: int = 5000,
        artefacts: ArtefactStore | None = None,
        fetch_limit: FetchLimit | None = None,
        fetch_retry_after_ms: int = 5000,
    ) -> None:
        self.store, self.run, self.writer, self.hub = store, run, writer, hub
        self.max_connections, self.retry_after_ms = max_connections, retry_after_ms
        self.limits, self.settings, self.clock = limits, settings, clock
        self.artefacts, self.fetch_limit = artefacts, fetch_limit or FetchLimit(50)
        self.fetch_retry_after_ms = fetch_retry_after_ms

    async def _device(self, context: grpc.aio.ServicerContext[Any, Any]) -> DeviceRow:
        certs = list(context.auth_context().get("x509_pem_cert") or [])
        if not certs:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required")
        device_id, serial = device_id_from_cert_pem(certs[0])
        device = await self.run(self.store.get_device, device_id)
        if device is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                f"device {device_id} is not enrolled here; enrol it first")
        assert isinstance(device, DeviceRow)
        if device.revoked_at is not None or device.cert_serial != serial:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"device {device_id} or its certificate has been revoked")
        return device

    async def Connect(
        self, request_iterator: AsyncIterator[pb.AgentMessage],
        context: grpc.aio.ServicerContext[pb.AgentMessage, pb.CollectorMessage],
    ) -> AsyncIterator[pb.CollectorMessage]:
        device = await self._device(context)
        if len(self.hub.connections) >= self.max_connections and \
                device.id not in self.hub.connections:
            context.set_trailing_metadata((("retry-after-ms", str(self.retry_after_ms)),))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                "collector is at server.max_connections; retry later")
        conn = Connection(device)
        self.hub.register(conn)
        reader = asyncio.create_task(self._read(request_iterator, conn))
        try:
            while True:
                msg = await conn.out.get()
                if msg is None:
                    break
                yield msg
        finally:
            reader.cancel()
            self.hub.unregister(conn)
        if conn.error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, conn.error)
        if conn.unavailable:
            context.set_trailing_metadata((("retry-after-ms", str(conn.retry_after_ms)),))
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"{conn.unavailable}: nothing unacknowledged was stored; "
                                f"retry after {conn.retry_after_ms} ms")

    async def FetchModel(
        self, request: pb.ModelRequest | Malformed,
        context: grpc.aio.ServicerContext[pb.ModelRequest, pb.ModelChunk],
    ) -> AsyncIterator[pb.ModelChunk]:
        """Stream one file of a published artefact from ``offset``; bounded concurrency."""
        device = await self._device(context)
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request))
        assert isinstance(request, pb.ModelRequest)
        path = self.artefacts.file(request.digest, request.file) if self.artefacts else None
        if path is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"model {safe_text(bound(request.digest, 64))} file "
                                f"{safe_text(bound(request.file, 128))!r} was not published by "
                                "this collector")
        assert path is not None
        if not self.fetch_limit.try_acquire():
            context.set_trailing_metadata(
                (("retry-after-ms", str(self.fetch_retry_after_ms)),))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{self.fetch_limit.limit} model downloads already running "
                                f"(server.model_fetch_concurrency); retry after "
                                f"{self.fetch_retry_after_ms} ms")
        offset = sent = 0
        try:
            size = path.stat().st_size
            offset = int(request.offset)
            if offset > size:
                await context.abort(grpc.StatusCode.OUT_OF_RANGE,
                                    f"offset {offset} is past the end of {request.file} "
                                    f"({size} bytes); start again from 0")
            pos = offset
            while True:
                data = await asyncio.to_thread(_read_at, path, pos, CHUNK_BYTES)
                if not data and pos < size:
                    break  # the file shrank under us: the agent's hash check will say so
                yield pb.ModelChunk(offset=pos, data=data, file_size=size)
                pos += len(data)
                sent += len(data)
                if pos >= size:
                    break
        finally:
            self.fetch_limit.release()
            log.info("model fetch: device %s, %s/%s, %d bytes from offset %d",
                     device.id, request.digest[:12], safe_text(bound(request.file, 128)),
                     sent, offset)

    async def _read(self, requests: AsyncIterator[pb.AgentMessage], conn: Connection) -> None:
        try:
            async for msg in requests:
                if isinstance(msg, Malformed):
                    log.info("device %s sent a malformed message: %s", conn.device.id,
                             safe_text(str(msg)))
                    conn.error = f"{msg}; the stream is closed"
                    break
                kind = msg.WhichOneof("body")
                if kind == "captures":
                    self._captures(msg.captures, conn)
                elif kind == "heartbeat":
                    await self._heartbeat(msg.heartbeat, conn)
                elif kind == "rules_ack":
                    a = msg.rules_ack
                    self.writer.submit_rules_ack(RulesAckRow(
                        conn.device.id, _i64(a.version), a.applied, bound(a.error, 500),
                        self._now()))
                    if a.applied:
                        conn.rules_version = a.version
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream broke; the agent reconnects
            log.debug("stream from %s ended: %s", conn.device.id, exc)
        finally:
            conn.close()

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def _captures(self, batch: pb.CaptureBatch, conn: Connection) -> None:
        now = self._now()
        work = Work([], [], conn.send, conn.end_unavailable)
        for c in batch.captures:
            r = to_new_capture(c, conn.device, now, self.limits)
            if isinstance(r, str):
                work.rejected.append((c.id, r))
            else:
                work.captures.append(r)
        if not self.writer.submit(work):
            self.writer.refuse(work, "collector overloaded")

    async def _heartbeat(self, hb: pb.Heartbeat, conn: Connection) -> None:
        self.writer.submit_heartbeat(Heartbeat(
            conn.device.id, self._now(), safe_text(bound(hb.agent_version, 64)),
            _i64(hb.rules_version), _i64(hb.spool_depth), _i64(hb.spool_bytes),
            {safe_text(bound(k, 64)): _i64(v) for k, v in list(hb.drops.items())[:50]},
            bound(hb.os_user, 256), safe_text(bound(hb.hostname, 255)),
            safe_text(bound(hb.os, 64))))
        conn.rules_version = max(conn.rules_version, hb.rules_version) \
            if conn.rules_version >= 0 else hb.rules_version
        if conn.configured_for != hb.os_user:
            conn.configured_for = hb.os_user
            band: str | None = None
            if hb.os_user:
                band = await self.run(self.store.pupil_age_band, conn.device.site_id,
                                      hb.os_user)
            s = self.settings
            conn.send(pb.CollectorMessage(config=pb.AgentConfig(
                heartbeat_seconds=s.heartbeat_seconds, context_chars=s.context_chars,
                screenshot_min_severity=s.screenshot_min_severity,
                excluded_windows=s.excluded_windows, excluded_processes=s.excluded_processes,
                group=band or conn.device.age_band)))
        self.hub.maybe_send_rules(conn)
