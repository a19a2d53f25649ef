"""Connected agents and rule fan-out.

The technician CLI (``vigil-collector rules publish``) is a separate process: it only writes a
new active row to ``rule_versions``. The running server notices it by polling the active
version every ``server.rules_poll_seconds`` (a cheap primary-key read) and pushes the bundle to
every connected agent whose heartbeat reported an older version. A bundle holds the rules for
every group, so every connected agent is "affected". Agents that connect later get the bundle
after their first heartbeat.
"""

from __future__ import annotations

import asyncio
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
    ) -> None:
        """Poll the active version number; on a change, load the bundle and fan it out.
        Also close the streams of devices revoked since the last poll."""
        watermark = int(clock() * 1000) - 60_000
        while True:
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
            await asyncio.sleep(interval)
