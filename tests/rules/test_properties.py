"""Property tests (hypothesis) for the normaliser and the streaming matcher."""

from __future__ import annotations

import itertools
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rules
from rules.automaton import CompactAutomaton
from rules.normalise import Normaliser, normalise

PHRASES = {"r.killme": "kil me", "r.kms": "kms", "r.mekill": "me kil", "r.bab": "bab",
           "r.suicide": "sui cide", "r.ab": "ab ab", "r.num": "1488", "r.leet": "b1g"}
RULESET = rules.RuleSet(tuple(
    rules.Rule(id=rid, category="suicide", severity=5, phrases=(p,)) for rid, p in PHRASES.items()
))
PIECES = ["kill", "k1ll", "ki", "ll", "me", "m", "e", "kms", "km", "s", "$", "sui", "cide",
          "b", "a", "ab", "bab", " ", " ", "  ", ".", "-", "'", "\u200b", "K", "I", "L", "!",
          "1", "14", "88", "4", "0", "g", "big", "9"]
texts = st.lists(st.sampled_from(PIECES), max_size=25).map("".join)
any_text = st.text(max_size=60)
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def stream(m: rules.StreamMatcher, text: str) -> list[rules.Hit]:
    hits: list[rules.Hit] = []
    for ch in text:
        hits += m.feed(ch)
    return hits


def reference_ids(text: str) -> set[str]:
    """Which rules occur in the whole normalised text, by plain substring search."""
    padded = f" {normalise(text)} "
    return {rid for rid, p in PHRASES.items() if f" {normalise(p)} " in padded}


@SETTINGS
@given(texts)
def test_streaming_one_char_at_a_time_equals_whole_text_search(text: str) -> None:
    m = RULESET.matcher()
    hits = stream(m, text) + m.reset()
    assert {h.rule.id for h in hits} == reference_ids(text)
    assert [(h.rule.id, h.match) for h in hits] == [
        (h.rule.id, h.match) for h in RULESET.scan(text)
    ]
    for h in hits:
        assert h.match and h.match in text and h.match in h.context and h.context in text


@SETTINGS
@given(texts, texts)
def test_no_hit_crosses_a_context_reset(a: str, b: str) -> None:
    m = RULESET.matcher()
    first = stream(m, a) + m.reset()
    second = stream(m, b) + m.reset()
    assert {h.rule.id for h in first} == reference_ids(a)
    assert {h.rule.id for h in second} == reference_ids(b)
    assert all(h.context in a for h in first)
    assert all(h.context in b for h in second)


@SETTINGS
@given(texts, texts, texts)
def test_backspace_restores_state_and_keeps_deleted_hits(a: str, x: str, b: str) -> None:
    m = RULESET.matcher()
    hits = stream(m, a + x)
    for _ in x:
        m.backspace()
    hits += stream(m, b) + m.reset()
    ids = {h.rule.id for h in hits}
    assert reference_ids(a + b) <= ids
    assert ids <= reference_ids(a + b) | {h.rule.id for h in RULESET.scan(a + x)} | {
        rid for k in range(len(x) + 1) for rid in reference_ids(a + x[:k])}


@SETTINGS
@given(any_text)
def test_normaliser_output_shape(text: str) -> None:
    out = normalise(text)
    assert out == out.strip() and "  " not in out
    assert all(c == " " or c.isalnum() for c in out)
    assert all(x != y or x in string.digits for x, y in itertools.pairwise(out))


@SETTINGS
@given(st.text(alphabet=string.ascii_letters + string.digits + " \t", max_size=60))
def test_normaliser_is_idempotent_on_whitespace_separated_text(text: str) -> None:
    # (Mixed separators are not idempotent by design: "o.o o" -> "o o" -> "o".)
    out = normalise(text)
    assert normalise(out) == out


@SETTINGS
@given(st.text(alphabet=string.ascii_letters + " .,-", max_size=60))
def test_normaliser_ignores_case_and_invisible_characters(text: str) -> None:
    assert normalise(text.upper()) == normalise(text.lower())
    sneaky = "\u200b".join(text)
    assert normalise(sneaky) == normalise(text)


@SETTINGS
@given(any_text)
def test_streaming_normaliser_matches_whole_string(text: str) -> None:
    n = Normaliser()
    out = "".join(n.push(ch) for ch in text) + n.end()
    assert out.strip() == normalise(text)
    assert len(n.src) == len(out) and all(0 <= i <= len(text) for i in n.src)
    assert n.src == sorted(n.src)


