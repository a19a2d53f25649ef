"""The keyboard-hook liveness watch against a simulated OS hook that does what Windows and
macOS document: a callback slower than the timeout gets the hook removed (Windows:
``LowLevelHooksTimeout``, "silently removed"; macOS: ``kCGEventTapDisabledByTimeout``) while
the listener thread stays alive. The real supervisor (``agent.health``) does the restart."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from agent.backends.hookwatch import (
    WINDOWS_DEFAULT_TIMEOUT,
    HookLost,
    HookWatch,
    WatchedKeySource,
    windows_hook_timeout,
)
from agent.health import SourceHealth, Supervisor
from agent.sources import KeyEvent


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SimulatedOSHook:
    """A KeySource whose "OS" removes the hook after a callback slower than *timeout*.
    Keys typed go to every installed hook; a removed hook gets nothing, and nobody is told."""

    def __init__(self, clock: FakeClock, timeout: float) -> None:
        self.clock, self.timeout = clock, timeout
        self.installed: list[Callable[[KeyEvent], None]] = []
        self.installs = 0
        self.changed = threading.Condition()

    def run(self, on_key: Callable[[KeyEvent], None], stop: threading.Event,
            ready: Callable[[], None]) -> None:
        with self.changed:
            self.installed.append(on_key)
            self.installs += 1
            self.changed.notify_all()
        ready()
        stop.wait()  # like pynput: the thread lives on whether or not the hook does
        with self.changed:
            if on_key in self.installed:
                self.installed.remove(on_key)

    def type(self, char: str) -> None:
        with self.changed:
            hooks = list(self.installed)
        for hook in hooks:
            started = self.clock()
            hook(KeyEvent("char", char))
            if self.clock() - started >= self.timeout:
                with self.changed:
                    self.installed.remove(hook)  # silently removed

    def wait_installs(self, n: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.installs >= n and self.installed, 10)


def test_registry_timeout_is_read_and_capped_at_the_documented_maximum() -> None:
    assert windows_hook_timeout(lambda: "300") == 0.3     # REG_SZ, as Windows stores it
    assert windows_hook_timeout(lambda: 5000) == 1.0      # Windows 10 1709+: at most 1000 ms
    assert windows_hook_timeout(lambda: "") == WINDOWS_DEFAULT_TIMEOUT

    def absent() -> object:
        raise FileNotFoundError(2, "The system cannot find the file specified")

    assert windows_hook_timeout(absent) == WINDOWS_DEFAULT_TIMEOUT


def test_a_slow_callback_gets_the_hook_reinstalled_and_reported() -> None:
    clock = FakeClock()
    os_hook = SimulatedOSHook(clock, timeout=0.3)
    got: list[str] = []
    slow = {"a"}

    def on_key(ev: KeyEvent) -> None:  # the monitor's on_key: slow once (a PNG encode)
        if ev.char in slow:
            clock.now += 0.5
            slow.discard(ev.char)
        got.append(ev.char)

    source = WatchedKeySource(os_hook, 0.3, check_interval=0.01, clock=clock)
    stop, health = threading.Event(), SourceHealth("keys")
    sup = Supervisor("keys", lambda: source.run(on_key, stop, lambda: None), stop, health,
                     initial=0.01, maximum=0.02).start()
    try:
        os_hook.wait_installs(1)
        os_hook.type("a")  # 500 ms in the callback: Windows removes the hook
        os_hook.type("b")  # lost: the OS no longer calls us (what the watch is for)
        os_hook.wait_installs(2)  # the watch noticed, the supervisor reinstalled it
        os_hook.type("c")
    finally:
        stop.set()
        sup.thread.join(10)
    assert got == ["a", "c"]
    assert health.restarts == 1
    assert "HookLost" in health.error and "past the OS hook timeout (300 ms)" in health.error


def test_fast_callbacks_never_restart_the_hook() -> None:
    clock = FakeClock()
    watch = HookWatch(0.3, clock=clock)
    for _ in range(1000):
        watch.timed(lambda ev: None)(KeyEvent("char", "x"))
    assert watch.dead() == "" and watch.keys == 1000


def test_keys_the_os_saw_but_the_hook_did_not_mean_the_hook_is_gone() -> None:
    clock, seen_by_os = FakeClock(), [0]
    watch = HookWatch(0.3, clock=clock, reference=lambda: seen_by_os[0], silence=10)
    watch.timed(lambda ev: None)(KeyEvent("char", "x"))
    seen_by_os[0] += 50  # Raw Input (say) saw 50 presses since
    assert watch.dead() == ""  # but not for long enough yet
    clock.now += 11
    assert "50 key presses" in watch.dead()


def test_an_inner_failure_reaches_the_supervisor() -> None:
    class Broken:
        def run(self, on_key: Callable[[KeyEvent], None], stop: threading.Event,
                ready: Callable[[], None]) -> None:
            raise OSError("SetWindowsHookEx failed")

    with pytest.raises(OSError, match="SetWindowsHookEx"):
        WatchedKeySource(Broken(), 0.3, check_interval=0.01).run(
            lambda ev: None, threading.Event(), lambda: None)
    assert issubclass(HookLost, RuntimeError)
