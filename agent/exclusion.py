"""The exclusion list: windows and processes where typed keys are never matched.

An entry matches whole words, never inside a word: ``sign in`` matches "Sign in - Google
Accounts", "Sign-in" and "SIGNIN page" but not "Designing…"; ``log in`` does not match
"blog in"; a trailing plural "s" is allowed ("Passwords.kdbx"). Separators between the words
of an entry may be a space, a hyphen, a dot or nothing. An entry starting ``re:`` is a
regular expression (case-insensitive) for the rare title no word list describes.

Title entries are not applied to search results pages (titles containing one of
``search_pages``, e.g. " - Google Search", which browsers follow with their own name): a
pupil searching for "login" is typing a search, not a password. Process entries and
password fields always apply. Every exclusion has a reason, shown by ``vigil-agent status``
while it is in force.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .sources import WindowInfo

__all__ = ["Exclusions", "compile_entry"]

_SEP = r"[\s\-_.]*"


def compile_entry(entry: str) -> re.Pattern[str]:
    """The pattern for one exclusion entry (whole words, or ``re:`` a regex)."""
    if entry.startswith("re:"):
        return re.compile(entry[3:], re.IGNORECASE)
    words = [w for w in re.split(r"[^\w]+", entry.casefold()) if w]
    body = _SEP.join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w){body}s?(?!\w)", re.IGNORECASE)


@dataclass(frozen=True)
class Exclusions:
    """Window-title and process-name entries (whole words), and search-page title endings."""

    windows: tuple[str, ...] = ()
    processes: tuple[str, ...] = ()
    search_pages: tuple[str, ...] = ()
    _win: tuple[tuple[str, re.Pattern[str]], ...] = field(default=(), compare=False,
                                                          repr=False)
    _proc: tuple[tuple[str, re.Pattern[str]], ...] = field(default=(), compare=False,
                                                           repr=False)

    @classmethod
    def of(cls, windows: Iterable[str], processes: Iterable[str],
           search_pages: Iterable[str] = ()) -> Exclusions:
        w = tuple(x for x in windows if x.strip())
        p = tuple(x for x in processes if x.strip())
        return cls(w, p, tuple(s.casefold() for s in search_pages if s.strip()),
                   tuple((x, compile_entry(x)) for x in w),
                   tuple((x, compile_entry(x)) for x in p))

    def reason(self, window: WindowInfo | None) -> str:
        """Why keys typed in *window* are not matched ("" when they are)."""
        if window is None:
            return ""
        if window.password_field:
            return "a password field has focus"
        proc = window.process.casefold().removesuffix(".exe")
        for entry, pat in self._proc:
            if proc and pat.search(proc):
                return f"process matches exclusion {entry!r}"
        title = window.title.casefold().rstrip()
        if not title or any(s in title for s in self.search_pages):
            return ""
        for entry, pat in self._win:
            if pat.search(title):
                return f"window title matches exclusion {entry!r}"
        return ""

    def excludes(self, window: WindowInfo | None) -> bool:
        return bool(self.reason(window))
