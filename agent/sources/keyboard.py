"""Key presses via a pynput listener (Windows: the low-level keyboard hook; macOS: an event
tap). Only turns pynput keys into :class:`KeyEvent` (``agent.sources.keys``); matching
happens in ``agent.keystream``. X11 has its own source (``agent.sources.input_x11``), which
sees remapped keys and clicks that pynput's X backend loses.

pynput opens OS handles when imported, so it is imported in :meth:`PynputKeySource.run`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from . import KeyEvent
from .keys import Mods, key_event

__all__ = ["PynputKeySource", "translate"]

log = logging.getLogger(__name__)


_NO_MODS = Mods()


def translate(key: Any, mods: Mods = _NO_MODS) -> KeyEvent | None:
    """Map a pynput key (KeyCode or Key) to a KeyEvent, or None for keys we ignore."""
    char = getattr(key, "char", None)
    name = None if char else getattr(key, "name", None)
    if not char and name is None:
        return None
    if char and mods.ctrl and len(char) == 1 and ord(char) < 32:
        char = chr(ord(char) + 96)  # Windows reports ctrl+a as "\x01"
    return key_event(name, char, mods)


def _pynput_listener() -> type:
    from pynput import keyboard

    return keyboard.Listener  # type: ignore[no-any-return]


class PynputKeySource:
    """Presses (and the modifier state, from presses and releases) through pynput.

    *listener* returns the Listener class to use: pynput's own by default; on macOS
    :class:`agent.backends.mackeys.MacKeySource` passes one that reads the keyboard layout
    on the main thread. *stopped* is the error raised when the listener thread dies."""

    stopped = "the keyboard hook stopped (removed by the OS?)"

    def __init__(self, listener: Callable[[], type] = _pynput_listener) -> None:
        self._listener = listener
        self._held: set[str] = set()

    def _mods(self) -> Mods:
        h = self._held
        return Mods(shift="shift" in h, ctrl="ctrl" in h, alt="alt" in h, super="cmd" in h)

    def run(self, on_key: Callable[[KeyEvent], None], stop: threading.Event,
            ready: Callable[[], None] = lambda: None) -> None:
        def modifier(key: Any) -> str:
            name = getattr(key, "name", None) or ""
            base = name.split("_")[0]
            return base if base in ("shift", "ctrl", "alt", "cmd") else ""

        def on_press(key: Any) -> None:
            if m := modifier(key):
                self._held.add(m)
            ev = translate(key, self._mods())
            if ev is not None:
                on_key(ev)

        def on_release(key: Any) -> None:
            if m := modifier(key):
                self._held.discard(m)

        listener = self._listener()(on_press=on_press, on_release=on_release)
        listener.start()
        listener.wait()
        ready()
        try:
            while not stop.wait(1.0):
                if not listener.is_alive():
                    raise RuntimeError(self.stopped)
        finally:
            listener.stop()
            listener.join(timeout=5)
