"""The README's first-run sections stay true: links stay inside the repository, the test
command's packages and steps are the ones scripts/test really has, and the test capture it
describes uses a real severity-5 phrase of the default library."""

from __future__ import annotations

import re
import tomllib

from tests.installer.helpers import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
SCRIPTS_TEST = (ROOT / "scripts" / "test").read_text(encoding="utf-8")


def test_links_stay_inside_the_repository() -> None:
    links = re.findall(r"\]\(([^)]+)\)", README)
    assert links
    for target in links:
        assert "://" not in target and not target.startswith("//"), target
        assert (ROOT / target.split("#")[0]).exists(), f"README links to missing {target}"
    outside = [u for u in re.findall(r"https?://[^\s`)]+", README)
               if not re.match(r"https?://(127\.0\.0\.1|localhost)[:/]", u)]
    assert not outside, outside


def test_the_test_command_is_described_as_it_is() -> None:
    m = re.search(r"^APT_PACKAGES=\(([^)]*)\)", SCRIPTS_TEST, re.MULTILINE)
    assert m, "scripts/test has no APT_PACKAGES=(...)"
    packages = m.group(1).split()
    said = re.search(r"the apt packages the tests need: (.*?)\.", README, re.DOTALL)
    assert said, "README does not list the apt packages scripts/test installs"
    listed = re.split(r",\s*|\s+and\s+", " ".join(said.group(1).split()))
    assert sorted(listed) == sorted(packages)
    for step in ("npm ci", ".venv/bin/ruff check .", ".venv/bin/mypy", "pytest",
                 'pip install -q -e ".[test]"'):
        assert step in SCRIPTS_TEST, step
    for said_step in ("`npm ci`", "`ruff check .`", "`mypy` (strict", "pytest suite",
                      "`.[test]`"):
        assert said_step in README, said_step


def test_the_test_capture_uses_a_severity_5_library_phrase() -> None:
    demo = (ROOT / "scripts" / "demo.py").read_text(encoding="utf-8")
    m = re.search(r'^TITLE = "([^"]+)"', demo, re.MULTILINE)
    assert m
    title = m.group(1)
    assert f'titled "{title}"' in README
    assert (ROOT / "scripts" / "demo-capture").stat().st_mode & 0o111
    library = tomllib.loads((ROOT / "rules" / "library" / "suicide.toml").read_text())
    (rule,) = [r for r in library["rule"] if r["id"] == "suicide.intent"]
    assert rule["severity"] == 5 and "window" in library["defaults"]["sources"]
    assert "end it all" in rule["phrases"] and "end it all" in title.lower()
    assert '"end it all" is a severity-5 phrase of the default library (`suicide.intent`)' \
        in " ".join(README.split())
