"""The real ``vigil-rules`` command, run as a subprocess."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import rules

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.mark.parametrize("args", [[], ["check"], ["scan"], ["compile"], ["keygen"]])
def test_every_command_has_help(run_cli: Run, args: list[str]) -> None:
    res = run_cli(*args, "--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: vigil-rules")
    assert len(res.stdout.splitlines()) >= 4
    if args:
        # the sub-command's description is real text, not just the usage line
        assert any(len(line.split()) > 5 for line in res.stdout.splitlines()[2:])


def test_check_prints_a_summary_per_category(run_cli: Run) -> None:
    res = run_cli("check", str(rules.DEFAULT_LIBRARY))
    assert res.returncode == 0, res.stderr
    for cat in rules.CATEGORIES:
        assert f"\n{cat} " in res.stdout
    assert "total" in res.stdout and "is valid" in res.stdout


def test_check_reports_every_problem_without_traceback(run_cli: Run, tmp_path: Path) -> None:
    (tmp_path / "drugs.toml").write_text(
        'category = "drugs"\n[[rule]]\nid = "d.a"\nseverity = 6\nphrases = ["buy weed"]\n')
    (tmp_path / "gambling.toml").write_text("category = \n")
    res = run_cli("check", str(tmp_path))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in res.stderr
    assert any("drugs.toml:4:" in ln and "'d.a'" in ln and "severity 6" in ln for ln in lines)
    assert any("gambling.toml:1:" in ln and "not valid TOML" in ln for ln in lines)


def test_scan_output_format(run_cli: Run) -> None:
    text = "hello there\nI want to k1ll myself\n\nfree vpn download\n"
    res = run_cli("scan", "--rules", str(rules.DEFAULT_LIBRARY), stdin=text)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert rows[0] == {"line": 1, "hits": []}
    assert rows[1] == {"line": 2, "hits": [{"rule": "suicide.intent", "category": "suicide",
                                             "severity": 5, "match": "want to k1ll myself",
                                             "score": None,
                                             "reasons": ["phrase 'want to kill myself'"]}]}
    assert rows[2] == {"line": 3, "hits": []}
    assert rows[3]["line"] == 4 and rows[3]["hits"][0]["rule"] == "circumvention.vpn_proxy"
    assert list(rows[1]["hits"][0]) == ["rule", "category", "severity", "match", "score",
                                        "reasons"]


def test_scan_reports_both_layers_once_per_rule_with_reasons(run_cli: Run) -> None:
    text = ("how many paracetamol would it take to die\n"  # weighted: context layer only
            "thinking about s*icide methods\n"  # masked: context layer only
            "i want to kill myself, i want to kill myself\n")  # both layers, one hit
    res = run_cli("scan", stdin=text)
    assert res.returncode == 0, res.stderr
    first, second, third = (json.loads(line)["hits"] for line in res.stdout.splitlines())
    (hit,) = first
    assert hit["rule"] == "suicide.method_question" and hit["score"] >= 8
    assert "'how many' + 'die' +7" in hit["reasons"]
    assert any(r.startswith("score ") for r in hit["reasons"])
    assert [h["rule"] for h in second] == ["suicide.method"]
    assert "masked 's*icide'→'suicide'" in second[0]["reasons"]
    assert [h["rule"] for h in third] == ["suicide.intent"]
    assert third[0]["reasons"] == ["phrase 'want to kill myself'"]


def test_scan_finds_a_phrase_after_a_giant_token(run_cli: Run) -> None:
    # regression: a single token over 4,096 characters made the matcher lose the next word
    res = run_cli("scan", "--source", "window", stdin="x" * 4101 + " kill myself\n")
    assert res.returncode == 0, res.stderr
    assert [h["rule"] for h in json.loads(res.stdout)["hits"]] == ["suicide.intent"]


def test_scan_lines_do_not_run_together(run_cli: Run, make_library: Callable[..., Path]) -> None:
    root = make_library(suicide='category = "suicide"\n[[rule]]\nid = "s.a"\nseverity = 5\n'
                        'phrases = ["kill myself"]\n')
    res = run_cli("scan", "--rules", str(root), stdin="i will kill\nmyself\nkill myself")
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [len(r["hits"]) for r in rows] == [0, 0, 1]


def test_scan_group_filter(run_cli: Run) -> None:
    staff = run_cli("scan", "--group", "staff", stdin="unblocked games\n")
    pupil = run_cli("scan", "--group", "secondary", stdin="unblocked games\n")
    assert json.loads(staff.stdout)["hits"] == []
    assert json.loads(pupil.stdout)["hits"][0]["category"] == "circumvention"


def test_scan_bad_group_and_bad_rules(run_cli: Run, tmp_path: Path) -> None:
    res = run_cli("scan", "--group", "year7", stdin="x\n")
    assert res.returncode == 2 and "invalid choice" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = run_cli("compile", str(rules.DEFAULT_LIBRARY))
    assert res.returncode == 2 and "--key" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = run_cli("scan", "--rules", str(tmp_path / "missing"), stdin="x\n")
    assert res.returncode == 2 and "not a directory" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_keygen_compile_and_load(run_cli: Run, tmp_path: Path) -> None:
    res = run_cli("keygen", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    private, public = tmp_path / "rules-signing.key", tmp_path / "rules-signing.pub"
    assert private.stat().st_mode & 0o777 == 0o600
    again = run_cli("keygen", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr

    bundle = tmp_path / "rules.bundle"
    lib = str(rules.DEFAULT_LIBRARY)
    res = run_cli("compile", lib, "--key", str(private), "-o", str(bundle))
    assert res.returncode == 0, res.stderr
    assert "version 1" in res.stdout
    res = run_cli("compile", lib, "--key", str(private), "-o", str(bundle))
    assert "version 2" in res.stdout  # versions only increase
    res = run_cli("compile", lib, "--key", str(private), "-o", str(bundle), "--version", "2")
    assert res.returncode == 2 and "versions only increase" in res.stderr
    ruleset, info = rules.load_bundle(bundle.read_bytes(), public.read_bytes(), min_version=2)
    assert info.version == 2 and ruleset.content_hash == rules.load_library(lib).content_hash


def test_compile_with_missing_key(run_cli: Run, tmp_path: Path) -> None:
    res = run_cli("compile", str(rules.DEFAULT_LIBRARY), "--key", str(tmp_path / "nope.key"),
                  "-o", str(tmp_path / "b"))
    assert res.returncode == 2 and "vigil-rules keygen" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    res = run_cli("compile", str(rules.DEFAULT_LIBRARY), "--key", str(bad), "-o",
                  str(tmp_path / "b"))
    assert res.returncode == 2 and "signing key" in res.stderr and "Traceback" not in res.stderr


def test_scan_with_the_shipped_scorer_adds_its_hits_with_reasons(run_cli: Run) -> None:
    res = run_cli("scan", "--model", "shipped", stdin="I want to k1ll myself\n")
    assert res.returncode == 0, res.stderr
    (row,) = [json.loads(line) for line in res.stdout.splitlines()]
    model = [h for h in row["hits"] if h["rule"].startswith("model.")]
    assert model and model[0]["category"] == "suicide"
    assert 0 < model[0]["score"] <= 1 and model[0]["reasons"][0].startswith("model ")
