"""Connected agents and rule fan-out.

The technician CLI (``vigil-collector rules publish``) is a separate process: it only writes a
new active row to ``rule_versions``. Each running server process pushes the bundle to the
agents connected *to it* whose heartbeat reported an older version; several processes behind
a load balancer each serve their own streams and share nothing but the store. A bundle holds
the rules for every group, so every connected agent is "affected". Agents that connect later
get the bundle after their first heartbeat.

A process learns of a publish in one of two ways, both ending in the same re-read of the
store (the store is the truth; a wake-up only says "look now"):

* on PostgreSQL, a ``NOTIFY vigil_rules`` sets the ``wake`` event given to :meth:`Hub.watch`
  (collector/server.py wires it to the store's LISTEN connection), so the push starts as soon
  as the publish commits;
* on every backend, a poll of the active version number every ``server.rules_poll_seconds``
  (a cheap primary-key read): the only way on SQLite, and on PostgreSQL the safety net for a
  notification lost while the LISTEN connection was down.

The same loop closes the streams of devices revoked since its last look; only the process
that holds a device's stream has it in :attr:`Hub.connections`, so only that one closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from collector.store.base import DeviceRow, RuleVersion
from proto import vigil_pb2 as pb

__all__ = ["REPLACED_RETRY_MS", "Connection", "Ending", "Hub"]

log = logging.getLogger(__name__)


#: Retry hint of a stream ended because a newer stream of the same device replaced it: long
#: enough that two processes sharing one identity do not take turns every second.
REPLACED_RETRY_MS = 30_000


@dataclass(frozen=True)
class Ending:
    """How a stream ends (docs/wire.md "Status codes"): a gRPC status code name, details,
    and the ``retry-after-ms`` trailer (None = "never")."""

    code: str
    details: str
    retry_after_ms: int | None


@dataclass(eq=False)
class Connection:
    """One live Connect stream."""

    device: DeviceRow
    out: asyncio.Queue[pb.CollectorMessage | None] = field(default_factory=asyncio.Queue)
    rules_version: int = -1          # from the latest heartbeat; -1 = none yet
    sent_rules_version: int = 0      # last bundle pushed on this stream
    configured_for: str | None = None  # os_user the last AgentConfig was computed for
    ending: Ending | None = None     # set when the stream must end with a non-OK status

    def send(self, msg: pb.CollectorMessage) -> None:
        self.out.put_nowait(msg)

    def close(self) -> None:
        self.out.put_nowait(None)

    def end(self, code: str, details: str, retry_after_ms: int | None) -> None:
        """End the stream with ``code`` (the first reason given wins)."""
        if self.ending is None:
            self.ending = Ending(code, details, retry_after_ms)
            self.close()

    def end_unavailable(self, reason: str, retry_after_ms: int) -> None:
        """End the stream with UNAVAILABLE + retry-after-ms: the agent pauses, reconnects and
        resends everything it had in flight."""
        self.end("UNAVAILABLE", f"{reason}: nothing unacknowledged was stored; retry after "
                 f"{retry_after_ms} ms", retry_after_ms)


class Hub:
    def __init__(self) -> None:
        self.connections: dict[str, Connection] = {}
        self.active: RuleVersion | None = None
        self.pushed = 0
        self._rules_msg: tuple[int, pb.CollectorMessage] | None = None

    def register(self, conn: Connection) -> None:
        old = self.connections.get(conn.device.id)
        if old is not None:  # the same device reconnected: the newer stream wins
            old.end("ABORTED", "replaced by a newer stream of the same device; if this "
                    "agent did not reconnect, another process is using its identity",
                    REPLACED_RETRY_MS)
        self.connections[conn.device.id] = conn

    def unregister(self, conn: Connection) -> None:
        if self.connections.get(conn.device.id) is conn:
            del self.connections[conn.device.id]

    def maybe_send_rules(self, conn: Connection) -> bool:
        """Push the active bundle if this agent reported an older one and has not had it."""
        rv = self.active
        if rv is None or conn.rules_version < 0:
            return False
        if conn.rules_version >= rv.version or conn.sent_rules_version >= rv.version:
            return False
        conn.sent_rules_version = rv.version
        if self._rules_msg is None or self._rules_msg[0] != rv.version:
            # One message per version, shared by every stream: building a ~32 KB message per
            # connection was a sixth of the event loop's time in a 10,000-agent fan-out.
            self._rules_msg = (rv.version, pb.CollectorMessage(
                rules=pb.RuleBundle(version=rv.version, bundle=rv.bundle)))
        conn.send(self._rules_msg[1])
        self.pushed += 1
        return True

    def close_devices(self, device_ids: list[str]) -> int:
        """End the live streams of these (revoked) devices; their reconnect is refused."""
        n = 0
        for device_id in device_ids:
            conn = self.connections.get(device_id)
            if conn is not None:
                conn.end("PERMISSION_DENIED", f"device {device_id} has been revoked; "
                         "re-enrol it with a new key and token", None)
                n += 1
        return n

    def set_active(self, rv: RuleVersion | None) -> int:
        """Adopt a newly active version and push it; returns how many agents got it."""
        self.active = rv
        return sum(self.maybe_send_rules(c) for c in list(self.connections.values()))

    async def watch(
        self,
        active_number: Callable[[], Awaitable[int]],
        active_version: Callable[[], Awaitable[RuleVersion | None]],
        interval: float,
        revoked_since: Callable[[int], Awaitable[list[str]]] | None = None,
        clock: Callable[[], float] = time.time,
        wake: asyncio.Event | None = None,
    ) -> None:
        """Read the active version number every ``interval`` seconds, or at once when
        ``wake`` is set; on a change, load the bundle and fan it out. Also close the streams
        of devices revoked since the last look."""
        watermark = int(clock() * 1000) - 60_000
        while True:
            if wake is not None:
                wake.clear()  # cleared before the reads: a publish during them wakes us again
            if revoked_since is not None:
                try:
                    now = int(clock() * 1000)
                    closed = self.close_devices(await revoked_since(watermark))
                    watermark = now - 5_000  # overlap: a revocation is never missed
                    if closed:
                        log.info("closed %d streams of revoked devices", closed)
                except Exception:
                    log.exception("could not read revoked devices")
            try:
                number = await active_number()
                current = self.active.version if self.active is not None else 0
                rv = await active_version() if number and number != current else None
                if rv is not None:
                    n = self.set_active(rv)
                    log.info("rules version %d active; pushed to %d agents", rv.version, n)
            except Exception:
                log.exception("could not read the active rules version")
            if wake is None:
                await asyncio.sleep(interval)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), interval)
