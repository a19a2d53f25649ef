"""The Collector service (mutual-TLS port): one bidirectional stream per agent, and model
artefact downloads (``FetchModel``).

The device is identified from the client certificate the TLS layer verified
(``context.auth_context()['x509_pem_cert']``), never from a message body. Every refusal
carries a status and a retry hint (docs/wire.md "Status codes"): a stream or call ends with
trailing metadata ``retry-after-ms`` (milliseconds, or ``never``); a refused capture gets a
``Rejected`` with ``retry_after_ms`` (0 = never). One capture that cannot be decoded is
refused by itself (``undecodable``), so it cannot close its stream again and again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc

from collector.artefacts import ArtefactStore, FetchLimit
from collector.fanout import Connection, Hub
from collector.services.estate import EstateService
from collector.store.base import DeviceRow, Heartbeat, RulesAckRow, SourceHealth, Store
from collector.store.ingest import Work, Writer
from collector.tls import device_id_from_cert_pem
from collector.validate import Limits, RuleCatalogue, bound, safe_text, to_new_capture
from proto import vigil_pb2 as pb
from proto import vigil_pb2_grpc as pb_grpc

__all__ = ["CHUNK_BYTES", "AgentSettings", "CollectorService", "Malformed", "Salvaged",
           "abort", "lenient"]

log = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")  # collector.validate: a capture id

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


class Salvaged:
    """A captures message that did not parse as a whole: the captures that did, by their
    position in the batch, and the position and (readable) id of each one that did not."""

    def __init__(self, captures: list[tuple[int, pb.Capture]],
                 broken: list[tuple[int, str]]) -> None:
        self.captures, self.broken = captures, broken


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(field number, wire type, raw value) of each field of one protobuf message."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            start = i
            _, i = _varint(data, i)
            value = data[start:i]
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            value, i = data[i:i + n], i + n
        elif wire == 2:
            n, i = _varint(data, i)
            value, i = data[i:i + n], i + n
        else:
            raise ValueError(f"wire type {wire}")
        if i > len(data):
            raise ValueError("truncated field")
        yield number, wire, value


def _readable_id(raw: bytes) -> str:
    """Capture.id from a capture that does not parse, if it is itself intact."""
    found = ""
    try:
        for number, wire, value in _fields(raw):
            if number == 1 and wire == 2:
                found = value.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        pass
    return found if _ID.match(found) else ""


def _salvage(data: bytes) -> Salvaged | None:
    """Split an unparseable AgentMessage holding only captures into its captures."""
    try:
        top = list(_fields(data))
        if not top or any(n != 1 or w != 2 for n, w, _ in top):
            return None
        # repeated occurrences of a message field merge: their bytes concatenate
        entries = [(w, v) for n, w, v in _fields(b"".join(v for _, _, v in top)) if n == 1]
    except ValueError:
        return None
    if any(w != 2 for w, _ in entries):
        return None
    good: list[tuple[int, pb.Capture]] = []
    broken: list[tuple[int, str]] = []
    for index, (_, raw) in enumerate(entries):
        try:
            good.append((index, pb.Capture.FromString(raw)))
        except Exception:
            broken.append((index, _readable_id(raw)))
    return Salvaged(good, broken) if broken else None


def lenient(cls: Any) -> Callable[[bytes], Any]:
    """A request deserializer that returns :class:`Malformed` instead of raising (and, for
    ``AgentMessage``, :class:`Salvaged` when only some of its captures are undecodable)."""
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except Exception as exc:
            if cls is pb.AgentMessage:
                salvaged = _salvage(data)
                if salvaged is not None:
                    return salvaged
            return Malformed(cls.DESCRIPTOR.full_name, len(data), str(exc)[:200])
    return parse


def retry_hint(retry_after_ms: int | None) -> tuple[tuple[str, str]]:
    """The ``retry-after-ms`` trailer: milliseconds, or ``never``."""
    return (("retry-after-ms", "never" if retry_after_ms is None else str(retry_after_ms)),)


async def abort(context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode,
                details: str, retry_after_ms: int | None) -> None:
    """End the call with ``code`` and its retry hint (None = do not retry)."""
    context.set_trailing_metadata(retry_hint(retry_after_ms))
    await context.abort(code, details)


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
        catalogue: RuleCatalogue | None = None,
        check_rules: bool = True,
        rules_retry_ms: int = 2000,
    ) -> None:
        self.run, self.writer, self.hub = run, writer, hub
        self.estate = EstateService(store, lambda: int(self.clock() * 1000))
        self.max_connections, self.retry_after_ms = max_connections, retry_after_ms
        self.limits, self.settings, self.clock = limits, settings, clock
        self.artefacts, self.fetch_limit = artefacts, fetch_limit or FetchLimit(50)
        self.fetch_retry_after_ms = fetch_retry_after_ms
        #: every published version's rules; checked against when ``check_rules``
        self.catalogue = catalogue or RuleCatalogue()
        self.check_rules, self.rules_retry_ms = check_rules, rules_retry_ms

    async def _device(self, context: grpc.aio.ServicerContext[Any, Any]) -> DeviceRow:
        certs = list(context.auth_context().get("x509_pem_cert") or [])
        if not certs:
            await abort(context, grpc.StatusCode.UNAUTHENTICATED,
                        "a client certificate is required", None)
        device_id, serial = device_id_from_cert_pem(certs[0])
        device = await self.run(self.estate.device, device_id)
        if device is None:
            await abort(context, grpc.StatusCode.UNAUTHENTICATED,
                        f"device {device_id} is not enrolled here; enrol it first", None)
        assert isinstance(device, DeviceRow)
        if device.revoked_at is not None or device.cert_serial != serial:
            await abort(context, grpc.StatusCode.PERMISSION_DENIED,
                        f"device {device_id} or its certificate has been revoked; re-enrol "
                        "it with a new key and token", None)
        return device

    async def Connect(
        self, request_iterator: AsyncIterator[pb.AgentMessage],
        context: grpc.aio.ServicerContext[pb.AgentMessage, pb.CollectorMessage],
    ) -> AsyncIterator[pb.CollectorMessage]:
        device = await self._device(context)
        if len(self.hub.connections) >= self.max_connections and \
                device.id not in self.hub.connections:
            await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "collector is at server.max_connections; retry later",
                        self.retry_after_ms)
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
        if conn.ending is not None:
            e = conn.ending
            await abort(context, getattr(grpc.StatusCode, e.code), e.details, e.retry_after_ms)

    async def FetchModel(
        self, request: pb.ModelRequest | Malformed,
        context: grpc.aio.ServicerContext[pb.ModelRequest, pb.ModelChunk],
    ) -> AsyncIterator[pb.ModelChunk]:
        """Stream one file of a published artefact from ``offset``; bounded concurrency."""
        device = await self._device(context)
        if not isinstance(request, pb.ModelRequest):
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(request), None)
        assert isinstance(request, pb.ModelRequest)
        path = self.artefacts.file(request.digest, request.file) if self.artefacts else None
        if path is None:
            await abort(context, grpc.StatusCode.NOT_FOUND,
                        f"model {safe_text(bound(request.digest, 64))} file "
                        f"{safe_text(bound(request.file, 128))!r} was not published by "
                        "this collector", None)
        assert path is not None
        if not self.fetch_limit.try_acquire():
            await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"{self.fetch_limit.limit} model downloads already running "
                        f"(server.model_fetch_concurrency); retry after "
                        f"{self.fetch_retry_after_ms} ms", self.fetch_retry_after_ms)
        offset = sent = 0
        try:
            size = path.stat().st_size
            offset = int(request.offset)
            if offset > size:
                await abort(context, grpc.StatusCode.OUT_OF_RANGE,
                            f"offset {offset} is past the end of {request.file} "
                            f"({size} bytes); start again from 0", 0)
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

    async def _read(self, requests: AsyncIterator[Any], conn: Connection) -> None:
        try:
            async for msg in requests:
                if isinstance(msg, Salvaged):
                    log.info("device %s sent %d undecodable captures", conn.device.id,
                             len(msg.broken))
                    self._captures(msg.captures, conn, msg.broken)
                    continue
                if isinstance(msg, Malformed):
                    log.info("device %s sent a malformed message: %s", conn.device.id,
                             safe_text(str(msg)))
                    conn.end("INVALID_ARGUMENT", f"{msg}; the stream is closed: do not resend "
                             "that message", self.retry_after_ms)
                    break
                kind = msg.WhichOneof("body")
                if kind == "captures":
                    self._captures(list(enumerate(msg.captures.captures)), conn)
                elif kind == "heartbeat":
                    await self._heartbeat(msg.heartbeat, conn)
                elif kind == "rules_ack":
                    self._rules_ack(msg.rules_ack, conn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream broke; the agent reconnects
            log.debug("stream from %s ended: %s", conn.device.id, exc)
        finally:
            conn.close()

    def _rules_ack(self, a: pb.RulesAck, conn: Connection) -> None:
        if a.version not in self.catalogue.versions:
            log.info("device %s acknowledged rules version %d, which this collector never "
                     "published; not recorded", conn.device.id, min(a.version, 2**63 - 1))
            return
        self.writer.submit_rules_ack(RulesAckRow(
            conn.device.id, _i64(a.version), a.applied, bound(a.error, 500), self._now()))
        if a.applied:
            conn.rules_version = a.version

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def _captures(self, batch: list[tuple[int, pb.Capture]], conn: Connection,
                  broken: list[tuple[int, str]] | None = None) -> None:
        """Validate one CaptureBatch; its Ack (after the commit) names every refusal by id
        and position, with a retry hint."""
        now = self._now()
        catalogue = self.catalogue if self.check_rules else None
        work = Work([], [], conn.send, conn.end_unavailable)
        hints: list[tuple[int, int]] = []  # (position, retry_after_ms), as work.rejected
        for index, cid in broken or ():
            work.rejected.append((cid, "undecodable"))
            hints.append((index, 0))
        for index, c in batch:
            r = to_new_capture(c, conn.device, now, self.limits, catalogue)
            if isinstance(r, str):
                work.rejected.append((c.id if _ID.match(c.id) else "", r))
                hints.append((index, self.catalogue.retry_after(r, c, self.rules_retry_ms)))
            else:
                work.captures.append(r)
        positions = {c.id: index for index, c in batch}

        def reply(msg: pb.CollectorMessage) -> None:
            if msg.WhichOneof("body") == "ack":
                for n, rej in enumerate(msg.ack.rejected):
                    if n < len(hints):
                        rej.index, rej.retry_after_ms = hints[n]
                    else:  # id_conflict, found at the commit
                        rej.index = positions.get(rej.id, 0)
            conn.send(msg)

        work.reply = reply
        if not self.writer.submit(work):
            self.writer.refuse(work, "collector overloaded")

    async def _heartbeat(self, hb: pb.Heartbeat, conn: Connection) -> None:
        self.writer.submit_heartbeat(Heartbeat(
            conn.device.id, self._now(), safe_text(bound(hb.agent_version, 64)),
            _i64(hb.rules_version), _i64(hb.spool_depth), _i64(hb.spool_bytes),
            {safe_text(bound(k, 64)): _i64(v) for k, v in list(hb.drops.items())[:50]},
            bound(hb.os_user, 256), safe_text(bound(hb.hostname, 255)),
            safe_text(bound(hb.os, 64)),
            tuple(SourceHealth(safe_text(bound(x.name, 32)), safe_text(bound(x.state, 32)),
                               _i64(x.last_event_unix_ms), _i64(x.restarts),
                               safe_text(bound(x.error, 300))) for x in hb.sources[:10])))
        conn.rules_version = max(conn.rules_version, hb.rules_version) \
            if conn.rules_version >= 0 else hb.rules_version
        if conn.configured_for != hb.os_user:
            conn.configured_for = hb.os_user
            band: str | None = None
            if hb.os_user:
                band = await self.run(self.estate.pupil_age_band, conn.device.site_id,
                                      hb.os_user)
            s = self.settings
            conn.send(pb.CollectorMessage(config=pb.AgentConfig(
                heartbeat_seconds=s.heartbeat_seconds, context_chars=s.context_chars,
                screenshot_min_severity=s.screenshot_min_severity,
                excluded_windows=s.excluded_windows, excluded_processes=s.excluded_processes,
                group=band or conn.device.age_band)))
        self.hub.maybe_send_rules(conn)
