"""Run the agent's asyncio main in a worker while the main thread turns an OS run loop.

macOS delivers ``NSWorkspace`` notifications, and updates ``frontmostApplication``, only
through the *main* thread's run loop, and AppKit/TIS calls belong on the main thread. So on
macOS the main thread runs :class:`MainLoop` (Cocoa) and asyncio runs in a worker thread;
elsewhere asyncio keeps the main thread. Signals are caught on the main thread and forwarded
to the asyncio stop event. The logic here is OS-neutral and tested with a fake loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

__all__ = ["MainLoop", "MainThreadCalls", "run_agent", "run_with_main_loop"]

T = TypeVar("T")

AgentMain = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class MainLoop(Protocol):
    def run(self, until: threading.Event) -> None:
        """Turn the OS run loop on this (the main) thread until *until* is set; return to
        Python at least every half second (so signal handlers run)."""

    def running(self) -> bool: ...


class MainThreadCalls:
    """Work that must run on the main thread (macOS: TIS/TSM keyboard-layout calls, which
    macOS 14+ asserts are on the main queue and otherwise kills the process). Any thread
    :meth:`call` queues work; the main loop runs it (:meth:`drain`) between run-loop turns."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]]
        self._queue = queue.SimpleQueue()
        self.draining = False  # set by the main loop while it runs

    def call(self, fn: Callable[[], T], timeout: float = 5.0) -> T:
        """Run *fn* on the main thread and return its result (raise what it raised);
        TimeoutError when no main loop runs it within *timeout* seconds."""
        if threading.current_thread() is threading.main_thread():
            return fn()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((fn, future))
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"the main thread did not run {getattr(fn, '__name__', fn)!r} "
                               f"within {timeout:.1f} s (is its run loop turning?)") from None

    def drain(self) -> int:
        """(Main thread.) Run every queued call; return how many ran."""
        ran = 0
        while True:
            try:
                fn, future = self._queue.get_nowait()
            except queue.Empty:
                return ran
            if not future.set_running_or_notify_cancel():
                continue  # the caller gave up waiting
            ran += 1
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the calling thread
                future.set_exception(exc)


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
