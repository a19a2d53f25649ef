"""Reading the X clipboard (CLIPBOARD) or primary selection (PRIMARY) at the moment of a paste.

Only called by the key stream when a paste key or the middle button is pressed: it asks the
selection's owner for UTF8_STRING (then STRING) into a property of a private, unmapped
window, waits at most ``timeout`` seconds for the answer, reads at most ``max_chars``
characters (following INCR transfers only that far) and deletes the property. The text is
returned to the caller in memory and kept nowhere. Xlib is imported on first use.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from typing import Any

from .xtext import decode_property

__all__ = ["X11SelectionReader"]

log = logging.getLogger(__name__)


class X11SelectionReader:
    def __init__(self, display: str | None = None, max_chars: int = 2000,
                 timeout: float = 1.0) -> None:
        self.display_name = display
        self.max_chars = max_chars
        self.timeout = timeout
        self._lock = threading.Lock()
        self._d: Any = None
        self._win: Any = None

    def _open(self) -> tuple[Any, Any]:
        if self._d is None:
            from Xlib import X, display

            d = display.Display(self.display_name)
            win = d.screen().root.create_window(0, 0, 1, 1, 0, X.CopyFromParent,
                                                X.InputOnly, X.CopyFromParent,
                                                event_mask=X.PropertyChangeMask)
            self._d, self._win = d, win
        return self._d, self._win

    def read(self, which: str) -> str:
        with self._lock:
            try:
                return self._read(which)
            except Exception as exc:  # a paste that cannot be read is logged, never fatal
                log.warning("could not read the %s selection: %s", which, exc)
                self.close()
                return ""

    def close(self) -> None:
        d, self._d, self._win = self._d, None, None
        if d is not None:
            try:
                d.close()
            except Exception:
                log.debug("closing the selection connection failed", exc_info=True)

    def _read(self, which: str) -> str:
        from Xlib import X, Xatom

        d, win = self._open()
        sel = d.intern_atom("CLIPBOARD") if which == "clipboard" else Xatom.PRIMARY
        if d.get_selection_owner(sel) == X.NONE:
            return ""
        prop = d.intern_atom("VIGIL_PASTE")
        for target in (d.intern_atom("UTF8_STRING"), Xatom.STRING):
            win.convert_selection(sel, target, prop, X.CurrentTime)
            d.flush()
            ev = self._wait(d, lambda e: e.type == X.SelectionNotify)
            if ev is None:
                return ""
            if ev.property != X.NONE:
                return self._take(d, win, prop)
        return ""

    def _wait(self, d: Any, want: Any) -> Any:
        deadline = time.monotonic() + self.timeout
        while True:
            while d.pending_events():
                ev = d.next_event()
                if want(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            select.select([d], [], [], left)

    def _take(self, d: Any, win: Any, prop: int) -> str:
        from Xlib import X

        limit = self.max_chars * 4  # bytes: a UTF-8 character is at most four
        p = win.get_property(prop, X.AnyPropertyType, 0, (limit + 3) // 4, delete=True)
        if p is None:
            return ""
        kind = d.get_atom_name(p.property_type)
        if kind != "INCR":
            return decode_property(bytes(p.value)[:limit], kind)[: self.max_chars]
        # A large selection comes in chunks: read only as far as the bound.
        chunks: list[bytes] = []
        size, kind = 0, ""
        d.flush()
        while size < limit:
            ev = self._wait(d, lambda e: e.type == X.PropertyNotify and e.atom == prop
                            and e.state == X.PropertyNewValue)
            if ev is None:
                break
            p = win.get_property(prop, X.AnyPropertyType, 0, (limit - size + 3) // 4,
                                 delete=True)
            d.flush()
            if p is None or not p.value:
                break
            kind = kind or d.get_atom_name(p.property_type)
            chunk = bytes(p.value)
            chunks.append(chunk)
            size += len(chunk)
        return decode_property(b"".join(chunks)[:limit], kind)[: self.max_chars]
