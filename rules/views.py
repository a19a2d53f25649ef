"""Views of one context for the context layer: the same text read several ways.

Every view is a string plus, for each of its characters, the index in the repaired text it
came from, so a match in any view maps back to the characters the user typed:

* ``base``: the normaliser's output, padded with boundary spaces (what the streaming
  matcher sees);
* ``joined``: adjacent words joined where the join is a phrase word (``hang my self``,
  ``sui cide``);
* ``pronoun``: ``himself``, ``herself``, ``themself``, ``themselves`` (and ``yourself``,
  ``yourselves``, ``urself``) read as ``myself``, for rules that ask for it;
* ``spaced``: every space removed, for phrases of 8+ letters spelled out one letter at a
  time (``e n d m y l i f e``); the caller checks the match is spelled that way.
"""

from __future__ import annotations

from dataclasses import dataclass

from .lexicon import Lexicon, collapse
from .normalise import Normaliser

__all__ = ["PRONOUNS", "Normalised", "View", "base_view", "joined_view", "normalised",
           "pronoun_view", "raw_span", "spaced_view"]  # fmt: skip

#: Pronoun -> "third" or "second" (which ``pronouns`` mode reads it as "myself").
PRONOUNS: dict[str, str] = {
    "himself": "third", "herself": "third", "themself": "third", "themselves": "third",
    "yourself": "second", "yourselves": "second", "urself": "second",
}  # fmt: skip


@dataclass(frozen=True)
class Normalised:
    """The normaliser's output for a whole text, its source map and its words."""

    text: str  # ends with a boundary space unless empty
    src: tuple[int, ...]  # per character: index in the text that was normalised
    tokens: tuple[tuple[int, int], ...]  # (start, end) of each word in ``text``


@dataclass(frozen=True)
class View:
    """One reading of the context. ``notes`` are (start, end, reason) in repaired-text
    indices, for the parts this view changed."""

    name: str
    text: str
    src: tuple[int, ...]  # per character: repaired-text index (-1 = before the text)
    notes: tuple[tuple[int, int, str], ...] = ()
    starts: frozenset[int] = frozenset()  # spaced view: positions that begin a word
    ends: frozenset[int] = frozenset()  # spaced view: positions that end a word
    second_person: tuple[tuple[int, int], ...] = ()  # pronoun view: "yourself" spans


def normalised(text: str) -> Normalised:
    """Run the streaming normaliser over a whole text, keeping its source map."""
    n = Normaliser()
    out = [n.push(ch) for ch in text]
    out.append(n.end())
    norm = "".join(out)
    return Normalised(norm, tuple(n.src), tuple(_spans(norm)))


def _spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each space-separated token of ``text`` (one ending at the text's end
    is left out: the normaliser always closes a context with a boundary space)."""
    spans, start = [], -1
    for i, c in enumerate(text):
        if c == " ":
            if start >= 0:
                spans.append((start, i))
            start = -1
        elif start < 0:
            start = i
    return spans


def base_view(norm: Normalised) -> View:
    """The normaliser's reading, padded with a boundary space at the start."""
    return View("base", " " + norm.text, (-1, *norm.src))


def _assemble(name: str, words: list[tuple[str, list[int], int]],
              notes: list[tuple[int, int, str]]) -> View:
    """A padded view from (word, source per letter, source of the boundary after it)."""
    text, src = [" "], [-1]
    for w, ws, end in words:
        text.append(w + " ")
        src.extend(ws)
        src.append(end)
    return View(name, "".join(text), tuple(src), tuple(notes))


def _join(a: str, b: str) -> str:
    """Two collapsed words run together, collapsed ("sui" + "icide" -> "suicide")."""
    return a + b[1:] if a and b and a[-1] == b[0] and b[0].isalpha() else a + b


def joined_view(norm: Normalised, lex: Lexicon, raw: str) -> View | None:
    """Join 2-3 adjacent words when the join is a phrase word; None if nothing joins."""
    toks = [norm.text[s:e] for s, e in norm.tokens]
    known = lex.collapsed
    if not any((ab := _join(a, b)) in known or (c and _join(ab, c) in known)
               for a, b, c in zip(toks, toks[1:], [*toks[2:], ""], strict=False)):
        return None  # the common case: nothing joins
    words = [(norm.text[s:e], list(norm.src[s:e]), norm.src[e]) for s, e in norm.tokens]
    out: list[tuple[str, list[int], int]] = []
    notes: list[tuple[int, int, str]] = []
    i = 0
    while i < len(words):
        for span in (3, 2):
            group = words[i : i + span]
            joined = collapse("".join(w for w, _, _ in group))
            if len(group) == span and joined in lex.collapsed:
                src: list[int] = []
                prev = ""
                for w, ws, _ in group:
                    for c, at in zip(w, ws, strict=True):
                        if c != prev or not c.isalpha():
                            src.append(at)
                        prev = c
                out.append((joined, src, group[-1][2]))
                lo, hi = group[0][1][0], group[-1][1][-1]
                notes.append((lo, hi, f"joined {raw_span(raw, lo, hi)!r}→{joined!r}"))
                i += span
                break
        else:
            out.append(words[i])
            i += 1
    return _assemble("joined", out, notes) if notes else None


def raw_span(text: str, lo: int, hi: int) -> str:
    """``text[lo:hi+1]``, clamped to the text."""
    return text[max(0, lo) : max(0, hi) + 1]


def pronoun_view(view: View, raw: str) -> View | None:
    """``view`` with other reflexive pronouns read as "myself"; None if there are none.
    ``second_person`` lists the spans that were "yourself" and the like."""
    words: list[tuple[str, list[int], int]] = []
    text, src = view.text, view.src
    spans = _spans(text)
    notes = list(view.notes)
    second: list[tuple[int, int]] = []
    changed = False
    for s, e in spans:
        w, ws = text[s:e], list(src[s:e])
        kind = PRONOUNS.get(w)
        if kind is not None:
            changed = True
            spread = [ws[min(len(ws) - 1, k * len(ws) // 6)] for k in range(6)]
            notes.append((ws[0], ws[-1], f"pronoun {raw_span(raw, ws[0], ws[-1])!r} read as "
                          "'myself'"))
            if kind == "second":
                second.append((ws[0], ws[-1]))
            w, ws = "myself", spread
        words.append((w, ws, src[e]))
    if not changed:
        return None
    view = _assemble("pronoun", words, notes)
    return View(view.name, view.text, view.src, view.notes, second_person=tuple(second))


def spaced_view(norm: Normalised) -> View:
    """The words run together with every space removed. A phrase spelled out letter by letter
    is one word to the normaliser ("e n d m y l i f e" -> "endmylife")."""
    text: list[str] = []
    src: list[int] = []
    starts: set[int] = set()
    ends: set[int] = set()
    for s, e in norm.tokens:  # words are already collapsed; never collapse across them
        starts.add(len(src))
        text.append(norm.text[s:e])
        src.extend(norm.src[s:e])
        ends.add(len(src) - 1)
    return View("spaced", "".join(text), tuple(src), (), frozenset(starts), frozenset(ends))
