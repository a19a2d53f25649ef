"""Key presses via a pynput listener (X11: the RECORD extension; Windows/macOS: pynput's own
hooks). Only turns pynput keys into :class:`KeyEvent`; matching happens in ``agent.keystream``.

pynput opens an X connection when imported on Linux, so it is imported in :meth:`start` only.
Synthetic events sent with XSendEvent are not seen (by design of RECORD); ``xdotool type``
without ``--window`` uses XTEST and is seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from . import KeyEvent

__all__ = ["PynputKeySource", "translate"]

log = logging.getLogger(__name__)

_CHARS = {"space": " ", "tab": " "}
_RESETS = {"enter", "esc", "up", "down", "page_up", "page_down", "home", "end"}


def translate(key: Any) -> KeyEvent | None:
    """Map a pynput key (KeyCode or Key) to a KeyEvent, or None for keys we ignore."""
    char = getattr(key, "char", None)
    if char:
        return KeyEvent("char", char) if char.isprintable() else None
    name = getattr(key, "name", None)
    if name is None:
        return None
    if name in _CHARS:
        return KeyEvent("char", _CHARS[name])
    if name == "backspace":
        return KeyEvent("backspace")
    if name in _RESETS:
        return KeyEvent("reset")
    return None


class PynputKeySource:
    def __init__(self) -> None:
        self._listener: Any = None

    def start(self, on_key: Callable[[KeyEvent], None]) -> None:
        from pynput import keyboard

        def on_press(key: Any) -> None:
            try:
                ev = translate(key)
                if ev is not None:
                    on_key(ev)
            except Exception:
                log.exception("key handler failed")

        listener_cls: Any = keyboard.Listener
        if listener_cls.__module__.endswith("_xorg"):
            try:
                from Xlib import X

                class _PressesOnly(listener_cls):  # type: ignore[misc]
                    # X11 RECORD range (first, last): presses only halves the events the
                    # listener must parse in Python; releases are never used.
                    _EVENTS = (X.KeyPress, X.KeyPress)

                listener_cls = _PressesOnly
            except ImportError:
                pass
        self._listener = listener_cls(on_press=on_press)
        self._listener.start()
        self._listener.wait()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener.join(timeout=5)
            self._listener = None
