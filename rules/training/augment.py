"""Training-time respellings of corpus lines, so the scorer sees obfuscation it was not
shown by hand. Used only to *add* training rows; the corpus itself stays hand-written and
dev/test are never augmented."""

from __future__ import annotations

import random

__all__ = ["respell"]

_LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"}
_MASK = "*#"
_TEXTSPEAK = {"you": "u", "your": "ur", "are": "r", "because": "cuz", "right now": "rn",
              "to be honest": "tbh", "want to": "wanna", "going to": "gonna", "please": "pls",
              "people": "ppl", "though": "tho", "really": "rly", "i don't know": "idk"}


def _leet(w: str, rng: random.Random) -> str:
    return "".join(_LEET.get(c, c) if rng.random() < 0.5 else c for c in w)


def _mask(w: str, rng: random.Random) -> str:
    vowels = [i for i, c in enumerate(w) if c in "aeiou" and 0 < i < len(w) - 1]
    if not vowels:
        return w
    i = rng.choice(vowels)
    return w[:i] + rng.choice(_MASK) + w[i + 1:]


def _typo(w: str, rng: random.Random) -> str:
    if len(w) < 5:
        return w
    i = rng.randrange(1, len(w) - 1)
    op = rng.randrange(3)
    if op == 0:
        return w[:i] + w[i + 1:]
    if op == 1:
        return w[:i] + w[i + 1] + w[i] + w[i + 2:]
    return w[:i] + w[i] + w[i:]


def _spaced(w: str, rng: random.Random) -> str:
    return " ".join(w)


def respell(text: str, rng: random.Random) -> str:
    """One random respelling: text-speak, then a few words leeted, masked, typo'd or spaced."""
    t = text.lower() if rng.random() < 0.7 else text
    for full, short in _TEXTSPEAK.items():
        if full in t and rng.random() < 0.6:
            t = t.replace(full, short)
    words = t.split(" ")
    ops = (_leet, _mask, _typo, _spaced)
    long_idx = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    rng.shuffle(long_idx)
    for i in long_idx[: rng.randint(1, 2)]:
        words[i] = rng.choice(ops)(words[i], rng)
    out = " ".join(words)
    if rng.random() < 0.3:
        out = out.replace("'", "")
    if rng.random() < 0.2:
        out = out.rstrip(".!?")
    return out
