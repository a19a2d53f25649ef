"""The streaming matcher: keystrokes in, hits out.

Each raw character goes through the :class:`~rules.normalise.Normaliser`; every normalised
character it releases steps the :class:`~rules.automaton.CompactAutomaton`. Before each
character we push a snapshot ``(normaliser state, automaton state)``, so ``backspace`` is a
pop.

Keys are padded with spaces (``" kil "``), so a hit needs a word boundary on both sides and
completes when the boundary after it arrives (the next separator, or ``reset``). A phrase
ending in ``*`` is a prefix and completes on its last letter.

Exclusions ("kill the process" cancels "kill") are keys too. A hit of a rule that has
exclusions is held until the stream has moved on by the length of that rule's longest
exclusion (normalised characters), or until ``reset``; an exclusion that overlaps it in the
meantime cancels it. That is the only added latency: at most one exclusion's length of typing,
and the agent resets on Enter, focus change and idle anyway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .confirm import enough_repeats, match_kind
from .model import Hit
from .normalise import _CACHE as _FOLDED
from .normalise import _SPACE, _WORD, Normaliser, fold

if TYPE_CHECKING:
    from .ruleset import _Index

__all__ = ["StreamMatcher"]

_NEWLINES = frozenset("\n\r")
_NOT_LETTER = frozenset({"", " ", "."})
# raw character -> its one-character fold, for keys that may take a fast path (no newlines)
_SIMPLE: dict[str, str] = {}
_Short = tuple[str, int, int, int]  # undo record: last, toklen, len(src), automaton state
# full undo record: Normaliser.snapshot() + automaton state
_Full = tuple[int, str, int, str, int, int, int, str, str, str, tuple[int, ...], int]


class StreamMatcher:
    """Match one stream of characters (one text field, one window title...) against rules.

    Not thread-safe: one matcher per stream. ``feed``/``reset`` return hits completed so far;
    hits found while undoing text (a phrase typed then deleted still counts) are returned by
    the next ``feed`` or ``reset``. A newline in ``feed`` acts as ``reset``.
    """

    def __init__(self, index: _Index, allowed: tuple[bool, ...], context_chars: int = 120) -> None:
        if context_chars < 1:
            raise ValueError("context_chars must be at least 1")
        self._ix, self._allowed, self._ctx = index, allowed, context_chars
        self._aut = index.automaton
        self._down, self._more = self._aut.down, self._aut.more
        self._root = {c: self._aut.step(0, c) for c in self._aut.children(0)}  # root's edges
        self._fail, self._out, self._final = self._aut.fail, self._aut.out, self._aut.final
        self._norm = Normaliser()
        self._ac = self._aut.start
        self._raw: list[str] = []
        # per raw character: the normaliser snapshot before it, plus the automaton state
        # (a short 4-tuple for a letter inside a word, see feed)
        self._snaps: list[_Short | _Full] = []
        self._pending: list[tuple[int, int, int, str, int, str]] = []
        self._excl: list[tuple[int, int, int]] = []
        self._spans: list[tuple[int, int, int]] = []  # hits already taken, per rule
        self._carry: list[Hit] = []
        self._max_raw = max(4096, 8 * context_chars)
        # characters carried over a split: enough for the longest key, even spread out
        self._tail = min(self._max_raw // 2, max(context_chars, 4 * max(index.key_lengths,
                                                                        default=0)))

    def feed(self, ch: str) -> list[Hit]:
        """Consume one typed character; return the hits completed so far."""
        # Fast paths for the common keys (a letter in or starting a word, a separator after
        # a word) inline Normaliser.push and CompactAutomaton.step up to its first failure
        # link: keep them in step with those.
        f = _SIMPLE.get(ch)
        if f is None:
            return self._feed_slow(ch)
        norm = self._norm
        mode, src, n, ac = norm.mode, norm.src, norm.n, self._ac
        if mode == _WORD and f > "9":  # a letter in a word (" ", "." and digits sort first)
            last = norm.last
            self._snaps.append((last, norm.toklen, len(src), ac))  # short undo record
            self._raw.append(ch)
            norm.n = n + 1
            if f == last:  # repeated letter: nothing new for the automaton
                if self._carry:
                    hits, self._carry = self._carry, []
                    return hits
                return []
            norm.last, norm.toklen = f, 2
        elif (mode == _SPACE and f > "9") or (
            mode == _WORD and f <= "." and norm.toklen == 2 and len(self._raw) < self._max_raw
        ):
            self._snaps.append((mode, norm.last, norm.toklen, norm.held, norm.held_at, n,
                                len(src), norm.gap, norm.run, norm.dbuf, norm.didx, ac))
            self._raw.append(ch)
            norm.n = n + 1
            if mode == _SPACE:  # first letter of a word
                norm.mode, norm.last, norm.toklen = _WORD, f, 1
            else:  # a separator ends a word of 2+ letters: one boundary space
                norm.mode, norm.last = _SPACE, " "
                f = " "
        else:
            return self._feed_slow(ch)
        src.append(n)
        if not ac:  # the root (where most words that start no phrase leave the automaton)
            nxt = self._root.get(f, 0)
        elif self._down[ac] == f:  # the first child of state s is s + 1
            nxt = ac + 1
        else:  # a further child, else on from the failure link
            row = self._more.get(ac)
            nxt = -1 if row is None else row.get(f, -1)
            if nxt < 0:
                back = self._fail[ac]
                nxt = self._aut.step(back, f) if back else self._root.get(f, 0)
        self._ac = nxt
        if not self._final[nxt] and not self._pending and not self._carry:
            return []
        hits, self._carry = self._carry, []
        found = self._out.get(nxt)
        if found is not None:
            self._found(found, len(src) - 1, hits)
        if self._pending:
            self._release(len(src), hits)
        return hits

    def _feed_slow(self, ch: str) -> list[Hit]:
        if ch in _NEWLINES:
            return self.reset()
        norm = self._norm
        self._snaps.append((*norm.snapshot(), self._ac))
        self._raw.append(ch)
        out = norm.push(ch)
        f = _FOLDED.get(ch)
        if f is not None and len(f) == 1 and len(_SIMPLE) < 20_000:
            _SIMPLE[ch] = f
        hits, self._carry = self._carry, []
        if out:
            step, table, ac = self._aut.step, self._out, self._ac
            base = len(norm.src) - len(out)
            for k, c in enumerate(out):
                ac = step(ac, c)
                found = table.get(ac)
                if found is not None:
                    self._found(found, base + k, hits)
            self._ac = ac
            if self._pending:
                self._release(len(norm.src), hits)
            if len(self._raw) >= self._max_raw and out[-1] == " ":
                hits += self._split()  # bound memory: a very long context is split here
        return hits

    def _split(self) -> list[Hit]:
        """End an over-long context at this boundary but carry its tail into the next one,
        so a phrase that straddles the cut (or follows one giant token) still matches."""
        raw = self._raw
        tail = raw[-self._tail :]
        cut = next((i for i, c in enumerate(tail) if fold(c) in (" ", ".")), len(tail))
        tail = tail[cut:]  # start at a separator: never inside a word
        hits = self.reset()
        for ch in tail:  # every phrase complete inside the tail was found before the cut
            self.feed(ch)
        self._pending.clear()
        self._carry.clear()
        return hits

    def backspace(self) -> None:
        """Remove the last character. A phrase that was complete before it still counts."""
        if not self._raw:
            return
        norm, ac, snap = self._norm, self._ac, self._norm.snapshot()
        out = norm.end()  # would the text as it stands complete a phrase?
        base = len(norm.src) - len(out)
        for k, c in enumerate(out):
            ac = self._aut.step(ac, c)
            found = self._out.get(ac)
            if found is not None:
                self._found(found, base + k, self._carry)
        norm.restore(snap)
        prev = self._snaps.pop()
        self._raw.pop()
        if len(prev) == 4:  # short record from the letter-in-a-word fast path
            norm.last, norm.toklen, cut, self._ac = prev
            del norm.src[cut:]
            norm.n -= 1
        else:
            norm.restore(prev[:11])
            self._ac = prev[11]

    def reset(self) -> list[Hit]:
        """End the context (Enter, focus change, idle): flush pending hits, clear all state."""
        hits, self._carry = self._carry, []
        norm, ac = self._norm, self._ac
        out = norm.end()
        base = len(norm.src) - len(out)
        for k, c in enumerate(out):
            ac = self._aut.step(ac, c)
            found = self._out.get(ac)
            if found is not None:
                self._found(found, base + k, hits)
        self._release(None, hits)
        norm.reset()
        self._ac = self._aut.start
        self._raw.clear()
        self._snaps.clear()
        self._excl.clear()
        self._spans.clear()
        return hits

    def scan(self, text: str) -> list[Hit]:
        """Match a whole text as one context (window titles, file names): reset, feed, reset."""
        hits = self.reset()
        for ch in text:
            hits += self.feed(ch)
        hits += self.reset()
        return hits

    # -- internals -----------------------------------------------------------------------

    def _found(self, keys: tuple[int, ...], pos: int, hits: list[Hit]) -> None:
        src, raw, allowed = self._norm.src, self._raw, self._allowed
        for key in keys:
            klen = self._ix.key_lengths[key]
            start = src[pos - klen + 2]
            for is_excl, ri, phrase, whole in self._ix.entries[key]:
                if not allowed[ri]:
                    continue
                end = src[pos] - 1 if whole else src[pos]  # before the boundary's raw char
                while end > start and fold(raw[end]) in _NOT_LETTER:
                    end -= 1
                if is_excl:
                    self._excl.append((ri, start, end))
                    continue
                if any(r == ri and s <= end and start <= e for r, s, e in self._spans):
                    continue  # the same rule already hit overlapping text in this context
                if not enough_repeats("".join(raw[start : end + 1]), phrase):
                    continue  # "Niger" is not "nigger", "wed" is not "weed"
                self._spans.append((ri, start, end))
                match = "".join(raw[start : end + 1])
                hold = self._ix.max_exclusion[ri]
                if hold:
                    self._pending.append((ri, start, end, phrase, pos + hold, match))
                else:
                    hits.append(self._hit(ri, start, end, phrase, match))

    def _release(self, upto: int | None, hits: list[Hit]) -> None:
        keep = []
        for item in self._pending:
            ri, start, end, phrase, due, match = item
            if any(r == ri and s <= end and start <= e for r, s, e in self._excl):
                continue  # an exclusion overlapped it: cancelled
            if upto is None or upto > due:
                hits.append(self._hit(ri, start, end, phrase, match))
            else:
                keep.append(item)
        self._pending = keep

    def _hit(self, ri: int, start: int, end: int, phrase: str, match: str) -> Hit:
        raw, n = self._raw, self._ctx
        if "".join(raw[start : end + 1]) == match:  # still on screen: centre a window on it
            room = max(0, n - len(match))
            after = "".join(raw[end + 1 : end + 1 + room // 2])
            before = "".join(raw[max(0, start - (room - len(after))) : start])
            context = (before + match + after)[:n]
        else:
            context = match[:n]
        return Hit(rule=self._ix.rules[ri], match=match, context=context,
                   match_kind=match_kind(match, phrase))
