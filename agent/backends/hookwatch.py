r"""Keyboard-hook liveness: notice that the OS dropped the input hook, reinstall it, say so.

Windows removes a ``WH_KEYBOARD_LL`` hook whose procedure does not return within
``LowLevelHooksTimeout`` (``HKCU\Control Panel\Desktop``, milliseconds; at most 1000 ms from
Windows 10 1709): "the hook is silently removed without being called. There is no way for the
application to know whether the hook is removed" (Microsoft, *LowLevelKeyboardProc*). pynput
runs its callbacks on the hook thread's message loop, so a slow callback delays the next hook
call past the timeout. macOS disables an event tap whose callback is slow
(``kCGEventTapDisabledByTimeout``) and pynput never calls ``CGEventTapEnable`` again. In both
cases pynput's listener thread stays alive: ``listener.is_alive()`` cannot tell.

What the agent *can* know is how long its own callback took. :class:`WatchedKeySource` wraps
any :class:`~agent.sources.KeySource`: it times every ``on_key`` call and, when one ran past
the OS timeout, presumes the hook gone and raises :class:`HookLost`. The monitor's supervisor
(``agent.health``) then restarts the source, which installs a fresh hook, and the restart and
its reason appear in ``status`` and the heartbeat. An optional *reference* counter (key
presses the OS saw through another channel) also catches removals with other causes.

It plugs in at ``agent.platform`` (the Windows and macOS key sources are wrapped there), so
``agent/sources/keyboard.py`` and ``agent/monitor.py`` need no change; once ``on_key`` only
enqueues, the watch should never fire, and if it does, monitoring resumes within a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..sources import KeyEvent, KeySource

__all__ = ["MACOS_TAP_TIMEOUT", "WINDOWS_DEFAULT_TIMEOUT", "HookLost", "HookWatch",
           "WatchedKeySource", "windows_hook_timeout"]

log = logging.getLogger(__name__)

#: Used when the registry has no LowLevelHooksTimeout. Microsoft's page gives no default,
#: so this is deliberately low: a needless reinstall costs a few milliseconds of keys.
WINDOWS_DEFAULT_TIMEOUT = 0.2
#: Apple does not document the event-tap timeout; assume a conservative quarter second.
MACOS_TAP_TIMEOUT = 0.25


class HookLost(RuntimeError):
    """The OS input hook must be presumed removed; the source is restarted."""


def windows_hook_timeout(read: Callable[[], object] | None = None) -> float:
    r"""LowLevelHooksTimeout in seconds (capped at 1 s, the documented maximum)."""
    try:
        raw = (read or _read_low_level_hooks_timeout)()
        ms = int(str(raw).strip(), 0) if not isinstance(raw, int) else raw
    except (ImportError, OSError, ValueError, TypeError):
        return WINDOWS_DEFAULT_TIMEOUT
    if ms <= 0:
        return WINDOWS_DEFAULT_TIMEOUT
    return min(ms, 1000) / 1000


def _read_low_level_hooks_timeout() -> object:
    import importlib

    winreg: Any = importlib.import_module("winreg")  # Windows only; typeshed hides it elsewhere
    with winreg.OpenKey(winreg.HKEY_CURRENT_USER, r"Control Panel\Desktop") as key:
        value, _kind = winreg.QueryValueEx(key, "LowLevelHooksTimeout")  # REG_SZ or DWORD
        return value


class HookWatch:
    """Times the key callback; says why the hook must be presumed dead, or ""."""

    def __init__(self, timeout: float, *, clock: Callable[[], float] = time.monotonic,
                 reference: Callable[[], int] | None = None, silence: float = 10.0,
                 min_missed: int = 20) -> None:
        self.timeout, self.clock, self.reference = timeout, clock, reference
        self.silence, self.min_missed = silence, min_missed
        self.keys = 0
        self.worst = 0.0
        self.slow: float | None = None  # the first callback duration past the timeout
        self._last_key = clock()
        self._ref_at_last_key = reference() if reference is not None else 0

    def timed(self, on_key: Callable[[KeyEvent], None]) -> Callable[[KeyEvent], None]:
        def wrapper(event: KeyEvent) -> None:
            started = self.clock()
            try:
                on_key(event)
            finally:
                took = self.clock() - started
                self.keys += 1
                self._last_key = started
                if self.reference is not None:
                    self._ref_at_last_key = self.reference()
                self.worst = max(self.worst, took)
                if took >= self.timeout and self.slow is None:
                    self.slow = took
        return wrapper

    def dead(self) -> str:
        if self.slow is not None:
            return (f"a key callback took {self.slow * 1000:.0f} ms, past the OS hook timeout "
                    f"({self.timeout * 1000:.0f} ms): the OS removes such a hook without "
                    "telling anyone; reinstalling it")
        if self.reference is not None:
            missed = self.reference() - self._ref_at_last_key
            if missed >= self.min_missed and self.clock() - self._last_key >= self.silence:
                return (f"the OS saw {missed} key presses that the keyboard hook did not: "
                        "the hook was removed; reinstalling it")
        return ""


class WatchedKeySource:
    """Runs *inner* on a thread of its own and restarts it (by raising) when its hook dies."""

    def __init__(self, inner: KeySource, timeout: float | Callable[[], float], *,
                 check_interval: float = 0.5,
                 reference: Callable[[], int] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inner, self.timeout, self.check_interval = inner, timeout, check_interval
        self.reference, self.clock = reference, clock
        self.watch: HookWatch | None = None

    def run(self, on_key: Callable[[KeyEvent], None], stop: threading.Event,
            ready: Callable[[], None]) -> None:
        timeout = self.timeout() if callable(self.timeout) else self.timeout
        watch = self.watch = HookWatch(timeout, clock=self.clock, reference=self.reference)
        inner_stop, done = threading.Event(), threading.Event()
        failure: list[BaseException] = []

        def target() -> None:
            try:
                self.inner.run(watch.timed(on_key), inner_stop, ready)
            except BaseException as exc:  # handed to the supervisor below
                failure.append(exc)
            finally:
                done.set()

        thread = threading.Thread(target=target, name="keys-hook", daemon=True)
        thread.start()
        try:
            while not done.wait(self.check_interval):
                if stop.is_set():
                    return
                reason = watch.dead()
                if reason:
                    log.error("keyboard hook lost: %s", reason)
                    raise HookLost(reason)
        finally:
            inner_stop.set()
            thread.join(timeout=5)
        if failure:
            raise failure[0]