def test_normaliser_examples() -> None:
    assert normalise("I want to KILL myself") == "i want to kil myself"
    assert normalise("s.u.i.c.i.d.e") == normalise("suicide") == normalise("$u1c1de")
    assert normalise("k.i.l.l m.e") == "kil me"
    assert normalise("k i l l me") == "kil me"
    assert normalise("diiiie") == normalise("die")
    assert normalise("don't") == normalise("dont")
    assert normalise("self-harm") == normalise("self harm")
    assert normalise("Ŵyf") == "wyf"
    assert normalise("i am a kid") == "i am a kid"
    assert normalise("") == ""


LIBRARY = rules.load_library(rules.DEFAULT_LIBRARY)
ops = st.lists(
    st.one_of(st.text(min_size=1, max_size=1), st.sampled_from(["\b", "\b", "\n"]),
              st.sampled_from(list("kms kys k1ll myself 1488 $uicide die ")), ),
    max_size=80,
)


@SETTINGS
@given(ops, st.integers(min_value=1, max_value=200))
def test_any_keystrokes_never_crash_and_contexts_stay_bounded(
    keys: list[str], context_chars: int
) -> None:
    m = LIBRARY.matcher(context_chars=context_chars)
    hits: list[rules.Hit] = []
    buf, states = "", [""]  # every state of the text on screen, for checking matches
    for k in keys:
        if k == "\b":
            m.backspace()
            buf = buf[:-1]
        else:
            hits += m.feed(k)
            buf = "" if k in "\r\n" else buf + k
        states.append(buf)
    hits += m.reset()
    screens = "\x00".join(states)
    for h in hits:
        assert h.match and len(h.context) <= context_chars
        assert h.match_kind in ("exact", "normalised")
        assert h.match in screens and "\n" not in h.match


keys_st = st.lists(st.text(alphabet="ab c\x00", max_size=6), max_size=12)


@SETTINGS
@given(keys_st, st.text(alphabet="ab cd\x00\x01", max_size=80))
def test_compact_automaton_finds_exactly_the_keys_ending_at_each_character(
    keys: list[str], text: str
) -> None:
    # duplicates, empty keys and keys that are prefixes or suffixes of others included, and
    # the control characters the automaton may pick to mark its leaves
    aut = CompactAutomaton(keys)
    s = 0
    for i, c in enumerate(text):
        s = aut.step(s, c)
        want = tuple(k for k, key in enumerate(keys) if key and text[: i + 1].endswith(key))
        assert tuple(sorted(aut.out.get(s, ()))) == want
    assert aut.start == aut.step(0, " ")


WORDS = ["ab", "ba", "abc", "cab", "bc", "a", "ca"]
phrase_sets = st.lists(  # no repeats that only the collapsing makes ("a a" needs "aa")
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(" ".join).filter(
        lambda p: normalise(p) == normalise(p, collapse=False)),
    min_size=1, max_size=12, unique=True)
typing = st.lists(st.sampled_from([*WORDS, " ", " ", "  ", ".", "aa", "A", "-"]),
                  max_size=30).map("".join)


@SETTINGS
@given(phrase_sets, typing)
def test_streaming_equals_whole_text_search_on_branching_phrase_sets(
    phrases: list[str], text: str
) -> None:
    # many phrases sharing prefixes and suffixes: the matcher's inlined steps, the trie's
    # branches and the failure links all get used
    rs = rules.RuleSet(tuple(rules.Rule(id=f"r.p{i}", category="drugs", severity=2,
                                        phrases=(p,)) for i, p in enumerate(phrases)))
    m = rs.matcher()
    hits = stream(m, text) + m.reset()
    padded = f" {normalise(text)} "
    want = {f"r.p{i}" for i, p in enumerate(phrases) if f" {normalise(p)} " in padded}
    assert {h.rule.id for h in hits} == want


@SETTINGS
@given(phrase_sets, typing, typing)
def test_backspace_returns_to_exactly_the_state_before(phrases: list[str], a: str,
                                                      x: str) -> None:
    rs = rules.RuleSet(tuple(rules.Rule(id=f"r.p{i}", category="drugs", severity=2,
                                        phrases=(p,)) for i, p in enumerate(phrases)))
    typed, only_a = rs.matcher(), rs.matcher()
    stream(typed, a + x)
    for _ in x:
        typed.backspace()
    stream(only_a, a)
    assert typed._ac == only_a._ac
    assert typed._norm.snapshot() == only_a._norm.snapshot()
    assert typed._raw == only_a._raw
