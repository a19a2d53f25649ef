"""The context layer (``RuleSet.evaluate``): weights, combos, thresholds, negative context,
exclusion scope, and the obfuscations it reads through, each with a reason."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import rules

Make = Callable[..., rules.RuleSet]

METHOD = """\
weights = { "how many" = 4, paracetamol = 6, recipe = -10, lesson = -6 }
combos = [{ all = ["how many", "be dead"], weight = 10 }]
threshold = 8
"""


@pytest.fixture
def rule_set(make_library: Callable[..., Path]) -> Make:
    """Factory: a one-rule library (id "t.r", category suicide) from TOML rule keys."""

    def make(body: str, category: str = "suicide", severity: int = 4) -> rules.RuleSet:
        text = (f'category = "{category}"\n[[rule]]\nid = "t.r"\nseverity = {severity}\n'
                + textwrap.dedent(body))
        return rules.load_library(make_library(**{category: text}))

    return make


def ids(rs: rules.RuleSet, text: str, **kw: str) -> list[str]:
    return [h.rule.id for h in rs.evaluate(text, **kw)]


def one(rs: rules.RuleSet, text: str) -> rules.Hit:
    (hit,) = rs.evaluate(text)
    return hit


# -- scoring -----------------------------------------------------------------------------------


def test_weights_add_up_to_the_threshold(rule_set: Make) -> None:
    rs = rule_set(METHOD)
    hit = one(rs, "how many paracetamol is too many")
    assert hit.score == 10 and hit.match_kind == "normalised"
    assert hit.reasons == ("'how many' +4", "'paracetamol' +6", "score 10 (threshold 8)")
    assert hit.match == "how many paracetamol"
    assert ids(rs, "how many sweets") == [] and ids(rs, "paracetamol") == []


def test_negative_weights_are_benign_context(rule_set: Make) -> None:
    rs = rule_set(METHOD)
    assert ids(rs, "recipe: how many paracetamol") == []
    assert ids(rs, "how many paracetamol - lesson notes") == []
    # shown in the reasons when the rule fires anyway
    rs2 = rule_set(METHOD.replace("lesson = -6", "lesson = -1"))
    assert "'lesson' -1" in one(rs2, "how many paracetamol lesson").reasons


def test_each_term_counts_once_per_context(rule_set: Make) -> None:
    rs = rule_set(METHOD)
    assert ids(rs, "how many how many how many how many") == []


def test_combos_need_every_part_in_any_order(rule_set: Make) -> None:
    rs = rule_set(METHOD)
    hit = one(rs, "i want to be dead. how many do i need")
    assert hit.score == 14 and "'how many' + 'be dead' +10" in hit.reasons
    assert ids(rs, "i want to be dead") == []


def test_thresholds_per_group(rule_set: Make) -> None:
    rs = rule_set('weights = { "how many" = 4, pills = 3 }\nthreshold = 8\n'
                  "thresholds = { primary = 6, staff = 10 }\n")
    text = "how many pills"  # scores 7
    assert ids(rs, text, group="primary") == ["t.r"]
    assert ids(rs, text, group="secondary") == []
    assert ids(rs, text) == ["t.r"]  # unknown band: the lowest threshold
    assert "score 7 (threshold 6)" in one(rs, text).reasons


def test_phrases_still_fire_alone_and_negative_weights_do_not_cancel_them(
    rule_set: Make,
) -> None:
    rs = rule_set('phrases = ["how to overdose"]\n' + METHOD)
    hit = one(rs, "recipe for how to overdose")
    assert hit.reasons[0] == "phrase 'how to overdose'" and hit.score == -10
    assert hit.match == "how to overdose"


def test_exclusions_cancel_what_they_overlap(rule_set: Make) -> None:
    rs = rule_set('phrases = ["kill"]\nexclusions = ["kill the process"]\n', "violence_weapons")
    assert ids(rs, "kill the process") == []
    assert ids(rs, "kill the process then kill them") == ["t.r"]
    ws = rule_set('weights = { "carry a knife" = 8 }\nthreshold = 8\n'
                  'exclusions = ["carry a knife safely"]\n', "violence_weapons")
    assert ids(ws, "carry a knife safely in food tech") == []
    assert ids(ws, "i carry a knife") == ["t.r"]


def test_exclusion_scope_context_cancels_the_rule_anywhere(rule_set: Make) -> None:
    rs = rule_set('phrases = ["kill"]\nexclusions = ["the process"]\n'
                  'exclusion_scope = "context"\n', "violence_weapons")
    assert ids(rs, "kill them, then end the process") == []
    assert ids(rs, "kill them") == ["t.r"]


# -- what the views read through --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("e n d m y l i f e", "spaced letters"),
        ("tonight i will e.n.d.m.y.l.i.f.e", "spaced letters"),
        ("k i l l  m y s e l f", "spaced letters"),
        ("i want to hang my self", "joined 'my self'→'myself'"),
        ("gonna kill my self", "joined 'my self'→'myself'"),
        ("how to commit sui cide", "joined 'sui cide'→'suicide'"),
        ("thinking about s*icide methods", "masked 's*icide'→'suicide'"),
        ("thinking about s-icide methods", "masked 's-icide'→'suicide'"),
        ("i wanna k#ll myself", "masked 'k#ll'→'kill'"),
        ("i wanna d!e", "leet 'd!e'→'die'"),
        ("i'll k!ll myself", "leet 'k!ll'→'kill'"),
        ("i'll k|ll myself", "leet 'k|ll'→'kill'"),
        ("5uicide methods", "leet '5uicide'→'suicide'"),
        ("sucide methods", "typo 'sucide'→'suicide'"),
        ("how many paracetomol to die", "typo 'paracetomol'→'paracetamol'"),
    ],
)
def test_obfuscations_are_read_with_a_reason(library: rules.RuleSet, text: str,
                                             reason: str) -> None:
    hits = [h for h in library.evaluate(text) if h.rule.category == "suicide"]
    assert hits, text
    assert reason in hits[0].reasons, hits[0].reasons
    assert hits[0].match in text and hits[0].match_kind == "normalised"


def test_leading_leet_and_typos_on_a_one_rule_set(rule_set: Make) -> None:
    rs = rule_set('phrases = ["anorexia tips", "send nudes"]\n', "eating_disorders")
    assert ids(rs, "4n0rexia tips") == ["t.r"]
    assert ids(rs, "anorexa tips") == ["t.r"]
    assert "masked 'n*des'→'nudes'" in one(rs, "send n*des pls").reasons


def test_real_words_are_never_read_as_phrase_words(rule_set: Make) -> None:
    rs = rule_set('phrases = ["suicide", "kill", "nigger", "the rapist", "end it all"]\n',
                  "violence_weapons")
    for text in ("we decide", "it suited him", "a slice of cake", "a skilled skill",
                 "the River Niger", "my therapist", "spend it all", "self-harm",
                 "e.g. the u.s.a", "ex-boyfriend", "re-decide"):
        assert ids(rs, text) == [], text


def test_typos_need_the_first_letter_and_enough_length(rule_set: Make) -> None:
    rs = rule_set('phrases = ["suicide", "die now"]\n')
    assert ids(rs, "uicide") == []  # the first letter must agree
    assert ids(rs, "dye now") == []  # "die" is too short to be misspelt
    assert ids(rs, "suicidd") == ["t.r"]


def test_masks_are_limited(rule_set: Make) -> None:
    rs = rule_set('phrases = ["suicide"]\n')
    assert ids(rs, "s***ide") == []  # more stand-ins than one in two letters
    assert ids(rs, "s**cide") == ["t.r"]
    assert ids(rs, "*uicide") == []  # a stand-in must be inside the word


def test_spaced_letters_only_for_long_phrases(rule_set: Make) -> None:
    rs = rule_set('phrases = ["kill me", "end my life"]\n')
    assert ids(rs, "k i l l m e") == []  # 6 letters: too short to read spelled out
    assert ids(rs, "e n d m y l i f e") == ["t.r"]


@pytest.mark.parametrize(
    ("mode", "herself", "yourself"),
    [("", False, False), ("true", True, False), ('"all"', True, True)],
)
def test_pronouns_only_when_the_rule_asks(rule_set: Make, mode: str, herself: bool,
                                          yourself: bool) -> None:
    body = 'phrases = ["kill myself"]\n' + (f"pronouns = {mode}\n" if mode else "")
    rs = rule_set(body)
    assert ids(rs, "she wants to kill herself") == (["t.r"] if herself else [])
    assert ids(rs, "they will kill themselves") == (["t.r"] if herself else [])
    assert ids(rs, "go kill yourself") == (["t.r"] if yourself else [])
    assert ids(rs, "i will kill myself") == ["t.r"]
    if herself:
        assert "pronoun 'herself' read as 'myself'" in one(rs, "kill herself").reasons


def test_pronouns_feed_weights_and_exclusions(rule_set: Make) -> None:
    rs = rule_set('weights = { "kill myself" = 6, "my friend" = 3, romeo = -10 }\n'
                  'threshold = 8\npronouns = true\nexclusions = ["kill myself laughing"]\n')
    assert ids(rs, "my friend said she will kill herself") == ["t.r"]
    assert ids(rs, "why does romeo kill himself, my friend asked") == []
    assert ids(rs, "my friend was killing herself laughing") == []


# -- hits ------------------------------------------------------------------------------------


def test_hits_are_bounded_and_from_the_text(library: rules.RuleSet) -> None:
    text = "word " * 60 + "i want to kill myself" + " word" * 60
    (hit,) = library.evaluate(text, context_chars=50)
    assert len(hit.context) <= 50 and hit.match in hit.context and hit.context in text
    assert hit.reasons and hit.score is None  # a phrase-only rule has no score


def test_long_texts_are_scored_in_windows(library: rules.RuleSet) -> None:
    assert ids(library, "x" * 4101 + " kill myself") == ["suicide.intent"]
    assert ids(library, "la " * 2000 + "how to commit s*icide" + " la" * 2000) == [
        "suicide.method"]
    assert ids(library, "kill myself " * 400) == ["suicide.intent"]  # once per rule


def test_source_and_group_filter_rules(library: rules.RuleSet) -> None:
    assert ids(library, "unblocked games", group="staff") == []
    assert ids(library, "unblocked games", group="secondary")
    assert ids(library, "i want to kill myself", source="media") == []
    with pytest.raises(ValueError, match="unknown group"):
        library.evaluate("x", group="year7")
    with pytest.raises(ValueError, match="unknown source"):
        library.evaluate("x", source="mic")
    with pytest.raises(ValueError, match="context_chars"):
        library.evaluate("x", context_chars=0)


def test_default_library_method_question(library: rules.RuleSet) -> None:
    for text in ("how many paracetamol would it take to die",
                 "how much paracetamol do i need to be dead",
                 "how long does it take to die from an overdose"):
        assert "suicide.method_question" in ids(library, text), text
    for text in ("how many people die in car crashes every year",
                 "in minecraft how many hearts until you die",
                 "how long does it take for a plant to die",
                 "recipe: how much sugar is fatal to a cake lol"):
        assert "suicide.method_question" not in ids(library, text), text


def test_default_library_negative_context_fixes_lookalikes(library: rules.RuleSet) -> None:
    benign = ["knife crime assembly: why carrying a blade makes you less safe",
              "if you touch my stuff again i'll kill you",
              "he stole my charger again, i'm going to kill him lol",
              "chopping onions and i cut my finger, it's bleeding a bit",
              "why does romeo kill himself in romeo and juliet"]
    for text in benign:
        assert library.evaluate(text) == [], text
    assert "violence_weapons" in {h.rule.category for h in library.evaluate(
        "i've been carrying a knife to school every day")}
    assert "violence_weapons" in {h.rule.category for h in library.evaluate(
        "i will kill you tomorrow after school, not joking")}
    assert "self_harm" in {h.rule.category for h in library.evaluate(
        "been cutting again, i hide the scars with long sleeves")}
    assert "suicide" in {h.rule.category for h in library.evaluate(
        "my best friend told me she wants to kill herself tonight")}


def test_merge_by_rule_keeps_one_hit_per_rule(library: rules.RuleSet) -> None:
    text = "i want to k1ll myself. how many paracetamol would it take to die"
    merged = rules.merge_by_rule(library.scan(text), library.evaluate(text))
    assert sorted(h.rule.id for h in merged) == ["suicide.intent", "suicide.method_question"]
    intent = next(h for h in merged if h.rule.id == "suicide.intent")
    assert intent.match == "want to k1ll myself" and intent.reasons  # stream match, reasons
    only_stream = rules.merge_by_rule(library.scan("kill myself"), [])
    assert only_stream[0].reasons == ("streaming phrase match",)


def test_evaluate_is_pure(library: rules.RuleSet) -> None:
    text = "sucide methods, e n d m y l i f e"
    assert library.evaluate(text) == library.evaluate(text)
    rebuilt = rules.RuleSet(library.rules)
    assert rebuilt.evaluate(text) == library.evaluate(text)


def test_compiled_can_build_the_context_index_up_front(library: rules.RuleSet) -> None:
    fresh = rules.RuleSet(library.rules)
    assert "_context" not in vars(fresh.compiled())  # streaming only, as before v2
    assert "_context" in vars(fresh.compiled(context=True))
