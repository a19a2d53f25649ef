"""Active window on Linux/X11, event-driven with python-xlib.

Listens for PropertyNotify on the root window (``_NET_ACTIVE_WINDOW`` changes) and on the
active window (``_NET_WM_NAME``/``WM_NAME`` changes, e.g. a browser tab title). ``WM_NAME``
is decoded by its type: UTF8_STRING, STRING (Latin-1) or COMPOUND_TEXT (what xterm sets for
emoji or right-to-left titles, with no ``_NET_WM_NAME``). When no window
manager sets ``_NET_ACTIVE_WINDOW`` it falls back to ``XGetInputFocus``, checked twice a
second. The process name comes from ``_NET_WM_PID`` via psutil. Duplicate reports (openbox
sends two per switch) are dropped here and again in the monitor.

Nothing happens at import time; Xlib is imported in :meth:`X11WindowSource.run`.
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
from collections.abc import Callable
from typing import Any

from . import WindowInfo, stop_fd
from .xtext import decode_property

__all__ = ["X11WindowSource", "focused_window_rect", "process_name"]

log = logging.getLogger(__name__)


def process_name(pid: int) -> str:
    if pid <= 0:
        return ""
    try:
        import psutil

        return str(psutil.Process(pid).name())
    except Exception:
        return ""


def focused_window_rect(display_name: str | None = None) -> tuple[int, int, int, int] | None:
    """(left, top, width, height) on the screen of the active top-level window, including
    its frame when the window manager reparented it; None when it cannot be found."""
    from Xlib import X, display, error

    d = display.Display(display_name)
    try:
        root = d.screen().root
        p = root.get_full_property(d.intern_atom("_NET_ACTIVE_WINDOW"), X.AnyPropertyType)
        if p is None or not len(p.value) or not p.value[0]:
            win = d.get_input_focus().focus
            if not hasattr(win, "query_tree"):
                return None
        else:
            win = d.create_resource_object("window", int(p.value[0]))
        while True:  # climb to the child of the root (the frame)
            parent = win.query_tree().parent
            if parent is None or parent.id == root.id:
                break
            win = parent
        g = win.get_geometry()
        pos = win.translate_coords(root, 0, 0)
        return -int(pos.x), -int(pos.y), int(g.width), int(g.height)
    except error.XError:
        return None
    finally:
        d.close()


class X11WindowSource:
    """Reports the focused top-level window of one X display."""

    def __init__(self, display: str | None = None, fallback_interval: float = 0.5) -> None:
        self.display_name = display
        self.fallback_interval = fallback_interval

    def run(self, on_change: Callable[[WindowInfo], None], stop: threading.Event) -> None:
        from Xlib import X, Xatom, display, error

        d = display.Display(self.display_name)
        d.set_error_handler(lambda *_a, **_k: None)  # windows vanish; never crash on it
        root = d.screen().root
        atoms = {n: d.intern_atom(n) for n in
                 ("_NET_ACTIVE_WINDOW", "_NET_WM_NAME", "_NET_WM_PID", "UTF8_STRING")}
        name_atoms = {atoms["_NET_WM_NAME"], Xatom.WM_NAME}
        root.change_attributes(event_mask=X.PropertyChangeMask)
        watched: dict[str, Any] = {"win": None}
        last: list[WindowInfo | None] = [None]

        type_names: dict[int, str] = {}

        def type_name(atom: int) -> str:
            if atom not in type_names:
                try:
                    type_names[atom] = d.get_atom_name(atom)
                except error.XError:
                    type_names[atom] = ""
            return type_names[atom]

        def title_of(win: Any) -> str:
            try:
                p = win.get_full_property(atoms["_NET_WM_NAME"], atoms["UTF8_STRING"])
                if p is not None and p.value:
                    v = p.value
                    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                p = win.get_full_property(Xatom.WM_NAME, X.AnyPropertyType)
                if p is None or not p.value:
                    return ""
                return decode_property(p.value, type_name(p.property_type))
            except error.XError:
                return ""

        def pid_of(win: Any) -> int:
            try:
                p = win.get_full_property(atoms["_NET_WM_PID"], X.AnyPropertyType)
                return int(p.value[0]) if p is not None and len(p.value) else 0
            except error.XError:
                return 0

        def active() -> Any:
            try:
                p = root.get_full_property(atoms["_NET_ACTIVE_WINDOW"], X.AnyPropertyType)
            except error.XError:
                p = None
            if p is not None and len(p.value) and p.value[0]:
                return d.create_resource_object("window", int(p.value[0]))
            return focus_toplevel()

        def focus_toplevel() -> Any:
            try:
                win = d.get_input_focus().focus
                if not hasattr(win, "query_tree"):
                    return None
                while win is not None and win.id != root.id:
                    if title_of(win):
                        return win
                    win = win.query_tree().parent
            except error.XError:
                return None
            return None

        def refresh() -> None:
            win = active()
            if win is None:
                return
            # Select on every refresh: X reuses window ids, so "same id" can be a new window
            # on which nothing is selected yet.
            with contextlib.suppress(error.XError):
                win.change_attributes(event_mask=X.PropertyChangeMask)
            watched["win"] = win
            info = WindowInfo(title=title_of(win), process=process_name(pid_of(win)),
                              window_id=int(win.id))
            if info != last[0]:
                last[0] = info
                on_change(info)

        refresh()
        d.flush()
        has_ewmh = self._has_active_window(root, atoms["_NET_ACTIVE_WINDOW"], X)
        sfd = stop_fd(stop)
        while not stop.is_set():
            # Replies read by earlier requests may already have queued events: only sleep
            # in select() when nothing is queued, or a switch could wait for the timeout.
            if not d.pending_events():
                # With EWMH everything is an event: sleep long (the stop fd wakes us).
                timeout = self.fallback_interval if not has_ewmh or sfd is None else 60.0
                select.select([d] if sfd is None else [d, sfd], [], [], timeout)
            changed = False
            for _ in range(d.pending_events()):
                ev = d.next_event()
                if ev.type != X.PropertyNotify:
                    continue
                if ev.window.id == root.id and ev.atom == atoms["_NET_ACTIVE_WINDOW"]:
                    changed, has_ewmh = True, True
                elif (ev.atom in name_atoms and watched["win"] is not None
                      and ev.window.id == watched["win"].id):
                    changed = True
            if changed or not has_ewmh:
                refresh()
                d.flush()
        d.close()

    @staticmethod
    def _has_active_window(root: Any, atom: int, X: Any) -> bool:
        try:
            return root.get_full_property(atom, X.AnyPropertyType) is not None
        except Exception:
            return False
