"""A model of the focused text field: the current context's text, a cursor and a selection.

Pure. Each operation returns the edit it made as ``(start, end, new)`` (the characters
``start:end`` of the old text became ``new``), or None when the text did not change, so the
key stream can keep its matcher in step: an edit at the end is a few backspaces and feeds,
anything else a re-scan. It models a single-line field the way browsers and GTK edit it
(word moves and word deletes stop at word starts); Enter, Up/Down and unknown shortcuts end
the context before they get here, so one line is all it needs to hold.
"""

from __future__ import annotations

__all__ = ["Edit", "EditBuffer"]

Edit = tuple[int, int, str]


def _word(ch: str) -> bool:
    return ch.isalnum() or ch in "'_"


class EditBuffer:
    """At most ``limit`` characters; the oldest fall off the front (the cursor follows)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chars: list[str] = []
        self.cursor = 0
        self.anchor: int | None = None  # the other end of the selection, if any

    @property
    def text(self) -> str:
        return "".join(self.chars)

    def __len__(self) -> int:
        return len(self.chars)

    def clear(self) -> None:
        self.chars.clear()
        self.cursor, self.anchor = 0, None

    def _selection(self) -> tuple[int, int] | None:
        if self.anchor is None or self.anchor == self.cursor:
            return None
        return min(self.anchor, self.cursor), max(self.anchor, self.cursor)

    def _replace(self, start: int, end: int, new: str) -> Edit | None:
        self.anchor = None
        if start == end and not new:
            return None
        self.chars[start:end] = new
        self.cursor = start + len(new)
        return start, end, new

    def trim(self) -> int:
        """Drop characters over the limit from the front; how many were dropped."""
        over = len(self.chars) - self.limit
        if over <= 0:
            return 0
        del self.chars[:over]
        self.cursor = max(0, self.cursor - over)
        if self.anchor is not None:
            self.anchor = max(0, self.anchor - over)
        return over

    # -- operations --------------------------------------------------------------------
    def insert(self, text: str) -> Edit | None:
        sel = self._selection()
        start, end = sel if sel else (self.cursor, self.cursor)
        return self._replace(start, end, text)

    def backspace(self, word: bool = False) -> Edit | None:
        if sel := self._selection():
            return self._replace(*sel, "")
        start = self._word_left(self.cursor) if word else max(0, self.cursor - 1)
        return self._replace(start, self.cursor, "")

    def delete(self, word: bool = False) -> Edit | None:
        if sel := self._selection():
            return self._replace(*sel, "")
        end = self._word_right(self.cursor) if word else min(len(self.chars), self.cursor + 1)
        return self._replace(self.cursor, end, "")

    def cut(self) -> Edit | None:
        sel = self._selection()
        return self._replace(*sel, "") if sel else None

    def select_all(self) -> None:
        self.anchor, self.cursor = 0, len(self.chars)

    def move(self, where: str, select: bool = False) -> None:
        sel = self._selection()
        if select and self.anchor is None:
            self.anchor = self.cursor
        n, c = len(self.chars), self.cursor
        if not select and sel and where in ("left", "right"):
            self.cursor = sel[0] if where == "left" else sel[1]  # collapse the selection
        elif where == "left":
            self.cursor = max(0, c - 1)
        elif where == "right":
            self.cursor = min(n, c + 1)
        elif where == "home":
            self.cursor = 0
        elif where == "end":
            self.cursor = n
        elif where == "word_left":
            self.cursor = self._word_left(c)
        elif where == "word_right":
            self.cursor = self._word_right(c)
        if not select:
            self.anchor = None

    def _word_left(self, i: int) -> int:
        chars = self.chars
        while i > 0 and not _word(chars[i - 1]):
            i -= 1
        while i > 0 and _word(chars[i - 1]):
            i -= 1
        return i

    def _word_right(self, i: int) -> int:
        chars, n = self.chars, len(self.chars)
        while i < n and not _word(chars[i]):
            i += 1
        while i < n and _word(chars[i]):
            i += 1
        return i
