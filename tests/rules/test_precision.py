"""Precision of the default library: benign lookalikes never hit, concerning lines always do.

Driven through the real ``vigil-rules scan`` command as well as the API.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import rules

DATA = Path(__file__).resolve().parent / "data"


def _lines(name: str) -> list[str]:
    text = (DATA / name).read_text(encoding="utf-8")
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


BENIGN = _lines("benign.txt")
CONCERNING = [tuple(ln.split("\t", 1)) for ln in _lines("concerning.txt")]


def test_data_files_are_substantial() -> None:
    assert len(BENIGN) >= 80
    assert len(CONCERNING) >= 80
    assert {cat for cat, _ in CONCERNING} == set(rules.CATEGORIES)


@pytest.mark.parametrize("group", [None, *rules.GROUPS])
def test_benign_lookalikes_never_hit(library: rules.RuleSet, group: str | None) -> None:
    m = library.matcher(group=group)
    hits = {line: [h.rule.id for h in m.scan(line) + library.evaluate(line, group=group)]
            for line in BENIGN}
    assert {k: v for k, v in hits.items() if v} == {}


def test_concerning_lines_hit_their_category(library: rules.RuleSet) -> None:
    # both layers, as the agent runs them: some v2 rules (weights) are context-layer only
    missed = []
    for category, line in CONCERNING:
        got = {h.rule.category for h in library.scan(line) + library.evaluate(line)}
        if category not in got:
            missed.append((category, line, sorted(got)))
    assert missed == []


def test_scan_command_on_precision_files(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    benign = run_cli("scan", "--rules", str(rules.DEFAULT_LIBRARY),
                     stdin="\n".join(BENIGN) + "\n")
    assert benign.returncode == 0, benign.stderr
    rows = [json.loads(r) for r in benign.stdout.splitlines()]
    assert [r["line"] for r in rows] == list(range(1, len(BENIGN) + 1))
    assert [r for r in rows if r["hits"]] == []

    concerning = run_cli("scan", stdin="\n".join(text for _, text in CONCERNING) + "\n")
    assert concerning.returncode == 0, concerning.stderr
    rows = [json.loads(r) for r in concerning.stdout.splitlines()]
    assert len(rows) == len(CONCERNING)
    for (category, text), row in zip(CONCERNING, rows, strict=True):
        assert category in {h["category"] for h in row["hits"]}, (text, row)
        for h in row["hits"]:
            assert h["match"] and h["match"] in text  # the text as typed


def test_identity_words_alone_are_never_a_concern(library: rules.RuleSet) -> None:
    words = ["gay", "lesbian", "trans", "transgender", "bisexual", "queer", "Muslim", "Islam",
             "Jewish", "Jew", "Black", "Asian", "disabled", "autistic", "Sikh", "Hindu",
             "Christian", "immigrant", "refugee", "Gypsy", "Roma", "Traveller"]
    for w in words:
        for text in (w, f"I am {w}", f"my friend is {w}", f"{w} people", f"{w} rights"):
            assert library.scan(text) == [], text


def test_welsh_and_text_speak_are_covered(library: rules.RuleSet) -> None:
    welsh = [r for r in library.rules if r.language == "cy"]
    assert len({r.category for r in welsh}) >= 6
    for text in ("kms", "kys", "unalive myself", "dwi isio marw"):
        assert library.scan(text), text


def test_concerning_lines_typed_with_corrected_typos_still_hit(library: rules.RuleSet) -> None:
    m = library.matcher()
    for category, line in CONCERNING:
        hits: list[rules.Hit] = []
        cut = len(line) // 2
        for ch in line[:cut] + "zq":  # a typo in the middle...
            hits += m.feed(ch)
        m.backspace()
        m.backspace()  # ...corrected
        for ch in line[cut:]:
            hits += m.feed(ch)
        hits += m.reset()
        hits += library.evaluate(line)  # the context layer runs at the boundary (Enter)
        assert category in {h.rule.category for h in hits}, line
        assert all(h.context in line for h in hits)
