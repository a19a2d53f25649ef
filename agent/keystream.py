"""Typed keys → streaming matcher. The raw key stream is never stored anywhere.

The current context is modelled as the text field shows it (:class:`~agent.editbuffer.
EditBuffer`: the text, a cursor, a selection), bounded to ``boundary_chars`` characters and
held in memory only. Typing at the end goes straight into ``rules.StreamMatcher.feed`` (and
Backspace into ``backspace``); an edit anywhere else (arrows then typing, Ctrl+Backspace in
the middle, a selection replaced) re-scans the text so what is matched is what is on screen.
A phrase that was complete before an edit still counts (the matcher's rule), and one phrase
is reported once per context however often it is re-scanned.

Boundaries: the context ends (pending hits flushed, the text handed to ``on_boundary``, then
forgotten) on Enter, Tab, Up/Down, Escape, an unknown shortcut, a mouse click, a focus change
and after ``idle_seconds`` without a key. After ``release_seconds`` without a key, pending
hits are released and the text is handed to ``on_boundary`` without ending the context, so
a complete phrase left on screen is caught within seconds. A sentence end (``. ! ?``) is a
boundary for the scorer too. A paste reads the selection (bounded, in memory) only at that
moment and matches it as if typed.

While the focused window or process is on the exclusion list, or a password field has
focus, keys are not matched at all: they are not even fed to the matcher.

Password fields are told by the accessibility API (:meth:`KeyStream.field`), whose notice
arrives a little after the key that moved the focus. So while that API is live, the keys
typed after a focus-moving key (Tab, Enter, a click, a window switch) are held in memory
until the notice says where the focus went (or ``settle_seconds`` pass, or another such key
comes, with no notice: the focus stayed). Into a password field they are dropped unseen;
elsewhere they are matched as usual. What was typed before the focus moved is released as
always, never with the password in it. A notice that comes late still drops the text typed
since the focus moved, unreleased.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .editbuffer import Edit, EditBuffer
from .exclusion import Exclusions
from .sources import FieldInfo, KeyEvent, WindowInfo

__all__ = ["KeyStream"]

HitSink = Callable[[list[Any], "WindowInfo | None"], None]
BoundarySink = Callable[[str, str, "WindowInfo | None"], None]  # (context key, text, window)
SelectionSource = Callable[[str], str]  # "clipboard" | "primary" -> text ("" if none)
_SENTENCE_END = frozenset(".!?")
#: Key events after which keyboard focus may be in another field.
_FOCUS_KEYS = frozenset({"reset", "click"})
_MAX_HELD = 512  # keys held while waiting for a focus notice (in memory only)
#: Terminals where Shift+Insert pastes the primary selection (everything else: clipboard).
_PRIMARY_INSERT = frozenset({"xterm", "uxterm", "urxvt", "rxvt", "st", "aterm"})


class KeyStream:
    def __init__(self, matcher: Any, on_hits: HitSink, exclusions: Exclusions,
                 idle_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 on_boundary: BoundarySink | None = None, boundary_chars: int = 480,
                 release_seconds: float = 2.0,
                 read_selection: SelectionSource | None = None,
                 settle_seconds: float = 0.5) -> None:
        self._matcher = matcher
        self._on_boundary = on_boundary
        self._buf = EditBuffer(boundary_chars)  # the current context; never stored
        self._seen: set[tuple[str, str]] = set()  # (rule id, match) reported this context
        self._last_boundary = ""
        self._serial = 0
        self._on_hits = on_hits
        self.exclusions = exclusions
        self.idle_seconds = idle_seconds
        self.release_seconds = release_seconds
        self.read_selection = read_selection
        self._clock = clock
        self._lock = threading.Lock()
        self._window: WindowInfo | None = None
        self._excluded = False
        self._last_key = clock()
        self._dirty = False  # text in the context since the last flush
        self._released = True  # nothing typed since the last short-idle release
        self.settle_seconds = settle_seconds
        #: True while the accessibility API reports focus changes (password fields).
        self.fields_live = False
        self._password_win: int | None = None  # window id whose password field has focus
        self._held: list[KeyEvent] = []  # keys typed since focus moved, until the notice
        self._settle_until: float | None = None
        self._unresolved = False  # a settle ran out: text since then may be a password

    @property
    def boundary_chars(self) -> int:
        return self._buf.limit

    @property
    def excluded(self) -> bool:
        return self._excluded

    @property
    def in_password_field(self) -> bool:
        """A password field has keyboard focus in the focused window."""
        with self._lock:
            return self._password_here()

    def _password_here(self) -> bool:
        wid = self._window.window_id if self._window is not None else 0
        return self._password_win is not None and self._password_win == wid

    @property
    def context_key(self) -> str:
        """Identifies the current context (hits and boundary results of one context share
        it, so one concern typed once is reported once per category)."""
        return f"keys:{self._serial}"

    def set_matcher(self, matcher: Any) -> None:
        """Swap in a matcher from a new rule set (pending hits of the old one are flushed)."""
        with self._lock:
            self._flush()
            self._matcher = matcher

    def set_exclusions(self, exclusions: Exclusions) -> None:
        with self._lock:
            self.exclusions = exclusions
            self._excluded = exclusions.excludes(self._window)

    def focus(self, window: WindowInfo | None) -> None:
        """Focus moved: flush hits typed in the old window, then start afresh."""
        with self._lock:
            self._flush()
            self._window = window
            self._excluded = self.exclusions.excludes(window)
            if not self.fields_live:
                self._password_win = None  # nothing will say it left: do not keep guessing
            elif not self._excluded:
                self._settle(self._clock())  # the app may report a password field focused

    # -- password fields (accessibility API) -----------------------------------------------
    def set_fields_live(self, live: bool) -> None:
        """The accessibility API started (True) or stopped (False) reporting focus."""
        with self._lock:
            self.fields_live = live
            if not live and self._settle_until is not None:
                self._replay(self._clock())

    def field(self, info: FieldInfo) -> None:
        """A new object has keyboard focus (*info* says whether it is a password field)."""
        with self._lock:
            now = self._clock()
            wid = self._window.window_id if self._window is not None else 0
            if info.password:
                if self._unresolved:
                    self._discard()  # typed after the focus moved: the password itself
                else:
                    self._flush()  # typed before (a script moved the focus): release it
                self._password_win = wid
            else:
                self._password_win = None
            self._unresolved = False
            self._replay(now)

    def _settle(self, now: float) -> None:
        self._settle_until = now + self.settle_seconds

    def _replay(self, now: float) -> None:
        """The focus is known (or assumed to have stayed): process the held keys (none of
        them moves the focus: such a key ends the wait first)."""
        held, self._held = self._held, []
        self._settle_until = None
        for event in held:
            self._process(event, now)

    def _process(self, event: KeyEvent, now: float) -> bool:
        """Match *event* (or drop it in a password field); True when it may have moved the
        focus and the next keys must wait for the accessibility notice."""
        moves = event.kind in _FOCUS_KEYS and self.fields_live
        if self._password_here():
            if moves:
                self._settle(now)
            return moves
        if self._matcher is None:
            return False
        self._apply(event)
        if moves:
            self._settle(now)
        return moves

    def _discard(self) -> None:
        """End the context without releasing anything: its text must not be matched."""
        if self._matcher is not None:
            self._matcher.reset()  # its hits are dropped unseen
        self._dirty, self._released = False, True
        self._buf.clear()
        self._seen.clear()
        self._last_boundary = ""
        self._serial += 1

    # -- keys ------------------------------------------------------------------------------
    def key(self, event: KeyEvent) -> None:
        with self._lock:
            if self._excluded:
                return
            now = self._clock()
            if self._settle_until is not None:  # waiting to hear where the focus went
                self._last_key = now
                if event.kind not in _FOCUS_KEYS:
                    if len(self._held) < _MAX_HELD:
                        self._held.append(event)
                    return
                # Focus moves again with no notice for the last move: it did not move then
                # (Enter in a text box, a click in the same field). Its keys count there.
                self._unresolved = True
                self._replay(now)
            if self._dirty and now - self._last_key > self.idle_seconds:
                self._flush()
            elif not self._released and now - self._last_key >= self.release_seconds:
                self._release()
            self._last_key = now
            self._process(event, now)

    def _apply(self, event: KeyEvent) -> None:
        buf, kind = self._buf, event.kind
        if kind == "char" and event.char:
            self._edit(buf.insert(event.char))
        elif kind in ("backspace", "word_backspace"):
            self._edit(buf.backspace(word=kind == "word_backspace"))
        elif kind in ("delete", "word_delete"):
            self._edit(buf.delete(word=kind == "word_delete"))
        elif kind == "move":
            buf.move(event.char, event.select)
        elif kind == "select_all":
            buf.select_all()
        elif kind == "cut":
            self._edit(buf.cut())
        elif kind == "paste":
            self._paste(event.char)
        elif kind == "click":
            self._flush()
            if event.char == "2":  # X11: the middle button pastes the primary selection
                self._paste("primary")
        elif kind == "reset":
            self._flush()

    def _paste(self, which: str) -> None:
        if self.read_selection is None:
            return
        if which == "insert":
            proc = self._window.process.casefold() if self._window else ""
            which = "primary" if proc in _PRIMARY_INSERT else "clipboard"
        text = self.read_selection(which)  # bounded by the reader; in memory only
        for i, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n")):
            if i:
                self._flush()  # a pasted line break is a boundary, as Enter is
            clean = "".join(" " if c == "\t" else c for c in line if c == "\t" or
                            c.isprintable())
            if clean:
                self._edit(self._buf.insert(clean))

    def _edit(self, edit: Edit | None) -> None:
        if edit is None:
            return
        start, end, new = edit
        self._dirty, self._released = True, False
        old_len = len(self._buf) - len(new) + (end - start)
        m = self._matcher
        if end == old_len:  # at the end: undo and type, as the matcher does itself
            for _ in range(end - start):
                m.backspace()
            for ch in new:
                self._emit(m.feed(ch))
        else:
            self._resync()
        self._buf.trim()
        if any(ch in _SENTENCE_END for ch in new):
            self._boundary()

    def _resync(self) -> None:
        """The text changed away from its end: release what the matcher had (complete
        phrases still count), then re-scan the text as it now stands."""
        m = self._matcher
        self._emit(m.reset())
        for ch in self._buf.chars:
            self._emit(m.feed(ch))

    def _emit(self, hits: list[Any]) -> None:
        if not hits:
            return
        fresh = []
        for h in hits:
            k = (h.rule.id, h.match.casefold())
            if k not in self._seen:
                self._seen.add(k)
                fresh.append(h)
        if fresh:
            self._on_hits(fresh, self._window)

    # -- time ------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (clock time), or None."""
        with self._lock:
            settle = self._settle_until
            if not self._dirty:
                return settle
            wait = self.idle_seconds if self._released else self.release_seconds
            due = self._last_key + wait
            return due if settle is None else min(due, settle)

    def tick(self) -> None:
        """Called at :meth:`next_deadline`: release after a short idle, reset after a long."""
        with self._lock:
            now = self._clock()
            if self._settle_until is not None and now >= self._settle_until:
                self._unresolved = True  # no notice: the focus stayed, or it is late
                self._replay(now)
            if not self._dirty:
                return
            idle = now - self._last_key
            if idle > self.idle_seconds:
                self._flush()
            elif not self._released and idle >= self.release_seconds:
                self._release()

    def _release(self) -> None:
        """Short idle: release pending hits (a phrase at the end counts as complete) and
        let the scorer see the text, keeping the context open for more typing."""
        self._released = True
        if self._matcher is None or not len(self._buf):
            return
        self._resync()
        self._boundary()

    # -- context end -----------------------------------------------------------------------
    def _boundary(self) -> None:
        text = self._buf.text
        if self._on_boundary is not None and text and text != self._last_boundary:
            self._last_boundary = text
            self._on_boundary(self.context_key, text, self._window)

    def _flush(self) -> None:
        if self._matcher is None:
            return
        self._emit(self._matcher.reset())
        self._dirty, self._released = False, True
        self._boundary()
        self._buf.clear()
        self._seen.clear()
        self._last_boundary = ""
        self._serial += 1
