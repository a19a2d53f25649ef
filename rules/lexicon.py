"""The words the context layer reasons about: real words (never a typo) and phrase words.

The real-word list is rules/data/words.toml (built by rules/tools/build_wordlist.py from
wordfreq's top 60,000 English words, the top 10,000 Polish and Romanian words and a hand list
of Welsh). Phrase words are the words of a rule set's phrases, weights, combos and exclusions.

Two lookups read an obfuscated token as a phrase word, and nothing else:

* :meth:`Lexicon.masked`: a pattern with some positions open (``s*icide``, ``k!ll``,
  ``4n0rexia``) against phrase words of the same length;
* :meth:`Lexicon.typo`: an unknown word within edit distance 1 (phrase words of 5-8
  letters) or 2 (9+ letters) of a phrase word with the same first letter, through a
  deletion index (SymSpell's idea), so one lookup costs a few dict probes.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

__all__ = ["ANY", "DEFAULT_WORDS", "Lexicon", "collapse", "distance", "load_words", "max_typos"]

DEFAULT_WORDS: Path = Path(__file__).resolve().parent / "data" / "words.toml"

#: Open position in a mask pattern: any letter.
ANY: frozenset[str] = frozenset()


@lru_cache(maxsize=4)
def load_words(path: Path = DEFAULT_WORDS) -> frozenset[str]:
    """Every real word in the word list file (folded: lower case a-z, no apostrophes)."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
        lists = doc["words"]
        return frozenset(w for text in lists.values() for w in text.split())
    except (OSError, ValueError, KeyError, AttributeError) as e:
        raise RuntimeError(f"cannot read the word list {path} ({e}): reinstall Vigil, or "
                           "rebuild it with `python -m rules.tools.build_wordlist`") from None


_REPEATS = re.compile(r"([^\W\d_])\1+")


def collapse(word: str) -> str:
    """Repeated letters once ("kiiill" -> "kil"), as the matcher compares them; digits
    stay as they are ("1488")."""
    return _REPEATS.sub(r"\1", word)


def max_typos(word: str) -> int:
    """Edits tolerated in a phrase word: 0 below 5 letters, 1 for 5-8, 2 for 9+."""
    n = len(word)
    return 0 if n < 5 else 1 if n < 9 else 2


def _deletes(word: str, k: int) -> set[str]:
    """``word`` with up to ``k`` letters deleted (never down to nothing)."""
    out, layer = {word}, {word}
    for _ in range(k):
        layer = {w[:i] + w[i + 1 :] for w in layer if len(w) > 2 for i in range(len(w))}
        out |= layer
    return out


def distance(a: str, b: str, cap: int = 3) -> int:
    """Optimal string alignment distance (a swap of two neighbours is one edit), capped."""
    if abs(len(a) - len(b)) >= cap:
        return cap
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) >= cap:
            return cap
        prev2, prev = prev, cur
    return min(prev[-1], cap)


class Lexicon:
    """Phrase words (with how many terms use each) plus the real-word list. Immutable."""

    def __init__(self, phrase_words: Iterable[str], words: frozenset[str]) -> None:
        counts: dict[str, int] = {}
        for w in phrase_words:
            if w.isascii() and w.isalpha() and len(w) >= 2:
                counts[w] = counts.get(w, 0) + 1
        self.counts = counts
        self.collapsed = frozenset(collapse(w) for w in counts)
        self.words = words
        by_len: dict[int, list[str]] = {}
        self._deleted: dict[str, list[str]] = {}
        for w in sorted(counts):
            by_len.setdefault(len(w), []).append(w)
            for d in _deletes(w, max_typos(w)):
                self._deleted.setdefault(d, []).append(w)
        # one string per length, one word a line: a pattern is one regex search over it
        self._by_len = {n: "\n".join(ws) + "\n" for n, ws in by_len.items()}

    def is_word(self, w: str) -> bool:
        """A real word or a phrase word: never read as something else."""
        return w in self.words or w in self.counts

    def _best(self, found: Iterable[tuple[int, str]]) -> str | None:
        ranked = sorted(found, key=lambda dw: (dw[0], -self.counts[dw[1]], dw[1]))
        return ranked[0][1] if ranked else None

    def masked(self, pattern: Sequence[str | frozenset[str]]) -> str | None:
        """The phrase word that fits ``pattern`` (a letter, :data:`ANY`, or a set of letters
        per position), preferring the one most terms use; None if no word fits."""
        blob = self._by_len.get(len(pattern))
        if blob is None:
            return None
        regex = "".join(re.escape(p) if isinstance(p, str)
                        else "[a-z]" if not p else "[" + "".join(sorted(p)) + "]"
                        for p in pattern)
        fits = re.findall(f"^{regex}$", blob, re.MULTILINE)
        return self._best((0, w) for w in fits)

    def typo(self, token: str) -> str | None:
        """The phrase word ``token`` is a typo of, or None. Real words and phrase words are
        never typos, and the first letter must agree ("sucide" -> "suicide")."""
        if not 4 <= len(token) <= 24 or self.is_word(token):
            return None
        found = set()
        for d in _deletes(token, 2 if len(token) >= 7 else 1):
            for w in self._deleted.get(d, ()):
                if w[0] == token[0]:
                    found.add(w)
        return self._best((dist, w) for w in found
                          if (dist := distance(token, w)) <= max_typos(w))
