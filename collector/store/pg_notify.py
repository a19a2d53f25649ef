"""LISTEN/NOTIFY for collectors sharing one PostgreSQL database: await a rule publish or a
queue change instead of polling.

The store sends (inside the writing transaction, so listeners hear it only after commit):

* ``vigil_rules``, payload the new active version (``"7"``): from ``add_rule_version``;
* ``vigil_queue``, payload the changed queue item ids (``"12,13"``; ``""`` when too many to
  list): from ingest and every status change.

A :class:`Listener` holds one dedicated asyncio connection that has LISTENed on its
channels, and a reader task that hands each notification to every waiter::

    listener = store.listener()              # both channels
    await listener.start()
    version = await listener.wait_for("vigil_rules", timeout=30)   # payload, or None on timeout
    listener.subscribe("vigil_queue", on_queue)   # or: a callback per notification
    await listener.close()

If the connection drops, the reader reconnects with back-off (and jitter) and then delivers
``""`` on every channel: "you may have missed notifications, re-read the state". The
reader's state is visible (``connected``, ``reconnects``, ``last_error``); it never dies
quietly. Notifications only say *that* something changed: the store stays the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["QUEUE_CHANNEL", "RULES_CHANNEL", "Listener"]

log = logging.getLogger(__name__)

RULES_CHANNEL = "vigil_rules"
QUEUE_CHANNEL = "vigil_queue"


class Listener:
    """Waits on NOTIFY for a fixed set of channels, on its own connection."""

    def __init__(self, url: str, channels: Sequence[str],
                 settings: dict[str, str] | None = None,
                 backoff_s: tuple[float, float] = (0.2, 10.0)) -> None:
        if not channels:
            raise ValueError("listen on at least one channel")
        self.url = url
        self.channels = tuple(dict.fromkeys(channels))
        self.settings = settings or {}
        self.backoff_s = backoff_s
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.last_error: str | None = None
        self._waiters: dict[str, list[asyncio.Future[str]]] = {c: [] for c in self.channels}
        self._callbacks: dict[str, list[Callable[[str], Any]]] = {c: [] for c in self.channels}
        self._task: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._conn: Any = None

    async def start(self, timeout: float = 30.0) -> None:
        """Connect and LISTEN; returns once notifications will be received."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="vigil-pg-listener")
        waiting = asyncio.create_task(self.connected.wait())
        done, _ = await asyncio.wait({waiting, self._task}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if waiting not in done:
            waiting.cancel()
            if self._task in done:
                self._task.result()  # raises what stopped the reader
            raise TimeoutError(f"LISTEN not ready after {timeout} s: {self.last_error}")

    async def wait_for(self, channel: str, timeout: float | None = None) -> str | None:
        """The payload of the next notification on ``channel`` (``""`` after a reconnect),
        or None when ``timeout`` seconds pass first."""
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._channel(channel).append(fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None
        finally:
            if fut in self._waiters[channel]:
                self._waiters[channel].remove(fut)

    def subscribe(self, channel: str, callback: Callable[[str], Any]) -> None:
        """Call ``callback(payload)`` for every notification on ``channel`` (in the event
        loop; a coroutine function's coroutine is scheduled as a task)."""
        self._channel(channel)
        self._callbacks[channel].append(callback)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_conn()

    # -- internals -------------------------------------------------------------------------
    def _channel(self, channel: str) -> list[asyncio.Future[str]]:
        if channel not in self._waiters:
            raise ValueError(f"not listening on {channel!r} (channels: {self.channels})")
        return self._waiters[channel]

    def _deliver(self, channel: str, payload: str) -> None:
        waiters, self._waiters[channel] = self._waiters.get(channel, []), []
        for fut in waiters:
            if not fut.done():
                fut.set_result(payload)
        for cb in self._callbacks.get(channel, ()):
            out = cb(payload)
            if asyncio.iscoroutine(out):
                task = asyncio.ensure_future(out)
                self._side_tasks.add(task)
                task.add_done_callback(self._side_tasks.discard)

    async def _connect(self) -> Any:
        import psycopg
        from psycopg import sql

        kwargs: dict[str, Any] = {"autocommit": True}
        if self.settings:
            kwargs["options"] = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        conn = await psycopg.AsyncConnection.connect(self.url, **kwargs)
        for ch in self.channels:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(ch)))
        return conn

    async def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _run(self) -> None:
        import psycopg

        delay = self.backoff_s[0]
        first = True
        while True:
            try:
                self._conn = await self._connect()
                self.connected.set()
                self.last_error = None
                delay = self.backoff_s[0]
                if not first:
                    for ch in self.channels:  # anything sent while we were away is lost
                        self._deliver(ch, "")
                first = False
                async for n in self._conn.notifies():
                    self._deliver(n.channel, n.payload)
            except psycopg.OperationalError as exc:
                self.connected.clear()
                self.last_error = str(exc)
                self.reconnects += 1
                log.warning("LISTEN connection lost (%s); reconnecting in %.1f s", exc, delay)
                await self._close_conn()
                await asyncio.sleep(delay * (0.5 + random.random()))  # back-off with jitter
                delay = min(delay * 2, self.backoff_s[1])
