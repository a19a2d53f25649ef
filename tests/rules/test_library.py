"""Rule files: validation errors name file, line, rule id and the fix; nothing half-loads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import rules

GOOD = """\
category = "bullying"

[[rule]]
id = "b.one"
severity = 2
phrases = ["nobody likes you"]
"""


def _error(root: Path) -> rules.RuleError:
    with pytest.raises(rules.RuleError) as info:
        rules.load_library(root)
    return info.value


@pytest.mark.parametrize(
    ("body", "key", "hint"),
    [
        ('severity = 9\nphrases = ["ab cd"]', "severity", "severity 9 must be a whole number"),
        ('severity = 2\nphrases = ["ab cd"]\ngroups = ["year7"]', "groups", "groups"),
        ('severity = 2\nphrases = ["ab cd"]\nsources = ["mic"]', "sources", "sources"),
        ('severity = 2\nphrases = ["ab cd"]\nsevertiy = 3', "severtiy", "unknown key 'severtiy'"),
        ('severity = 2\nphrases = "ab cd"', "phrases", "must be a list of strings"),
        ("severity = 2\nphrases = []", "phrases", "no phrases"),
        ('severity = 2\nphrases = ["a"]', "phrases", "fewer than 2 letters"),
        ('severity = 2\nphrases = ["k1ll", "KILL"]', "phrases", "duplicates"),
        ('severity = 2\nphrases = ["ab cd"]\nlanguage = "Welsh"', "language", "language"),
        ('severity = 2\nphrases = ["ab cd"]\nscreenshot = "no"', "screenshot", "true or false"),
        ('severity = 2\nsources = ["keys"]\nphrases = []\non_mount = true', "on_mount", "media"),
        ('severity = 2\nphrases = ["ab cd"]\ncategory = "drugs"', "category", "differs"),
        ('severity = 2\nphrases = ["ab cd"]\nexclusions = [3]', "exclusions", "list of strings"),
    ],
)
def test_rule_errors_name_file_line_rule_and_fix(
    make_library: Callable[..., Path], body: str, key: str, hint: str
) -> None:
    rule_id = "x.bad"
    text = f'category = "bullying"\n# a comment line\n[[rule]]\nid = "{rule_id}"\n{body}\n'
    line = 1 + next(n for n, ln in enumerate(text.splitlines()) if n > 2 and ln.startswith(key))
    root = make_library(bullying=text)
    err = _error(root)
    assert err.file == str(root / "bullying.toml")
    assert err.line == line
    assert err.rule_id == rule_id
    assert hint in err.hint
    msg = str(err)
    assert f"bullying.toml:{line}:" in msg and rule_id in msg and hint in msg


def test_second_rule_gets_its_own_line(make_library: Callable[..., Path]) -> None:
    root = make_library(bullying=GOOD + '\n[[rule]]\nid = "b.two"\nseverity = 0\n'
                        'phrases = ["ab cd"]\n')
    err = _error(root)
    assert (err.line, err.rule_id) == (10, "b.two")  # the severity line of the 2nd rule


def test_toml_syntax_error_names_the_line(make_library: Callable[..., Path]) -> None:
    root = make_library(bullying=GOOD + '\n[[rule]]\nid = "b.two\n')
    err = _error(root)
    assert err.line == 9 and "not valid TOML" in err.hint


def test_bad_id_and_unknown_category(make_library: Callable[..., Path]) -> None:
    err = _error(make_library(bullying=GOOD.replace('"b.one"', '"B One!"')))
    assert "'id' must be" in err.hint
    err = _error(make_library(x=GOOD.replace('"bullying"', '"memes"')))
    assert err.line == 1 and "memes" in err.hint and "self_harm" in err.hint


def test_one_bad_file_means_nothing_loads(make_library: Callable[..., Path]) -> None:
    bad = GOOD.replace("b.one", "d.one").replace('"bullying"', '"drugs"').replace("2", "7")
    root = make_library(bullying=GOOD, drugs=bad)
    err = _error(root)
    assert err.file.endswith("drugs.toml") and err.rule_id == "d.one"
    (root / "drugs.toml").unlink()
    assert [r.id for r in rules.load_library(root).rules] == ["b.one"]


def test_every_problem_is_reported_at_once(make_library: Callable[..., Path]) -> None:
    root = make_library(
        bullying=GOOD.replace("2", "8"),
        drugs=GOOD.replace('"bullying"', '"drugs"').replace("b.one", "d.one").replace("2", "0"),
    )
    err = _error(root)
    assert len(err.errors) == 2 and "1 more problem" in str(err)
    assert {e.rule_id for e in err.errors} == {"b.one", "d.one"}


def test_duplicate_ids_across_files(make_library: Callable[..., Path]) -> None:
    root = make_library(bullying=GOOD, drugs=GOOD.replace('"bullying"', '"drugs"'))
    err = _error(root)
    assert err.rule_id == "b.one" and "already used" in err.hint


def test_missing_or_empty_folder(tmp_path: Path) -> None:
    assert "not a directory" in _error(tmp_path / "nope").hint
    assert "no *.toml" in _error(tmp_path).hint


def test_defaults_apply_and_rules_can_override(make_library: Callable[..., Path]) -> None:
    text = ('category = "drugs"\n[defaults]\nseverity = 2\ngroups = ["secondary"]\n'
            '[[rule]]\nid = "d.a"\nphrases = ["buy weed"]\n'
            '[[rule]]\nid = "d.b"\nseverity = 4\ngroups = ["staff"]\nphrases = ["sell weed"]\n')
    a, b = rules.load_library(make_library(drugs=text)).rules
    assert (a.severity, a.groups) == (2, frozenset({"secondary"}))
    assert (b.severity, b.groups) == (4, frozenset({"staff"}))
    assert a.sources == frozenset(rules.SOURCES) and a.language == "en"


def test_default_library_covers_everything(library: rules.RuleSet) -> None:
    cats = {r.category for r in library.rules}
    assert cats == set(rules.CATEGORIES)
    assert frozenset({"csam"}) == rules.ILLEGAL_CATEGORIES
    assert all(not r.screenshot for r in library.rules if r.category == "csam")
    phrases = sum(len(r.phrases) for r in library.rules)
    assert 300 <= phrases <= 2000
    assert all(1 <= r.severity <= 5 for r in library.rules)
    assert any(r.severity == 5 for r in library.rules if r.category == "suicide")
    assert len({r.id for r in library.rules}) == len(library.rules)
    files = sorted(p.stem for p in rules.DEFAULT_LIBRARY.glob("*.toml"))
    assert files == sorted(rules.CATEGORIES)


def test_content_hash_is_canonical(library: rules.RuleSet) -> None:
    again = rules.load_library(rules.DEFAULT_LIBRARY)
    assert again.content_hash == library.content_hash
    shuffled = rules.RuleSet(tuple(reversed(library.rules)))
    assert shuffled.content_hash == library.content_hash
    changed = rules.RuleSet(library.rules[1:])
    assert changed.content_hash != library.content_hash


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ('category = "drugs"\nrule = [1, 2]\n', "[[rule]] table"),
        ('category = "drugs"\nrule = "x"\n', "no [[rule]] tables"),
        ('category = ["drugs"]\n[[rule]]\nid = "d.a"\n', "missing or unknown"),
        ('category = "drugs"\ndefaults = 3\n', "[defaults] may only set"),
        ('category = "drugs"\nextra = 1\n', "unknown top-level key"),
        ('category = "drugs"\n[[rule]]\nid = "d.a"\nseverity = 2.0\nphrases = ["ab"]\n',
         "whole number"),
        ('category = "drugs"\n[[rule]]\nid = "d.a"\nseverity = 2\nphrases = ["*"]\n',
         "fewer than 2 letters"),
    ],
)
def test_malformed_files_get_a_rule_error_not_a_crash(
    make_library: Callable[..., Path], text: str, hint: str
) -> None:
    err = _error(make_library(drugs=text))
    assert err.file.endswith("drugs.toml") and hint in err.hint


def test_undecodable_file(tmp_path: Path) -> None:
    (tmp_path / "drugs.toml").write_bytes(b'category = "drugs"\n\xff\xfe')
    err = _error(tmp_path)
    assert "UTF-8" in err.hint and err.file.endswith("drugs.toml")


def test_bad_default_is_reported_where_it_is_written(make_library: Callable[..., Path]) -> None:
    text = ('category = "drugs"\n\n[defaults]\nsources = ["keys"]\nseverity = 11\n\n'
            '[[rule]]\nid = "d.a"\nphrases = ["buy weed"]\n')
    err = _error(make_library(drugs=text))
    assert (err.line, err.rule_id) == (5, "d.a") and "[defaults]" in err.hint
