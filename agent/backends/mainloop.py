"""Run the agent's asyncio main in a worker while the main thread turns an OS run loop.

macOS delivers ``NSWorkspace`` notifications, and updates ``frontmostApplication``, only
through the *main* thread's run loop, and AppKit/TIS calls belong on the main thread. So on
macOS the main thread runs :class:`MainLoop` (Cocoa) and asyncio runs in a worker thread;
elsewhere asyncio keeps the main thread. Signals are caught on the main thread and forwarded
to the asyncio stop event. The logic here is OS-neutral and tested with a fake loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

__all__ = ["MainLoop", "run_agent", "run_with_main_loop"]

AgentMain = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class MainLoop(Protocol):
    def run(self, until: threading.Event) -> None:
        """Turn the OS run loop on this (the main) thread until *until* is set; return to
        Python at least every half second (so signal handlers run)."""

    def running(self) -> bool: ...


def run_with_main_loop(body: Callable[[], None], loop: MainLoop) -> None:
    """Run *body* on a worker thread while *loop* runs here; re-raise what *body* raised."""
    done = threading.Event()
    failure: list[BaseException] = []

    def worker() -> None:
        try:
            body()
        except BaseException as exc:  # re-raised on the main thread below
            failure.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=worker, name="agent-asyncio")
    thread.start()
    try:
        loop.run(done)
    finally:
        done.wait()
        thread.join()
    if failure:
        raise failure[0]


def run_agent(main: AgentMain, loop: MainLoop | None = None,
              signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
    """``asyncio.run(main(stop))``, stopping on SIGINT/SIGTERM; with *loop*, asyncio runs in a
    worker and *loop* on this thread."""
    holder: dict[str, Any] = {}
    ready = threading.Event()

    async def go() -> None:
        stop = asyncio.Event()
        holder["loop"], holder["stop"] = asyncio.get_running_loop(), stop
        ready.set()
        if holder.get("pending"):
            stop.set()  # a signal arrived before the event loop existed
        if loop is None:
            for sig in signals:
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    holder["loop"].add_signal_handler(sig, stop.set)
        await main(stop)

    if loop is None:
        asyncio.run(go())
        return

    def request_stop(*_: object) -> None:
        if ready.is_set():
            holder["loop"].call_soon_threadsafe(holder["stop"].set)
        else:
            holder["pending"] = True

    previous = {sig: signal.signal(sig, request_stop) for sig in signals}
    try:
        run_with_main_loop(lambda: asyncio.run(go()), loop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
