"""Property tests (hypothesis) for the context layer."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rules
from rules.lexicon import load_words
from rules.normalise import normalise
from rules.repair import repairs

LIBRARY = rules.load_library(rules.DEFAULT_LIBRARY)
LEXICON = LIBRARY._context.lexicon
SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

PIECES = ["kill", "k!ll", "k*ll", "my", "self", "myself", "herself", "sui", "cide", "s*icide",
          "e", "n", "d", " ", "  ", ".", "-", "*", "#", "!", "|", "_", "4", "5", "0", "@", "$",
          "how many", "paracetamol", "recipe", "die", "\u200b",
          "\uff2b\uff29\uff2c\uff2c", "é", "\n"]
pieced = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)


def _spaceable() -> list[tuple[str, str]]:
    """(rule id, phrase) for plain phrases of 8+ letters in rules that watch keys."""
    out = []
    for r in LIBRARY.rules:
        if "keys" not in r.sources or r.exclusions:
            continue
        for p in r.phrases:
            letters = normalise(p, collapse=False).replace(" ", "")
            if not p.endswith("*") and letters.isalpha() and len(letters) >= 8:
                out.append((r.id, p))
    return out


SPACEABLE = _spaceable()


@SETTINGS
@given(st.one_of(st.text(max_size=300), pieced), st.sampled_from([None, *rules.GROUPS]),
       st.sampled_from(rules.SOURCES), st.integers(min_value=1, max_value=200))
def test_evaluate_never_raises_and_hits_are_well_formed(
    text: str, group: str | None, source: str, context_chars: int
) -> None:
    hits = LIBRARY.evaluate(text, source, group, context_chars=context_chars)
    assert len({h.rule.id for h in hits}) == len(hits)  # one hit per rule
    for h in hits:
        assert h.rule.applies(source, group)
        assert h.match and h.match in text and h.context in text
        assert len(h.context) <= context_chars and h.match_kind == "normalised"
        assert h.reasons and all(isinstance(r, str) and r for r in h.reasons)
        assert (h.score is None) == (not h.rule.weighted)


@SETTINGS
@given(st.sampled_from(SPACEABLE), st.sampled_from([" ", "  ", ".", " . "]),
       st.sampled_from(["", "ok ", "so yeah "]), st.booleans())
def test_spacing_out_a_long_phrase_still_hits(
    item: tuple[str, str], sep: str, before: str, upper: bool
) -> None:
    rule_id, phrase = item
    letters = normalise(phrase, collapse=False).replace(" ", "")
    spaced = sep.join(letters.upper() if upper else letters)
    assert rule_id in {h.rule.id for h in LIBRARY.evaluate(before + spaced)}, spaced


WORDS = sorted(w for w in load_words() if len(w) >= 4)


@SETTINGS
@given(st.sampled_from(WORDS), st.sampled_from(["", "i ", "the "]))
def test_a_real_word_is_never_read_as_a_typo(word: str, before: str) -> None:
    assert LEXICON.typo(word) is None
    assert not any(r.reason.startswith("typo") for r in repairs(before + word, LEXICON))


@SETTINGS
@given(st.text(alphabet=string.ascii_lowercase + " ", max_size=80))
def test_plain_lower_case_text_reads_as_itself_or_a_phrase_word(text: str) -> None:
    for r in repairs(text, LEXICON):
        assert r.word in LEXICON.counts  # only phrase words are ever produced
        assert text[r.start : r.end].strip() and " " not in text[r.start : r.end]


@SETTINGS
@given(st.one_of(pieced, st.text(max_size=120)))
def test_the_context_layer_sees_every_phrase_the_streaming_matcher_sees(text: str) -> None:
    for line in text.split("\n"):  # a newline ends a streaming context
        streamed = {h.rule.id for h in LIBRARY.scan(line)}
        assert streamed <= {h.rule.id for h in LIBRARY.evaluate(line)}, line
