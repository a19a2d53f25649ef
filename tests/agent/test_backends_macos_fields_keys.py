"""macOS password fields and the keyboard listener's layout calls, against a simulated layer
that behaves as Apple documents it (and as macOS 14+ enforces it). NOT a macOS test.

Simulated: the system-wide accessibility element's focused element has a role and subrole
(``AXSecureTextField`` for ``NSSecureTextField`` and web password inputs); an untrusted
process gets ``kAXErrorAPIDisabled``; ``IsSecureEventInputEnabled`` is true while some
application holds secure input. TIS/TSM calls (``TISCopyCurrentKeyboardInputSource``,
``TISGetInputSourceProperty``) made off the main thread fail the way HIToolbox's
``dispatch_assert_queue`` does (the real process is killed; here the call raises and is
recorded). The listener is shaped like pynput's darwin ``keyboard.Listener``, which the last
test checks against the installed pynput source.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.backends import macos
from agent.backends.mackeys import MacKeySource, main_thread_listener
from agent.backends.mainloop import MainThreadCalls, run_with_main_loop
from agent.config import Config
from agent.platform import select_backends
from agent.sources import FieldInfo, KeyEvent
from agent.sources.a11y_macos import (
    AX_API_DISABLED,
    ROLE_SECURE_INPUT,
    ROLE_SECURE_TEXT_FIELD,
    A11yUnavailable,
    MacFieldSource,
)

AX_SUCCESS, AX_CANNOT_COMPLETE = 0, -25204


# -- password fields -------------------------------------------------------------------------
class SimAx:
    def __init__(self) -> None:
        self.focus: tuple[int, object, str, str] = (AX_SUCCESS, (501, 1), "AXTextField", "")
        self.secure = False
        self.lock = threading.Lock()

    def focused_field(self) -> tuple[int, object, str, str]:
        with self.lock:
            return self.focus

    def secure_input(self) -> bool:
        return self.secure


def _watch(sim: SimAx, steps: list[Callable[[], None]]) -> list[FieldInfo]:
    got: list[FieldInfo] = []
    changed = threading.Condition()
    stop = threading.Event()

    def on_field(info: FieldInfo) -> None:
        with changed:
            got.append(info)
            changed.notify_all()

    t = threading.Thread(target=MacFieldSource(sim, interval=0.01).run,
                         args=(on_field, stop, lambda: None))
    t.start()
    try:
        for n, step in enumerate(steps, start=1):
            with changed:
                assert changed.wait_for(lambda n=n: len(got) >= n, 5), got  # type: ignore[misc]
            step()
        with changed:
            assert changed.wait_for(lambda: len(got) > len(steps), 5), got
    finally:
        stop.set()
        t.join(5)
    return got


def test_a_focused_secure_text_field_is_a_password_field() -> None:
    sim = SimAx()

    def to_password() -> None:
        sim.focus = (AX_SUCCESS, (501, 2), "AXTextField", "AXSecureTextField")

    def to_next_field() -> None:
        sim.focus = (AX_SUCCESS, (501, 3), "AXTextField", "")

    got = _watch(sim, [to_password, to_next_field])
    assert got[:3] == [FieldInfo(password=False, known=True),
                       FieldInfo(password=True, known=True, role=ROLE_SECURE_TEXT_FIELD),
                       FieldInfo(password=False, known=True)]


def test_secure_keyboard_entry_counts_as_a_password_field() -> None:
    sim = SimAx()

    def secure_on() -> None:
        sim.secure = True  # e.g. a sign-in sheet took secure input; the element is unchanged

    got = _watch(sim, [secure_on])
    assert got[1] == FieldInfo(password=True, known=True, role=ROLE_SECURE_INPUT)


def test_an_application_that_does_not_answer_is_unknown() -> None:
    sim = SimAx()

    def hang() -> None:
        sim.focus = (AX_CANNOT_COMPLETE, None, "", "")

    got = _watch(sim, [hang])
    assert got[1] == FieldInfo(password=False, known=False)


def test_without_accessibility_the_source_fails_so_it_is_reported() -> None:
    sim = SimAx()
    sim.focus = (AX_API_DISABLED, None, "", "")
    with pytest.raises(A11yUnavailable, match="Accessibility is not granted"):
        MacFieldSource(sim, interval=0.01).run(lambda i: None, threading.Event())


def test_platform_gives_macos_its_field_and_main_thread_key_sources() -> None:
    b = select_backends(Config(), "macos")
    assert isinstance(b.fields, MacFieldSource)
    assert isinstance(getattr(b.keys, "inner", None), MacKeySource)


# -- the keyboard listener's TIS/TSM calls -----------------------------------------------------
class SimTIS:
    """HIToolbox's input-source calls: main thread only (macOS 14+ asserts it)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.off_main: list[str] = []

    def _tis(self, name: str) -> None:
        where = threading.current_thread().name
        self.calls.append(f"{name}@{where}")
        if threading.current_thread() is not threading.main_thread():
            self.off_main.append(f"{name}@{where}")
            raise RuntimeError(f"_dispatch_assert_queue_fail in {name} (EXC_BREAKPOINT)")

    @contextlib.contextmanager
    def keycode_context(self) -> Iterator[tuple[int, bytes]]:  # as pynput._util.darwin
        self._tis("TISCopyCurrentKeyboardInputSource")
        self._tis("TISGetInputSourceProperty")
        yield (40, b"uchr-layout-bytes")


