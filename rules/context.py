"""The context layer: score one whole bounded context against every rule. Pure, no I/O.

The agent runs it at a boundary (Enter, sentence end, focus change, idle) over the context
the streaming matcher has just finished. Where the streaming matcher only knows phrases that
fire alone, this layer also adds up weighted terms and combinations (e2guardian's weighted
phrase lists; Senso's ALONE/SAMETYPE/ANYTYPE) and reads the text several ways
(rules/repair.py, rules/views.py), so it sees obfuscations the normaliser does not undo.

For each rule that watches the source and group:

* a phrase found anywhere fires the rule alone (as in the streaming matcher);
* each weighted term found adds its weight once; each combo whose every part is found adds
  its weight; the rule fires when the score reaches its threshold for the group;
* an exclusion cancels what it overlaps (a phrase, a weighted term, a combo part), or, with
  ``exclusion_scope = "context"``, the whole rule for this context. Negative weights lower
  the score only: they never cancel a phrase that fires alone.

Every hit says why in ``reasons`` (``'how many' +4``, ``typo 'sucide'→'suicide'``,
``spaced letters``) and carries the score of a scoring rule. A text longer than
:data:`MAX_CONTEXT` characters is scored in overlapping windows; each rule hits at most once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .automaton import Automaton
from .confirm import letter_runs, runs_cover
from .lexicon import Lexicon, collapse, load_words
from .model import Hit, Rule
from .normalise import fold, normalise, phrase_key
from .repair import Repair, apply, repairs
from .views import (
    PRONOUNS,
    View,
    base_view,
    joined_view,
    normalised,
    pronoun_view,
    spaced_view,
)

__all__ = ["MAX_CONTEXT", "SPACED_MIN_LETTERS", "ContextIndex", "merge_by_rule"]

#: Longest text scored as one window (longer texts: windows of this size, half overlapping).
MAX_CONTEXT = 500
#: Phrases this long (letters, spaces removed) are also matched spelled out letter by letter.
SPACED_MIN_LETTERS = 8
_SPACED_SINGLES = 4  # a spelled-out match needs this many single-letter pieces
_PHRASE, _WEIGHT, _PART, _EXCL = range(4)
_NOT_LETTER = frozenset({"", " ", "."})
_PIECES = re.compile(r"[\W_]+")


@dataclass(frozen=True)
class _Term:
    kind: int  # _PHRASE, _WEIGHT, _PART or _EXCL
    rule: int  # index into the rules
    text: str  # as written in the rule
    value: int = 0  # the weight (_WEIGHT) or the combo's index (_PART)


@dataclass(frozen=True)
class _Occ:
    """One term found: raw span [lo, hi] and the notes of the readings it needed."""

    term: _Term
    lo: int
    hi: int
    notes: tuple[str, ...]


class _Keys:
    """An automaton over keys, each with its terms."""

    def __init__(self, keys: dict[str, list[_Term]]) -> None:
        ordered = list(keys)
        self.automaton = Automaton(ordered)
        self.lengths = tuple(len(k) for k in ordered)
        self.whole = tuple(k.endswith(" ") for k in ordered)
        self.terms = tuple(tuple(keys[k]) for k in ordered)

    def walk(self, text: str) -> list[tuple[int, int]]:
        """(key index, position of its last character) for every key in ``text``."""
        aut = self.automaton
        delta, out, step = aut.delta, aut.out, aut.step
        s, found = 0, list[tuple[int, int]]()
        for i, c in enumerate(text):
            nxt = delta[s].get(c)
            s = nxt if nxt is not None else step(s, c)
            keys = out[s]
            if keys is not None:
                found.extend((k, i) for k in keys)
        return found


def _spaced_key(term: str) -> str | None:
    """The key for a term spelled out letter by letter: no spaces, repeats collapsed; None
    for terms under :data:`SPACED_MIN_LETTERS` letters (as written)."""
    core = term[:-1] if term.endswith("*") else term
    if sum(c.isalpha() for c in normalise(core, collapse=False)) < SPACED_MIN_LETTERS:
        return None
    return collapse(normalise(core).replace(" ", ""))


class ContextIndex:
    """Everything the context layer needs for one rule set, built once and shared (the
    automata memoise transitions idempotently, so threads may share it)."""

    def __init__(self, rules: tuple[Rule, ...], words: frozenset[str] | None = None) -> None:
        self.rules = rules
        keys: dict[str, list[_Term]] = {}
        spaced: dict[str, list[_Term]] = {}
        phrase_words: list[str] = []
        for ri, rule in enumerate(rules):
            terms = [_Term(_PHRASE, ri, p) for p in rule.phrases]
            terms += [_Term(_WEIGHT, ri, p, w) for p, w in rule.weights]
            terms += [_Term(_PART, ri, p, ci) for ci, c in enumerate(rule.combos)
                      for p in c.parts]
            terms += [_Term(_EXCL, ri, p) for p in rule.exclusions]
            for t in terms:
                keys.setdefault(phrase_key(t.text), []).append(t)
                sk = _spaced_key(t.text)
                if sk is not None:
                    spaced.setdefault(sk, []).append(t)
                parts = normalise(t.text.rstrip("*"), collapse=False).split()
                phrase_words += parts[:-1] if t.text.endswith("*") else parts
        self.pronoun_rules = frozenset(ri for ri, r in enumerate(rules) if r.pronouns)
        if self.pronoun_rules:  # so "her self" joins, and "hersefl" is read as a typo
            phrase_words += PRONOUNS
        self.keys = _Keys(keys)
        self.spaced = _Keys(spaced)
        self.lexicon = Lexicon(phrase_words, load_words() if words is None else words)

    def evaluate(self, text: str, allowed: tuple[bool, ...], group: str | None,
                 context_chars: int = 120) -> list[Hit]:
        """Score ``text`` (any length) against the rules where ``allowed[i]`` is True."""
        best: dict[int, tuple[int, Hit]] = {}
        for start, window in _windows(text):
            for at, ri, hit in self._window(window, allowed, group, context_chars):
                if ri not in best:
                    best[ri] = (start + at, hit)
        return [hit for _, hit in sorted(best.values(), key=lambda x: x[0])]

    # -- one window ------------------------------------------------------------------------

    def _window(self, raw: str, allowed: tuple[bool, ...], group: str | None,
                context_chars: int) -> list[tuple[int, int, Hit]]:
        lex = self.lexicon
        fixes = repairs(raw, lex)
        rtext, origin = apply(raw, fixes)
        norm = normalised(rtext)
        views = [base_view(norm)]
        joined = joined_view(norm, lex, rtext)
        if joined is not None:
            views.append(joined)
        if any(allowed[ri] for ri in self.pronoun_rules) and any(
                w in PRONOUNS for w in (joined or views[0]).text.split()):
            pron = pronoun_view(joined or views[0], rtext)
            if pron is not None:
                views.append(pron)
        found: dict[_Term, list[_Occ]] = {}
        ctx = _Mapper(raw, rtext, origin, fixes)
        for view in views:
            self._collect(view, self.keys, allowed, ctx, found)
        self._collect(spaced_view(norm), self.spaced, allowed, ctx, found)
        by_rule: dict[int, list[_Occ]] = {}
        for occs in found.values():
            for o in occs:
                by_rule.setdefault(o.term.rule, []).append(o)
        out = []
        for ri, occs in by_rule.items():
            hit = _score(self.rules[ri], occs, group, raw, context_chars)
            if hit is not None:
                out.append((hit[0], ri, hit[1]))
        return out

    def _collect(self, view: View, keys: _Keys, allowed: tuple[bool, ...], ctx: _Mapper,
                 found: dict[_Term, list[_Occ]]) -> None:
        spaced = view.name == "spaced"
        text, src = view.text, view.src
        for k, pos in keys.walk(text):
            terms = [t for t in keys.terms[k] if allowed[t.rule]]
            if not terms:
                continue
            klen = keys.lengths[k]
            first = pos - klen + (1 if spaced else 2)
            if spaced:
                if first not in view.starts or pos not in view.ends:
                    continue
                rlo = src[first]
                rhi = (src[pos + 1] if pos + 1 < len(src) else len(ctx.rtext)) - 1
            else:
                rlo = src[first]
                rhi = src[pos] - 1 if keys.whole[k] else src[pos]
            rlo, rhi = ctx.trim(rlo, rhi)
            span = ctx.rtext[rlo : rhi + 1]
            if spaced and sum(len(p) == 1 for p in _PIECES.split(span)) < _SPACED_SINGLES:
                continue  # "therapist" is one word, not "the rapist" spelled out
            lo, hi = ctx.raw_span(rlo, rhi)
            notes = ctx.notes(view, rlo, rhi, lo, hi)
            runs = letter_runs(span)
            for t in terms:
                if view.name == "pronoun" and not _pronoun_ok(view, t, rlo, rhi,
                                                                self.rules[t.rule]):
                    continue
                if t.kind != _EXCL and not runs_cover(runs, t.text):
                    continue  # "Niger" is not the slur, "wed" is not "weed"
                occs = found.setdefault(t, [])
                if not any(o.lo <= hi and lo <= o.hi for o in occs):
                    occs.append(_Occ(t, lo, hi, notes))


def _pronoun_ok(view: View, t: _Term, rlo: int, rhi: int, rule: Rule) -> bool:
    touched = [(a, b, r) for a, b, r in view.notes
               if r.startswith("pronoun") and a <= rhi and rlo <= b]
    if not touched:
        return True  # the base or joined view found it too
    if not rule.pronouns:
        return False
    second = any(a <= rhi and rlo <= b for a, b in view.second_person)
    return not second or rule.pronouns == "all"


class _Mapper:
    """Maps repaired-text spans back to raw text, and gathers the notes that apply."""

    def __init__(self, raw: str, rtext: str, origin: list[int], fixes: list[Repair]) -> None:
        self.raw, self.rtext, self.origin, self.fixes = raw, rtext, origin, fixes

    def trim(self, rlo: int, rhi: int) -> tuple[int, int]:
        n = len(self.rtext)
        rlo = min(max(0, rlo), max(0, n - 1))
        rhi = min(max(rlo, rhi), max(0, n - 1))
        while rhi > rlo and fold(self.rtext[rhi]) in _NOT_LETTER:
            rhi -= 1
        return rlo, rhi

    def raw_span(self, rlo: int, rhi: int) -> tuple[int, int]:
        if not self.origin:
            return 0, 0
        return self.origin[rlo], self.origin[rhi]

    def notes(self, view: View, rlo: int, rhi: int, lo: int, hi: int) -> tuple[str, ...]:
        out = [f.reason for f in self.fixes if f.start <= hi and lo < f.end]
        out += [r for a, b, r in view.notes if a <= rhi and rlo <= b]
        if view.name == "spaced":
            out.append("spaced letters")
        return tuple(out)


def _score(rule: Rule, occs: list[_Occ], group: str | None, raw: str,
           context_chars: int) -> tuple[int, Hit] | None:
    excl = [o for o in occs if o.term.kind == _EXCL]
    if excl and rule.exclusion_scope == "context":
        return None
    live = sorted((o for o in occs if o.term.kind != _EXCL
                   and not any(o.lo <= x.hi and x.lo <= o.hi for x in excl)),
                  key=lambda o: (o.lo, o.hi))
    alone = [o for o in live if o.term.kind == _PHRASE]
    score, reasons, used = 0, [], []
    if rule.weighted:
        seen: set[str] = set()
        for o in live:
            if o.term.kind == _WEIGHT and o.term.text not in seen:
                seen.add(o.term.text)
                score += o.term.value
                reasons.append(f"{o.term.text!r} {o.term.value:+d}")
                used.append(o)
        parts: dict[tuple[int, str], _Occ] = {}
        for o in live:
            if o.term.kind == _PART:
                parts.setdefault((o.term.value, o.term.text), o)
        for ci, combo in enumerate(rule.combos):
            got = [parts.get((ci, p)) for p in combo.parts]
            if all(g is not None for g in got):
                score += combo.weight
                reasons.append(" + ".join(repr(p) for p in combo.parts) + f" {combo.weight:+d}")
                used += [g for g in got if g is not None and combo.weight > 0]
    need = rule.threshold_for(group)
    scored = rule.weighted and need is not None and score >= need
    if not alone and not scored:
        return None
    if alone:
        first = alone[0]
        lo, hi = first.lo, first.hi
        reasons.insert(0, f"phrase {first.term.text!r}")
        used.insert(0, first)
    else:
        positive = [o for o in used if o.term.kind != _WEIGHT or o.term.value > 0]
        lo, hi = min(o.lo for o in positive), max(o.hi for o in positive)
    if rule.weighted:
        reasons.append(f"score {score} (threshold {need})")
    for o in used:
        reasons += [n for n in o.notes if n not in reasons]
    match = raw[lo : hi + 1]
    return lo, Hit(rule=rule, match=match, context=_around(raw, lo, hi, context_chars),
                   match_kind="normalised", score=score if rule.weighted else None,
                   reasons=tuple(reasons))


def merge_by_rule(stream: list[Hit], context: list[Hit]) -> list[Hit]:
    """Both layers' hits on one context, one per rule: the streaming hit where there is one
    (its match is the phrase exactly as typed) with the context layer's score and reasons,
    then the rules only the context layer found. A streaming hit the context layer did not
    repeat says so in its reasons."""
    ctx = {h.rule.id: h for h in context}
    out: list[Hit] = []
    seen: set[str] = set()
    for h in stream:
        if h.rule.id in seen:
            continue
        seen.add(h.rule.id)
        c = ctx.get(h.rule.id)
        out.append(replace(h, score=c.score, reasons=c.reasons) if c is not None
                   else replace(h, reasons=h.reasons or ("streaming phrase match",)))
    out += [h for h in context if h.rule.id not in seen]
    return out


def _around(text: str, lo: int, hi: int, n: int) -> str:
    """At most ``n`` characters of ``text`` centred on ``text[lo:hi+1]``."""
    match = text[lo : hi + 1]
    room = max(0, n - len(match))
    after = text[hi + 1 : hi + 1 + room // 2]
    before = text[max(0, lo - (room - len(after))) : lo]
    return (before + match + after)[:n]


def _windows(text: str) -> list[tuple[int, str]]:
    """``text`` as windows of at most :data:`MAX_CONTEXT` characters, half overlapping,
    starting after a space where there is one."""
    if len(text) <= MAX_CONTEXT:
        return [(0, text)]
    out, start, half = [], 0, MAX_CONTEXT // 2
    while True:
        out.append((start, text[start : start + MAX_CONTEXT]))
        if start + MAX_CONTEXT >= len(text):
            return out
        nxt = start + half
        space = text.find(" ", nxt, start + MAX_CONTEXT)
        start = space + 1 if space >= 0 else nxt

