"""An Aho-Corasick automaton whose state is a plain int, so it can be snapshotted per keystroke.

pyahocorasick streams (``iter('')`` then ``set(chunk)``) but cannot undo a character, and the
matcher must undo backspaces. This automaton keeps the trie's goto edges in one dict per
state and memoises failure transitions into those dicts the first time they are taken, so
after warm-up one step is one dict lookup (a lazily built DFA). Memoising is idempotent, so
sharing one automaton between threads and matchers is safe under the GIL.
"""

from __future__ import annotations

from collections import deque

__all__ = ["Automaton"]


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
