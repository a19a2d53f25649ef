"""The context layer's first pass: read masked, leet and misspelt words as the phrase words
they stand for, before the normaliser sees the text.

Each whitespace-separated chunk is split at punctuation that cannot stand for a letter
(``,`` ``?`` ``/`` ...). A piece with stand-ins is matched as a pattern against phrase words
of the same length:

* ``*`` ``#`` ``_`` ``-`` ``.`` stand for any one letter inside a word (``s*icide``,
  ``n*des``, ``k#ll``), at most one in two letters. ``-`` ``.`` ``_`` are also separators, so
  they are read as masks only when the pieces between them are not all real words
  (``self-harm``) nor all single letters (``s.u.i.c.i.d.e``, which the normaliser joins);
* ``!`` and ``|`` stand for ``i`` or ``l`` (``d!e``, ``k!ll``);
* digits stand for their leetspeak letters anywhere, also first (``4n0rexia``, ``5uicide``):
  the normaliser keeps a leading digit as a digit.

A piece of plain letters that is neither a real word nor a phrase word may be a typo of a
phrase word (:meth:`~rules.lexicon.Lexicon.typo`). Only phrase words are ever produced, so a
repair can only make a phrase match; it never changes what other text means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .lexicon import ANY, Lexicon, collapse
from .normalise import fold, normalise

__all__ = ["Repair", "apply", "repairs"]

_CHUNK = re.compile(r"\S+")
_HARD_MASKS = frozenset("*#")
_SOFT_MASKS = frozenset("-._")  # also word separators
_IL = frozenset("!|")
_DIGITS: dict[str, frozenset[str]] = {
    "0": frozenset("o"), "1": frozenset("il"), "2": frozenset("z"), "3": frozenset("e"),
    "4": frozenset("a"), "5": frozenset("s"), "6": frozenset("bg"), "7": frozenset("t"),
    "8": frozenset("b"), "9": frozenset("g"),
}  # fmt: skip
_IL_SET = frozenset("il")


@dataclass(frozen=True)
class Repair:
    """Raw text ``[start, end)`` read as phrase word ``word``, and why."""

    start: int
    end: int
    word: str
    reason: str


def _kind(c: str) -> tuple[str, str]:
    """(kind, folded) for one raw character: letter, digit, hard, soft, il, elided, other."""
    if c in _HARD_MASKS:
        return "hard", ""
    if c in _SOFT_MASKS:
        return "soft", ""
    if c in _IL:
        return "il", ""
    f = fold(c)
    if not f:
        return "elided", ""
    if f.isdigit() and len(f) == 1:
        return "digit", f
    if f.isalpha():
        return "letter", f
    return "other", ""


def _pieces(chunk: str, base: int) -> list[tuple[int, int, list[tuple[str, str]]]]:
    """Split a chunk at "other" characters and trim stand-ins off both ends."""
    out: list[tuple[int, int, list[tuple[str, str]]]] = []
    cur: list[tuple[str, str]] = []
    start = 0
    for i, c in enumerate([*chunk, " "]):
        kind = _kind(c) if c != " " else ("other", "")
        if kind[0] != "other":
            if not cur:
                start = i
            cur.append(kind)
            continue
        lo, hi = 0, len(cur)
        while lo < hi and cur[lo][0] in ("hard", "soft", "il", "elided"):
            lo += 1
        while hi > lo and cur[hi - 1][0] in ("hard", "soft", "il", "elided"):
            hi -= 1
        if hi - lo >= 2:
            out.append((base + start + lo, base + start + hi, cur[lo:hi]))
        cur = []
    return out


def _typo(raw: str, letters: str, lex: Lexicon) -> str | None:
    if not letters.isascii() or len(letters) < 4 or lex.is_word(letters):
        return None
    short = collapse(letters)
    if short in lex.collapsed or lex.is_word(short):
        return None  # "kiiill" is the normaliser's job; "soooo" is a word
    return lex.typo(letters) or (lex.typo(short) if short != letters else None)


def _masked(raw: str, kinds: list[tuple[str, str]], lex: Lexicon) -> str | None:
    letters = sum(len(f) for k, f in kinds if k == "letter")
    opens = sum(k in ("hard", "soft") for k, _ in kinds)
    if letters < 2 or opens > max(1, letters // 2):
        return None
    if any(k == "soft" for k, _ in kinds):
        parts = re.split(r"[-._]", raw)
        if all(len(p) <= 1 for p in parts):
            return None  # "s.u.i.c.i.d.e": spaced letters, the normaliser joins them
        if all(lex.is_word(normalise(p, collapse=False)) for p in parts if p):
            return None  # "self-harm", "end.my.life": separators between words
    pattern: list[str | frozenset[str]] = []
    for k, f in kinds:
        if k == "letter":
            pattern.extend(f)
        elif k == "digit":
            pattern.append(_DIGITS[f])
        elif k == "il":
            pattern.append(_IL_SET)
        elif k in ("hard", "soft"):
            pattern.append(ANY)
    return lex.masked(pattern)


def repairs(text: str, lex: Lexicon) -> list[Repair]:
    """Every piece of ``text`` that reads as a phrase word only once repaired."""
    out: list[Repair] = []
    words = lex.words
    for m in _CHUNK.finditer(text):
        chunk = m.group()
        if chunk.isascii() and chunk.isalpha():  # the common case: a plain word
            low = chunk.lower()
            if len(low) < 4 or low in words:
                continue
        for start, end, kinds in _pieces(chunk, m.start()):
            raw = text[start:end]
            if all(k in ("letter", "elided") for k, _ in kinds):
                letters = "".join(f for _, f in kinds)
                found = _typo(raw, letters, lex)
                label = "typo"
            else:
                found = _masked(raw, kinds, lex)
                label = "masked" if any(k in ("hard", "soft") for k, _ in kinds) else "leet"
            if found and normalise(raw) != normalise(found):
                out.append(Repair(start, end, found, f"{label} {raw!r}→{found!r}"))
    return out


def apply(text: str, fixes: list[Repair]) -> tuple[str, list[int]]:
    """The repaired text, and for each of its characters the raw index it came from."""
    parts: list[str] = []
    origin: list[int] = []
    at = 0
    for r in fixes:
        parts.append(text[at : r.start])
        origin.extend(range(at, r.start))
        parts.append(r.word)
        width = r.end - r.start
        origin.extend(r.start + min(k, width - 1) for k in range(len(r.word)))
        at = r.end
    parts.append(text[at:])
    origin.extend(range(at, len(text)))
    return "".join(parts), origin
