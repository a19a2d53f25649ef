"""Rule language v2 fields: validation errors, canonical form, hashes and bundles."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

import rules
from rules.ruleset import rule_to_dict

V1_KEYS = ["id", "category", "severity", "phrases", "exclusions", "sources", "groups",
           "language", "screenshot", "on_mount"]


def _error(root: Path) -> rules.RuleError:
    with pytest.raises(rules.RuleError) as info:
        rules.load_library(root)
    return info.value


W = 'weights = { "how many" = 4, paracetamol = 6 }\nthreshold = 8'


@pytest.mark.parametrize(
    ("body", "key", "hint"),
    [
        ('weights = "x"\nthreshold = 8', "weights", "table of"),
        ('weights = [["a b", 4, 5]]\nthreshold = 8', "weights", "pairs"),
        ('weights = { "how many" = 101 }\nthreshold = 8', "weights", "from -100 to 100"),
        ('weights = { "how many" = 1.5 }\nthreshold = 8', "weights", "whole number"),
        ('weights = { "how many" = true }\nthreshold = 8', "weights", "whole number"),
        ('weights = { "how many" = 0 }\nthreshold = 8', "weights", "does nothing"),
        ('weights = { "x" = 4 }\nthreshold = 4', "weights", "fewer than 2 letters"),
        ('weights = [["k1ll", 4], ["KILL", 4]]\nthreshold = 8', "weights", "duplicates"),
        ('phrases = ["ab cd"]\nweights = { "AB CD" = 4 }\nthreshold = 4', "weights",
         "both a phrase"),
        ('weights = { "ab cd" = 4 }', "weights", "no threshold"),
        ('weights = { "ab cd" = 4 }\nthresholds = { primary = 4 }', "thresholds",
         "no threshold for secondary"),
        ('weights = { "ab cd" = 4 }\nthreshold = 0', "threshold", "from 1 to 1000"),
        ('weights = { "ab cd" = 4 }\nthreshold = 9', "threshold", "never be reached"),
        ('weights = { "ab cd" = 4 }\nthreshold = 4\nthresholds = { year7 = 3 }', "thresholds",
         "unknown group 'year7'"),
        ('weights = { "ab cd" = 4 }\nthreshold = 4\nthresholds = { staff = "x" }',
         "thresholds", "threshold for staff"),
        ('phrases = ["ab cd"]\nthreshold = 4', "threshold", "without weights or combos"),
        ('combos = { all = ["ab", "cd"] }\nthreshold = 4', "combos", "list of tables"),
        ('combos = [{ all = ["ab"], weight = 4 }]\nthreshold = 4', "combos",
         "at least 2 phrases"),
        ('combos = [{ all = ["ab", "cd"] }]\nthreshold = 4', "combos", "no weight"),
        ('combos = [{ all = ["ab", "cd"], weight = 4, any = 1 }]\nthreshold = 4', "combos",
         "unknown key 'any'"),
        ('combos = [{ all = ["ab", "cd"], weight = 4 }, { all = ["CD", "ab"], weight = 2 }]\n'
         "threshold = 4", "combos", "same parts"),
        ('combos = [{ all = ["ab", "c"], weight = 4 }]\nthreshold = 4', "combos",
         "fewer than 2 letters"),
        ('combos = [{ all = ["ab", "cd"], weight = -200 }]\nthreshold = 4', "combos",
         "combo 1"),
        ('phrases = ["kill myself"]\npronouns = "yes"', "pronouns", "must be true"),
        ('phrases = ["ab cd"]\npronouns = true', "pronouns", "contains 'myself'"),
        ('phrases = ["ab cd"]\nexclusion_scope = "window"', "exclusion_scope", '"context"'),
    ],
)
def test_v2_errors_name_file_line_rule_and_fix(
    make_library: Callable[..., Path], body: str, key: str, hint: str
) -> None:
    text = f'category = "suicide"\n# comment\n[[rule]]\nid = "s.bad"\nseverity = 4\n{body}\n'
    line = 1 + next(n for n, ln in enumerate(text.splitlines()) if n > 2 and ln.startswith(key))
    root = make_library(suicide=text)
    err = _error(root)
    assert (err.file, err.line, err.rule_id) == (str(root / "suicide.toml"), line, "s.bad")
    assert hint in err.hint, err.hint
    assert f"suicide.toml:{line}:" in str(err)


def test_subtable_errors_point_at_the_subtable(make_library: Callable[..., Path]) -> None:
    text = ('category = "suicide"\n[[rule]]\nid = "s.a"\nseverity = 4\nthreshold = 4\n'
            '[rule.weights]\n"how many" = 4\n"recipe" = -300\n')
    err = _error(make_library(suicide=text))
    assert err.line == 6 and "recipe" in err.hint and "-100 to 100" in err.hint


def test_weights_as_a_subtable_or_pairs_are_the_same_rule(
    make_library: Callable[..., Path],
) -> None:
    head = 'category = "suicide"\n[[rule]]\nid = "s.a"\nseverity = 4\nthreshold = 8\n'
    table = rules.load_library(make_library(
        suicide=head + '[rule.weights]\n"how many" = 4\nparacetamol = 6\n'))
    pairs = rules.load_library(make_library(
        suicide=head + 'weights = [["how many", 4], ["paracetamol", 6]]\n'))
    assert table.rules == pairs.rules and table.content_hash == pairs.content_hash
    (rule,) = table.rules
    assert rule.weights == (("how many", 4), ("paracetamol", 6)) and rule.phrases == ()
    assert rule.weighted and rule.threshold_for("staff") == 8


def test_thresholds_per_group(make_library: Callable[..., Path]) -> None:
    text = ('category = "suicide"\n[[rule]]\nid = "s.a"\nseverity = 4\n'
            'weights = { "ab cd" = 10 }\nthreshold = 8\nthresholds = { primary = 6, staff = 10 }\n'
            '[[rule]]\nid = "s.b"\nseverity = 4\ngroups = ["secondary", "staff"]\n'
            'weights = { "ab cd" = 10 }\nthresholds = { secondary = 7, staff = 9 }\n')
    a, b = rules.load_library(make_library(suicide=text)).rules
    assert [a.threshold_for(g) for g in rules.GROUPS] == [6, 8, 8, 10]
    assert a.threshold_for(None) == 6  # unknown band: fires if it would for some band
    assert (b.threshold_for("secondary"), b.threshold_for(None)) == (7, 7)
    assert a.thresholds == (("primary", 6), ("staff", 10))


def test_defaults_threshold_applies_only_to_scoring_rules(
    make_library: Callable[..., Path],
) -> None:
    text = ('category = "suicide"\n[defaults]\nthreshold = 6\nexclusion_scope = "context"\n'
            '[[rule]]\nid = "s.a"\nseverity = 4\nphrases = ["ab cd"]\n'
            '[[rule]]\nid = "s.b"\nseverity = 4\nweights = { "ab cd" = 7 }\n')
    a, b = rules.load_library(make_library(suicide=text)).rules
    assert (a.threshold, b.threshold) == (None, 6)
    assert a.exclusion_scope == b.exclusion_scope == "context"
    bad = text.replace("[defaults]\n", '[defaults]\nweights = { "x y" = 1 }\n')
    assert "[defaults] may only set" in _error(make_library(suicide=bad)).hint


def test_v1_rules_keep_their_canonical_form_and_hash() -> None:
    rule = rules.Rule("s.a", "suicide", 5, ("kill myself",), ("kill myself laughing",))
    d = rule_to_dict(rule)
    assert list(d) == V1_KEYS  # no v2 key appears unless it is set
    blob = json.dumps([d], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert rules.RuleSet((rule,)).content_hash == hashlib.sha256(blob.encode()).hexdigest()
    # the hash a v1 rule set had before v2 existed (pinned)
    assert rules.RuleSet((rule,)).content_hash == (
        "34dd027a0d464df5914e0f5e96b21fed82d27b3fcd23a28a84186d45da089104")


def test_v2_fields_round_trip_through_a_signed_bundle() -> None:
    rule = rules.Rule(
        "s.q", "suicide", 5, ("how to overdose", "kill myself"), ("overdose on cake",),
        weights=(("how many", 4), ("recipe", -10)),
        combos=(rules.Combo(("how many", "paracetamol"), 10),),
        threshold=8, thresholds=(("primary", 6),), pronouns="third",
        exclusion_scope="context")
    d = rule_to_dict(rule)
    assert d["weights"] == [["how many", 4], ["recipe", -10]]
    assert d["combos"] == [{"all": ["how many", "paracetamol"], "weight": 10}]
    assert (d["threshold"], d["thresholds"], d["pronouns"], d["exclusion_scope"]) == (
        8, {"primary": 6}, "third", "context")
    private, public = rules.generate_signing_key()
    ruleset = rules.RuleSet((rule,))
    loaded, info = rules.load_bundle(rules.compile_bundle(ruleset, private, 3), public)
    assert loaded.rules == (rule,) and info.content_hash == ruleset.content_hash
    assert [h.rule.id for h in loaded.evaluate("how many paracetamol")] == ["s.q"]


def test_a_v1_bundle_still_loads(library: rules.RuleSet) -> None:
    private, public = rules.generate_signing_key()
    v1 = rules.RuleSet(tuple(r for r in library.rules if not r.weighted))
    loaded, _ = rules.load_bundle(rules.compile_bundle(v1, private, 1), public)
    assert loaded.content_hash == v1.content_hash
    assert all("weights" not in rule_to_dict(r) for r in loaded.rules)


def test_default_library_uses_v2(library: rules.RuleSet) -> None:
    by_id = {r.id: r for r in library.rules}
    q = by_id["suicide.method_question"]
    assert q.weighted and q.combos and any(w < 0 for _, w in q.weights)
    assert by_id["suicide.friend_at_risk"].pronouns == "third"
    assert not by_id["bullying.tell_to_die"].pronouns  # "kill yourself" is bullying
