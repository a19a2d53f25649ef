"""macOS key presses through pynput, with its keyboard-layout calls on the main thread.
NOT YET RUN ON A REAL MAC.

pynput's macOS ``keyboard.Listener._run`` runs on the listener's own thread and first enters
``keycode_context()``, which calls ``TISCopyCurrentKeyboardInputSource``,
``TISGetInputSourceProperty`` and ``LMGetKbdType``. Those are TIS/TSM calls: "This is NOT
allowed. Please call TIS/TSM in main thread!!!" (pynput#99), and from macOS 14 HIToolbox
asserts it (``dispatch_assert_queue`` in ``TSMGetInputSourceProperty``): the whole process is
killed with ``EXC_BREAKPOINT`` (crash reports in isair/jarvis#499, AceCentre/MorseWriter#42).
Running a Cocoa run loop on the main thread (:mod:`agent.backends.mainloop`) does not by
itself move that call: the listener thread still makes it.

:func:`main_thread_listener` subclasses pynput's Listener so that ``_run`` obtains the same
context (a keyboard type and a copy of the layout bytes: plain data) through
:meth:`~agent.backends.cocoa.Cocoa.call_on_main`, then runs pynput's event-tap loop
(``ListenerMixin._run``) unchanged. Characters still come from
``CGEventKeyboardGetUnicodeString`` on the event itself, as in pynput; ``UCKeyTranslate``
over the copied bytes (pynput's ``keycode_to_string``) is not a TIS call.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from ..sources.keyboard import PynputKeySource

__all__ = ["MacKeySource", "main_thread_listener"]

log = logging.getLogger(__name__)

T = TypeVar("T")
OnMain = Callable[[Callable[[], Any]], Any]


def main_thread_listener(listener: type, on_main: OnMain,
                         context: Callable[[], contextlib.AbstractContextManager[Any]]) -> type:
    """*listener* (pynput's darwin ``keyboard.Listener``) with its keycode context taken on
    the main thread. ``super(listener, self)._run()`` is the ``ListenerMixin._run`` that
    pynput's own ``_run`` calls inside ``with keycode_context()``."""

    def enter() -> Any:
        with context() as value:
            return value

    def _run(self: Any) -> None:
        try:
            self._context = on_main(enter)
        except BaseException:
            log.error("keyboard layout could not be read on the main thread", exc_info=True)
            self._mark_ready()  # else Listener.wait() blocks for ever; the thread then ends
            raise
        try:
            super(listener, self)._run()  # type: ignore[arg-type]  # a class, passed in
        finally:
            self._context = None

    return type("MainThreadLayoutListener", (listener,), {"_run": _run})


def _pynput_listener() -> type:
    from pynput import keyboard
    from pynput._util.darwin import keycode_context

    from .cocoa import Cocoa

    return main_thread_listener(keyboard.Listener, Cocoa.shared().call_on_main,
                                keycode_context)


class MacKeySource(PynputKeySource):
    """Presses (and modifier state) through pynput's event tap, as
    :class:`agent.sources.keyboard.PynputKeySource`, but with the layout read on the main
    thread (*listener* returns the Listener class to use)."""

    stopped = "the keyboard event tap stopped"

    def __init__(self, listener: Callable[[], type] = _pynput_listener) -> None:
        super().__init__(listener)
