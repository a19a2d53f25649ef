"""Helpers shared by the hardening tests (real collector, real clients, condition polling)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from tests.support.agent_client import client, enrolled, refusal

__all__ = ["RULES_V1", "RULES_V2", "Proxy", "client", "enrolled", "poll", "refusal",
           "run_async"]

T = TypeVar("T")
RULES_V1 = Path(__file__).resolve().parents[1] / "collector" / "rules_v1"
RULES_V2 = Path(__file__).resolve().parents[1] / "collector" / "rules_v2"


async def poll(cond: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Await until ``cond()`` is truthy (returns it); never a bare sleep as synchronisation."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = cond()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


class Proxy:
    """A loopback TCP proxy in its own thread, in front of a real server.

    ``mode``: "forward" (pass bytes both ways), "refuse" (new connections are closed at once:
    a network drop), "blackhole" (connections stay open but nothing is forwarded any more:
    a half-open connection, as when a NAT or Wi-Fi access point silently loses state).
    Every byte from the client is kept in ``upstream_bytes`` (for privacy checks).
    """

    def __init__(self, target: str) -> None:
        import threading

        self.target = target
        self.mode = "forward"
        self.upstream_bytes = bytearray()
        self.accepted = 0
        self.blackholed_upto = 0
        #: upstream byte counts at which to reset the connection (a drop mid-stream)
        self.cut_at: list[int] = []
        self.cuts = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="test-proxy")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> Proxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        async def _close() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(_close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def drop_existing(self) -> None:
        """Reset every open connection now (a network drop); new ones are forwarded."""
        def _drop() -> None:
            for w in list(self._writers):
                w.transport.abort()
        self._loop.call_soon_threadsafe(_drop)

    def blackhole_existing(self) -> None:
        """Every connection open now goes silent (half-open); new ones are forwarded."""
        self.blackholed_upto = self.accepted

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        idx = self.accepted
        if self.mode == "refuse":
            writer.transport.abort()
            return
        host, _, port = self.target.rpartition(":")
        try:
            up_r, up_w = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_w))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       record: bool) -> None:
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    if self.mode == "blackhole" or idx <= self.blackholed_upto:
                        continue  # swallow: the peer never hears of it, nothing is closed
                    if record:
                        self.upstream_bytes.extend(data)
                    dst.write(data)
                    await dst.drain()
                    if record and self.cut_at and len(self.upstream_bytes) >= self.cut_at[0]:
                        self.cut_at.pop(0)
                        self.cuts += 1
                        writer.transport.abort()
                        up_w.transport.abort()
                        break
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                if self.mode != "blackhole" and idx > self.blackholed_upto:
                    dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_w, True), pipe(up_r, writer, False))
        finally:
            for w in (writer, up_w):
                w.transport.abort()
                self._writers.discard(w)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, in a fresh thread with its own
    event loop (safe whatever loop the calling thread has)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as ex:
        return ex.submit(asyncio.run, coro).result()
