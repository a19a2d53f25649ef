"""The text normaliser: what the matcher actually compares.

Raw text is folded one character at a time (NFKC, casefold, accents dropped, look-alike
letters and ``$ @ €`` mapped, apostrophes and invisible characters elided, anything else a
separator) and then run through a small state machine that

* collapses runs of separators into one space (``"kill   me"`` -> ``"kil me"``),
* collapses repeated letters (``"diiiie"`` -> ``"die"``, ``"kill"`` -> ``"kil"``),
* reads digits between letters as leetspeak (``"k1ll"``, ``"w33d"``) but keeps other digits
  as digits (``"1488"``, ``"bet365"``, ``"900k"``),
* joins runs of single-character tokens (``"k i l l"``, ``"s.u.i.c.i.d.e"`` -> one word).

Phrases go through exactly the same machine, so "the same" means the same on both sides.
The machine is streaming and its state is a small tuple, so the matcher can snapshot it per
keystroke and undo a backspace. ``normalise(text, collapse=False)`` keeps the repeats that
matching ignores, so a candidate hit can be checked against them (rules/confirm.py).
"""

from __future__ import annotations

import unicodedata

__all__ = ["Normaliser", "fold", "normalise", "phrase_key"]

# Leetspeak and look-alike letters (Cyrillic/Greek homoglyphs, written as escapes so the
# source stays readable). Applied after casefold.
_LEET = {
    "$": "s", "@": "a", "\u20ac": "e",
    "\u0430": "a", "\u0435": "e", "\u043e": "o", "\u0440": "p", "\u0441": "c",
    "\u0443": "y", "\u0445": "x", "\u0456": "i", "\u0458": "j", "\u0455": "s",
    "\u0501": "d", "\u0261": "g", "\u03b1": "a", "\u03bf": "o", "\u03b9": "i",
    "\u03ba": "k", "\u03bd": "v", "\u03c4": "t", "\u03b5": "e",
}  # fmt: skip
# Digits are letters inside a word ("k1ll", "w33d") but stay digits in an all-digit token
# ("1488" is not "148"); the machine decides, so fold() leaves them alone.
_DIGIT_LEET = {"0": "o", "1": "i", "2": "z", "3": "e", "4": "a", "5": "s", "6": "b", "7": "t",
               "8": "b", "9": "g"}  # fmt: skip
# Elided inside words: apostrophes (don't == dont), invisible joiners, soft hyphen.
_ELIDE = frozenset("'`\u2018\u2019\u00b4\u00ad\u200b\u200c\u200d\u2060\ufeff")
_CACHE: dict[str, str] = {}
_CACHE_MAX = 20_000


def _fold_uncached(ch: str) -> str:
    out: list[str] = []
    text = unicodedata.normalize("NFKC", ch).casefold()
    for c in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(c):
            continue
        c = _LEET.get(c, c)
        if c in _ELIDE or unicodedata.category(c) == "Cf":
            continue
        if c.isalnum():
            out.append(c)
        elif out and out[-1] in " .":  # one separator; whitespace beats punctuation
            out[-1] = " " if c.isspace() else out[-1]
        else:
            out.append(" " if c.isspace() else ".")
    return "".join(out)


def fold(ch: str) -> str:
    """Fold one raw character to zero or more normalised characters: letters, ``" "``
    (whitespace) or ``"."`` (any other separator)."""
    got = _CACHE.get(ch)
    if got is None:
        got = _fold_uncached(ch)
        if len(_CACHE) < _CACHE_MAX:
            _CACHE[ch] = got
    return got


# Machine modes.
_SPACE, _WORD, _HOLD, _PLUS, _DIGITS, _WDIGITS = 0, 1, 2, 3, 4, 5  # _WDIGITS: after letters

Snapshot = tuple[int, str, int, str, int, int, int, str, str, str, tuple[int, ...]]


