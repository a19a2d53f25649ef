"""Aho-Corasick automata whose state is a plain int, so it can be snapshotted per keystroke.

pyahocorasick streams (``iter('')`` then ``set(chunk)``) but cannot undo a character, and the
matcher must undo backspaces. Two layouts of the same automaton:

* :class:`CompactAutomaton` (the streaming matcher's): the trie in depth-first order, one
  character per state for the first child, dicts only where the trie branches, failure
  links in an array. About 0.37 KB per phrase (3.4 KB before) and nothing built lazily, so
  its speed does not depend on what has been typed before (unseen text, a fresh rule set).
* :class:`Automaton` (the context layer's): one dict per state into which failure
  transitions are memoised the first time they are taken, so after warm-up one step is one
  dict lookup (a lazily built DFA), at several KB per key. Memoising is idempotent, so
  sharing one automaton between threads is safe under the GIL.
"""

from __future__ import annotations

from array import array
from collections import deque

__all__ = ["Automaton", "CompactAutomaton"]


class Automaton:
    """Match many keys at once. ``out[state]`` lists the key indices ending at ``state``."""

    __slots__ = ("delta", "depth", "fail", "keys", "out", "start")

    def __init__(self, keys: list[str]) -> None:
        self.keys = tuple(keys)
        delta: list[dict[str, int]] = [{}]
        depth = [0]
        own: list[list[int]] = [[]]
        for k, key in enumerate(self.keys):
            s = 0
            for c in key:
                nxt = delta[s].get(c)
                if nxt is None:
                    nxt = len(delta)
                    delta[s][c] = nxt
                    delta.append({})
                    depth.append(depth[s] + 1)
                    own.append([])
                s = nxt
            own[s].append(k)
        fail = [0] * len(delta)
        out: list[tuple[int, ...] | None] = [None] * len(delta)
        queue: deque[int] = deque()
        for child in delta[0].values():
            queue.append(child)
            out[child] = tuple(own[child]) or None
        while queue:
            s = queue.popleft()
            for c, child in delta[s].items():
                f = fail[s]
                while f and c not in delta[f]:
                    f = fail[f]
                fail[child] = delta[f].get(c, 0) if delta[f].get(c, 0) != child else 0
                merged = tuple(own[child]) + (out[fail[child]] or ())
                out[child] = merged or None
                queue.append(child)
        self.delta, self.fail, self.out, self.depth = delta, fail, out, depth
        self.start = self.step(0, " ")

    def step(self, s: int, c: str) -> int:
        """The state after reading ``c`` in state ``s`` (memoised)."""
        row = self.delta[s]
        nxt = row.get(c)
        if nxt is not None:
            return nxt
        f = s
        while True:
            if f == 0:
                nxt = self.delta[0].get(c, 0)
                break
            f = self.fail[f]
            got = self.delta[f].get(c)
            if got is not None:
                nxt = got
                break
        row[c] = nxt
        return nxt

    @property
    def states(self) -> int:
        """Number of trie states (a proxy for memory)."""
        return len(self.delta)


class CompactAutomaton:
    """The same matching as :class:`Automaton` in a fraction of the memory, with nothing
    built lazily: as fast on text it has never seen, or just after a rules update, as on
    text it has. ``out`` maps a state to the key indices ending there (states with none
    are absent); ``final[s]`` is 1 where ``out`` has ``s``, a cheaper test.

    States are numbered in depth-first order over the sorted keys, so a state's first child
    is the next state: ``down[s]`` (one string, a character per state) is that child's
    character, or ``leaf``, a character no key holds, and ``more`` maps a state with further
    children to their characters and states. A step that misses follows the failure links
    (``fail``, an array), at most one hop per character on average. Nothing is mutated after
    ``__init__``, so threads and matchers share it freely.
    """

    __slots__ = ("down", "fail", "final", "leaf", "more", "out", "start", "states")

    def __init__(self, keys: list[str]) -> None:
        down: list[str | None] = [None]  # frozen into a string below
        more: dict[int, dict[str, int]] = {}
        own: dict[int, tuple[int, ...]] = {}
        path = [0]  # path[d]: the state at depth d on the previous key's path
        prev = ""
        for k in sorted(range(len(keys)), key=keys.__getitem__):
            key = keys[k]
            d = 0  # the states of the prefix shared with the previous key already exist
            for a, b in zip(key, prev, strict=False):
                if a != b:
                    break
                d += 1
            del path[d + 1 :]
            s = path[d]
            for c in key[d:]:
                t = len(down)
                if down[s] is None:
                    down[s] = c  # the first child of s is always s + 1 (depth-first order)
                else:
                    more.setdefault(s, {})[c] = t
                down.append(None)
                path.append(t)
                s = t
            if s:
                own[s] = (*own.get(s, ()), k)  # equal keys sort by index: ascending
            prev = key
        self.leaf = leaf = _unused(keys)
        self.down = "".join([leaf if c is None else c for c in down])
        self.more, self.states = more, len(down)
        self.fail = fail = array("I", bytes(4 * len(down)))
        # Failure links and outputs level by level (breadth first): a state's depends only
        # on shallower states. Levels are arrays, so building allocates few small objects.
        out: dict[int, tuple[int, ...]] = {}
        step, level = self.step, array("I", [0])
        while level:
            below = array("I")
            for s in level:
                first = down[s]
                if first is None:
                    continue
                row = more.get(s)
                for c, t in ((first, s + 1), *row.items()) if row else ((first, s + 1),):
                    f = step(fail[s], c) if s else 0
                    fail[t] = f
                    mine, inherited = own.get(t), out.get(f)
                    if mine is not None:
                        out[t] = mine + inherited if inherited else mine
                    elif inherited is not None:
                        out[t] = inherited  # shared, not copied
                    below.append(t)
            level = below
        del down
        self.out = out
        self.final = bytearray(len(self.down))
        for t in out:
            self.final[t] = 1
        self.start = self.step(0, " ")

    def children(self, s: int) -> str:
        """The characters of the edges out of state ``s``."""
        first = self.down[s]
        return "" if first == self.leaf else first + "".join(self.more.get(s, ()))

    def step(self, s: int, c: str) -> int:
        """The state after reading ``c`` in state ``s``."""
        down, more, fail = self.down, self.more, self.fail
        if c == self.leaf:  # in no key: no edge anywhere (and a leaf's down[s] is not one)
            return 0
        while True:
            if down[s] == c:
                return s + 1
            row = more.get(s)
            if row is not None:
                nxt = row.get(c)
                if nxt is not None:
                    return nxt
            if not s:
                return 0
            s = fail[s]


def _unused(keys: list[str]) -> str:
    """A character in no key, and never a letter, digit, space or "." (what the normaliser
    emits), to mark leaves in ``CompactAutomaton.down``."""
    used = set("".join(keys))
    for code in (*range(32), *range(0xD800, 0xE000)):  # control characters, surrogates
        if chr(code) not in used:
            return chr(code)
    raise ValueError("keys use every control character and surrogate")