def pynput_like_listener(tis: SimTIS, keys: list[Any]) -> type:
    """Shaped as pynput's darwin Listener: AbstractListener (a thread with wait/_mark_ready)
    <- ListenerMixin._run (the event tap's run loop) <- Listener._run (keycode_context)."""

    class AbstractListener(threading.Thread):
        def __init__(self, on_press: Any = None, on_release: Any = None) -> None:
            super().__init__(name="pynput-listener", daemon=True)
            self.on_press, self.on_release = on_press, on_release
            self._ready = threading.Event()
            self._stopped = threading.Event()
            self._context: Any = None
            self.context_seen: Any = None
            self.failure: BaseException | None = None

        def run(self) -> None:  # (the thread's exception is kept, not printed)
            try:
                self._run()
            except BaseException as exc:
                self.failure = exc

        def wait(self) -> None:
            self._ready.wait()

        def _mark_ready(self) -> None:
            self._ready.set()

        def stop(self) -> None:
            self._stopped.set()

    class ListenerMixin(AbstractListener):
        def _run(self) -> None:  # the tap: its callback sees self._context
            self.context_seen = self._context
            self._mark_ready()
            for key in keys:
                self.on_press(key)
                self.on_release(key)
            self._stopped.wait(10)

    class Listener(ListenerMixin):
        def _run(self) -> None:
            with tis.keycode_context() as context:
                self._context = context
                try:
                    super()._run()
                finally:
                    self._context = None

    return Listener


class Key:
    def __init__(self, char: str | None = None, name: str | None = None) -> None:
        self.char, self.name = char, name


class SimMainLoop:
    """The Cocoa main loop's contract (agent.backends.cocoa.Cocoa.run): drain the
    main-thread calls between run-loop turns, on the main thread."""

    def __init__(self) -> None:
        self.calls = MainThreadCalls()
        self._running = False

    def run(self, until: threading.Event) -> None:
        assert threading.current_thread() is threading.main_thread()
        self._running = True
        try:
            while not until.wait(0.005):
                self.calls.drain()
        finally:
            self._running = False

    def running(self) -> bool:
        return self._running


def _type_through(listener: Callable[[], type], loop: SimMainLoop) -> list[KeyEvent]:
    got: list[KeyEvent] = []
    seen = threading.Event()
    stop = threading.Event()

    def on_key(ev: KeyEvent) -> None:
        got.append(ev)
        if len(got) == 2:
            seen.set()

    def body() -> None:
        source = MacKeySource(listener)
        t = threading.Thread(target=source.run, args=(on_key, stop, lambda: None),
                             name="keys-hook")
        t.start()
        seen.wait(5)
        stop.set()
        t.join(5)

    run_with_main_loop(body, loop)
    return got


def test_the_listener_takes_the_keyboard_layout_on_the_main_thread() -> None:
    tis, loop = SimTIS(), SimMainLoop()
    keys = [Key("h"), Key(name="tab")]
    listener = main_thread_listener(pynput_like_listener(tis, keys), loop.calls.call,
                                    tis.keycode_context)
    got = _type_through(lambda: listener, loop)
    assert tis.off_main == [], f"TIS called off the main thread: {tis.off_main}"
    assert tis.calls == ["TISCopyCurrentKeyboardInputSource@MainThread",
                         "TISGetInputSourceProperty@MainThread"]
    assert got == [KeyEvent("char", "h"), KeyEvent("reset")]


def test_pynputs_own_listener_would_call_tis_off_the_main_thread() -> None:
    # What the agent did before: a main-thread run loop alone does not move the call.
    tis, loop = SimTIS(), SimMainLoop()
    plain = pynput_like_listener(tis, [Key("h")])
    errors: list[BaseException] = []

    def body() -> None:
        listener = plain(on_press=lambda k: None)
        listener.start()
        listener.join(5)
        if listener.failure is not None:
            errors.append(listener.failure)

    run_with_main_loop(body, loop)
    assert tis.off_main == ["TISCopyCurrentKeyboardInputSource@pynput-listener"]
    assert errors and "dispatch_assert_queue" in str(errors[0])


def test_no_main_loop_means_the_listener_fails_instead_of_hanging() -> None:
    tis = SimTIS()
    calls = MainThreadCalls()
    listener = main_thread_listener(pynput_like_listener(tis, []),
                                    lambda fn: calls.call(fn, timeout=0.2),
                                    tis.keycode_context)
    errors: list[BaseException] = []
    done = threading.Event()

    def body() -> None:
        try:
            MacKeySource(lambda: listener).run(lambda ev: None, threading.Event())
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    threading.Thread(target=body, daemon=True).start()
    assert done.wait(5), "the key source hung waiting for a listener that never started"
    assert errors and "event tap stopped" in str(errors[0])
    assert tis.off_main == []


def test_the_installed_pynput_is_shaped_as_the_override_assumes() -> None:
    """pynput's darwin Listener._run enters keycode_context around super()._run(), and the
    key translation does not read the context: overriding _run moves the only TIS calls."""
    spec = importlib.util.find_spec("pynput")
    assert spec is not None and spec.origin is not None
    root = Path(spec.origin).parent
    tree = ast.parse((root / "keyboard" / "_darwin.py").read_text())
    listener = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Listener")
    methods = {f.name: f for f in listener.body if isinstance(f, ast.FunctionDef)}
    run = ast.unparse(methods["_run"])
    assert "with keycode_context() as context" in run and "super(Listener, self)._run()" in run
    assert "_context" not in ast.unparse(methods["_event_to_key"])
    assert "_context" not in ast.unparse(methods["_handle_message"])
    mixin = (root / "_util" / "darwin.py").read_text()
    assert "TISCopyCurrentKeyboardInputSource" in mixin
    assert next(b.id for b in listener.bases if isinstance(b, ast.Name)) == "ListenerMixin"
    assert macos.keys is not None