class Normaliser:
    """Streaming normaliser. ``push`` one raw character, get the normalised characters it
    releases; ``src[k]`` is the raw index that produced released character ``k``.

    Two things are held back until the token shows what it is, so output can lag input by
    one token: a single-character token (joined with the next one if that is single too: a
    run of joined characters keeps one kind of separator, so "k.i.l.l m.e" is "kil me" while
    "k i l l" is "kil"), and digits. Digits are leetspeak only between letters ("k1ll",
    "w33d"); otherwise they stay digits, uncollapsed ("1488" is not "148", "bet365",
    "900k"), except a lone digit, which is a single character like any other ("k 1 l l").
    """

    __slots__ = ("collapse", "dbuf", "didx", "gap", "held", "held_at", "last", "mode", "n", "run",
                 "src", "toklen")  # fmt: skip

    def __init__(self, collapse: bool = True) -> None:
        self.src: list[int] = []
        self.collapse = collapse  # False only for letter_runs(): keeps "gg" in "nigger"
        self.reset()

    def reset(self) -> None:
        """Start a new context (the caller treats the start as a word boundary)."""
        self.mode, self.last, self.toklen = _SPACE, " ", 0
        self.held, self.held_at, self.n = "", -1, 0
        self.gap, self.run, self.dbuf = "", "", ""
        self.didx: tuple[int, ...] = ()
        self.src.clear()

    def snapshot(self) -> Snapshot:
        """The whole state, as a tuple (cheap to keep one per keystroke)."""
        return (self.mode, self.last, self.toklen, self.held, self.held_at, self.n,
                len(self.src), self.gap, self.run, self.dbuf, self.didx)

    def restore(self, snap: Snapshot) -> None:
        """Go back to a state returned by :meth:`snapshot` (truncates ``src``)."""
        (self.mode, self.last, self.toklen, self.held, self.held_at, self.n, cut, self.gap,
         self.run, self.dbuf, self.didx) = snap
        del self.src[cut:]

    def push(self, ch: str) -> str:
        """Consume one raw character; return the normalised characters released by it."""
        i = self.n
        self.n = i + 1
        folded = _CACHE.get(ch)
        if folded is None:
            folded = fold(ch)
        if len(folded) == 1 and self.mode == _WORD and folded > "9" and self.collapse:
            # Fast path: another letter inside a word (letters sort after digits, " ", ".").
            if folded == self.last:
                return ""
            self.last = folded
            self.toklen = 2
            self.src.append(i)
            return folded
        return "".join([self._step(c, i) for c in folded])

    def end(self) -> str:
        """Flush at the end of a context: release held text and a closing boundary."""
        out = self._step(" ", self.n)
        if self.mode != _SPACE:
            out += self._emit(" ", self.n)
        self.mode, self.toklen, self.run = _SPACE, 0, ""
        return out

    def _emit(self, c: str, i: int) -> str:
        if c == self.last and (self.collapse or c == " "):
            return ""
        self.last = c
        self.src.append(i)
        return c

    def _single(self) -> str:
        """The held token turned out to be one character: join the run, or start one."""
        held = _DIGIT_LEET.get(self.held, self.held)
        if self.run in ("", self.gap):
            self.run = self.gap
            return self._emit(held, self.held_at)
        self.run = ""
        return self._emit(" ", self.held_at) + self._emit(held, self.held_at)

    def _literal(self) -> str:
        """Release the buffered digits as digits (uncollapsed); the token continues."""
        digits, idx = self.dbuf, self.didx
        self.dbuf, self.didx = "", ()
        self.src.extend(idx)
        self.last, self.mode, self.toklen = digits[-1], _WORD, 2
        return digits

    def _step(self, c: str, i: int) -> str:
        mode = self.mode
        if "0" <= c <= "9":
            if mode in (_SPACE, _DIGITS, _WDIGITS):  # start or extend a run of digits
                self.mode = _DIGITS if mode == _SPACE else mode
                self.dbuf, self.didx = self.dbuf + c, (*self.didx, i)
                return ""
            if mode == _WORD:  # digits after letters: leetspeak if a letter follows
                self.mode, self.dbuf, self.didx = _WDIGITS, c, (i,)
                return ""
            if mode == _HOLD:
                self.mode, self.held, self.held_at = _PLUS, c, i
                return ""
            # _PLUS: the held character starts a token of 2+ characters
            out = self._emit(" ", self.held_at)
            self.run = ""
            if "0" <= self.held <= "9":
                self.mode, self.dbuf, self.didx = _DIGITS, self.held + c, (self.held_at, i)
                return out
            out += self._emit(self.held, self.held_at)
            self.mode, self.toklen, self.dbuf, self.didx = _WDIGITS, 2, c, (i,)
            return out
        if c > "9":  # a letter
            if mode == _WDIGITS:  # letter, digits, letter: the digits are leetspeak
                digits, idx = self.dbuf, self.didx
                self.mode, self.dbuf, self.didx = _WORD, "", ()
                out = "".join([self._emit(_DIGIT_LEET[d], j) for d, j in zip(digits, idx,
                                                                               strict=True)])
                return out + self._emit(c, i)
            if mode == _DIGITS:  # "900k", "4chan": a number with a unit, not leetspeak
                return self._literal() + self._emit(c, i)
            if mode == _SPACE:
                self.mode, self.toklen = _WORD, 1
                return self._emit(c, i)
            if mode == _WORD:
                out = self._emit(c, i)
                if out:
                    self.toklen = 2
                return out
            if mode == _HOLD:
                self.mode, self.held, self.held_at = _PLUS, c, i
                return ""
            if c == self.held:  # _PLUS, a repeated letter: still one character
                return ""
            self.mode, self.toklen, self.run = _WORD, 2, ""
            out = self._emit(" ", self.held_at)
            if "0" <= self.held <= "9":  # "4u" after a single token: digit-led, literal
                self.src.append(self.held_at)
                self.last = self.held
                return out + self.held + self._emit(c, i)
            return out + self._emit(self.held, self.held_at) + self._emit(c, i)
        # a separator: " " (whitespace) or "." (punctuation)
        if mode == _WDIGITS or (mode == _DIGITS and len(self.dbuf) > 1):
            return self._literal() + self._step(c, i)  # "bet365", "1488": digits stay digits
        if mode == _DIGITS:  # a one-digit token behaves like any single character
            d, j = self.dbuf, self.didx[0]
            self.dbuf, self.didx, self.mode, self.toklen = "", (), _WORD, 1
            return self._emit(_DIGIT_LEET[d], j) + self._step(c, i)
        if mode == _WORD:
            if self.toklen == 1:
                self.mode, self.gap, self.run = _HOLD, c, ""
                return ""
            self.mode = _SPACE
            return self._emit(" ", i)
        if mode == _HOLD:
            if c == " ":
                self.gap = " "
            return ""
        if mode == _PLUS:
            out = self._single()
            self.mode, self.gap = _HOLD, c
            return out
        return ""


def normalise(text: str, collapse: bool = True) -> str:
    """Normalise a whole string (as the matcher sees it), without the boundary spaces.
    ``collapse=False`` keeps repeated letters (used to compare repeats, not to match)."""
    n = Normaliser(collapse)
    out = [n.push(ch) for ch in text]
    out.append(n.end())
    return "".join(out).strip()


def phrase_key(phrase: str) -> str:
    """The automaton key for a phrase: normalised, space-padded; ``*`` suffix = prefix."""
    prefix = phrase.endswith("*")
    core = normalise(phrase[:-1] if prefix else phrase)
    return " " + core + ("" if prefix else " ")
