"""Fixtures for the rules tests: the default library, temp libraries, the real CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import rules

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def library() -> rules.RuleSet:
    return rules.load_library(rules.DEFAULT_LIBRARY)


@pytest.fixture
def make_library(tmp_path: Path) -> Callable[..., Path]:
    """Write ``{file_stem: toml_text}`` into a fresh folder and return it."""
    counter = iter(range(1000))

    def make(**files: str) -> Path:
        root = tmp_path / f"lib{next(counter)}"
        root.mkdir()
        for stem, text in files.items():
            (root / f"{stem}.toml").write_text(textwrap.dedent(text), encoding="utf-8")
        return root

    return make


@pytest.fixture
def one_rule(make_library: Callable[..., Path]) -> Callable[..., rules.RuleSet]:
    """Factory: a one-rule library (id "t.rule", severity 3) for focused matcher tests."""

    def make(phrases: list[str], exclusions: tuple[str, ...] = (),
             category: str = "violence_weapons", **extra: str) -> rules.RuleSet:
        ph = ", ".join(f'"{p}"' for p in phrases)
        ex = ", ".join(f'"{p}"' for p in exclusions)
        more = "".join(f"{k} = {v}\n" for k, v in extra.items())
        text = (f'category = "{category}"\n[[rule]]\nid = "t.rule"\nseverity = 3\n'
                f"phrases = [{ph}]\nexclusions = [{ex}]\n{more}")
        return rules.load_library(make_library(**{category: text}))

    return make


def cli_command() -> list[str]:
    """The installed ``vigil-rules`` entry point (falls back to ``python -m rules.cli``)."""
    exe = Path(sys.executable).with_name("vigil-rules")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("vigil-rules")
    return [found] if found else [sys.executable, "-m", "rules.cli"]


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, stdin: str = "", cwd: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli_command(), *args], input=stdin, capture_output=True,
                              text=True, cwd=cwd or ROOT, timeout=120, check=False)

    return run
