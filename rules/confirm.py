"""Confirming a candidate hit: repeated letters, and whether it was typed exactly.

The automaton matches over text with repeated letters collapsed, which is what lets
"diiiie" and "killll" through. These checks run only on hits (rare), so they can afford to
re-normalise the matched text.
"""

from __future__ import annotations

from functools import lru_cache

from .normalise import normalise

__all__ = ["enough_repeats", "letter_runs", "match_kind", "runs_cover"]

def letter_runs(text: str) -> tuple[tuple[str, int], ...]:
    """Normalised letters of ``text`` with how often each repeats (capped at 2), without
    collapsing: "nigger" is (..., ("g", 2), ...), "Niger" has ("g", 1). The matcher uses this
    to refuse a hit whose text has fewer repeats than the phrase (Niger is not the slur, "wed"
    is not "weed"), while still allowing more ("diiiie", "killll")."""
    out: list[tuple[str, int]] = []
    for c in normalise(text, collapse=False).replace(" ", ""):
        if out and out[-1][0] == c:
            out[-1] = (c, 2)
        else:
            out.append((c, 1))
    return tuple(out)


@lru_cache(maxsize=4096)
def _phrase_runs(phrase: str) -> tuple[tuple[str, int], ...]:
    return letter_runs(phrase[:-1] if phrase.endswith("*") else phrase)


def enough_repeats(match: str, phrase: str) -> bool:
    """The typed text repeats each letter at least as often as the phrase (up to twice)."""
    return runs_cover(letter_runs(match), phrase)


def runs_cover(got: tuple[tuple[str, int], ...], phrase: str) -> bool:
    """:func:`enough_repeats` with the typed text's :func:`letter_runs` already known."""
    want = _phrase_runs(phrase)
    if [c for c, _ in got] != [c for c, _ in want]:
        return True  # cannot line them up (unusual spacing): trust the automaton
    return all(g >= w for (_, g), (_, w) in zip(got, want, strict=True))


def match_kind(match: str, phrase: str) -> str:
    """"exact" when typed as written (up to case and spacing), else "normalised"."""
    if phrase.endswith("*"):
        return "exact" if _plain(match).startswith(_plain(phrase[:-1])) else "normalised"
    return "exact" if _plain(match) == _plain(phrase) else "normalised"


def _plain(text: str) -> str:
    return " ".join(text.casefold().split())
