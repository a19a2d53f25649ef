"""Event sources: what the OS backends report, and the small Protocols they implement.

Backends live in ``agent/sources/*_linux|x11.py`` and ``agent/backends/*.py``; they import
their OS libraries inside functions and do nothing at import time. ``agent.platform`` is the
only module that chooses one.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["FieldInfo", "FieldSource", "KeyEvent", "KeySource", "MediaEvent", "MediaSource",
           "SelectionReader", "StopSignal", "WindowInfo", "WindowSource", "stop_fd"]


class StopSignal(threading.Event):
    """A stop event that sources blocked in select()/poll() can also wait on (``fileno``),
    so they sleep with long timeouts when idle yet stop at once."""

    def __init__(self) -> None:
        super().__init__()
        self._r, self._w = os.pipe()

    def fileno(self) -> int:
        return self._r

    def set(self) -> None:
        super().set()
        with contextlib.suppress(OSError):
            os.write(self._w, b"x")

    def close(self) -> None:
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)


def stop_fd(stop: threading.Event) -> int | None:
    """The file descriptor to poll for *stop*, if it has one."""
    fileno = getattr(stop, "fileno", None)
    return int(fileno()) if callable(fileno) else None


@dataclass(frozen=True)
class WindowInfo:
    """The focused window: its title, the name of its process, and an opaque id."""

    title: str
    process: str = ""
    window_id: int = 0
    #: True when the OS says a password field has focus (Windows, where exposed).
    password_field: bool = False


@dataclass(frozen=True)
class FieldInfo:
    """The accessibility API says a new object has keyboard focus: is it a password field?

    ``known`` is False when the application did not say (no answer in time): the agent then
    cannot tell, and only the sign-in page titles protect a password. Never the field's text.
    """

    password: bool
    known: bool = True
    role: int = 0


@dataclass(frozen=True)
class KeyEvent:
    """One key press or click, as an editing operation on the focused text.

    ``kind`` is one of:

    * ``"char"``: ``char`` is typed at the cursor (replacing any selection);
    * ``"backspace"``, ``"delete"`` (forward), ``"word_backspace"``, ``"word_delete"``;
    * ``"move"``: ``char`` is ``left``/``right``/``home``/``end``/``word_left``/``word_right``,
      and ``select`` is True when Shift extends the selection;
    * ``"select_all"``, ``"cut"``;
    * ``"paste"``: ``char`` names the selection (``clipboard``, ``primary``, or ``insert``
      for Shift+Insert, whose selection depends on the application);
    * ``"click"``: a mouse button (``char`` is its number) ends the context;
    * ``"reset"``: anything else that may change the text unpredictably (Enter, Tab, Up,
      an unknown shortcut) ends the context.
    """

    kind: str
    char: str = ""
    select: bool = False


@dataclass(frozen=True)
class MediaEvent:
    """A removable volume was mounted/unmounted, or a file was written to it."""

    event: str  # "mounted" | "unmounted" | "file_written"
    mount_point: str
    label: str = ""
    fstype: str = ""
    size_bytes: int = 0
    files_written: int = 0
    file_name: str = ""
    device: str = ""


class WindowSource(Protocol):
    def run(self, on_change: Callable[[WindowInfo], None], stop: threading.Event) -> None:
        """Block, calling *on_change* for every new (window, title), until *stop* is set."""


class KeySource(Protocol):
    def run(self, on_key: Callable[[KeyEvent], None], stop: threading.Event,
            ready: Callable[[], None]) -> None:
        """Block, calling *on_key* for every key press (and click), until *stop* is set.
        Call *ready* once keys are being seen. Raise if the OS input hook fails: the
        monitor restarts the source with back-off. *on_key* only enqueues."""


class FieldSource(Protocol):
    def run(self, on_field: Callable[[FieldInfo], None], stop: threading.Event,
            ready: Callable[[], None]) -> None:
        """Block, calling *on_field* each time a new object takes keyboard focus, until
        *stop* is set. Call *ready* once focus changes are being seen; raise when the
        accessibility bus cannot be reached (the monitor restarts it with back-off and
        reports password detection as degraded)."""


class SelectionReader(Protocol):
    def read(self, which: str) -> str:
        """The text of selection *which* ("clipboard" or "primary") now, bounded; "" when
        there is none or it cannot be read. Called only at the moment of a paste."""


class MediaSource(Protocol):
    def run(self, on_event: Callable[[MediaEvent], None], stop: threading.Event) -> None:
        """Block, calling *on_event* for removable mounts, unmounts and files written."""
