"""docs/configuration.md documents every agent and collector config key with the default the
code really uses (checked against agent.config / collector.config, not a copy of them)."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest

from tests.installer.helpers import ROOT

DOC = ROOT / "docs" / "configuration.md"


def _toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    raise TypeError(f"no TOML rendering for {value!r}")


def _documented() -> dict[str, dict[str, str]]:
    """{section heading: {key: default cell}} for every table under a ``###`` heading."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^###\s+(.*?)\s*$", line)
        if heading:
            current = sections.setdefault(heading.group(1).strip("`"), {})
            continue
        if line.startswith("## "):
            current = None
            continue
        row = re.match(r"^\|\s*`([\w.]+)`\s*\|\s*(.*?)\s*\|", line)
        if row and current is not None:
            current[row.group(1)] = row.group(2)
    return sections


def _expected_cell(value: Any) -> str:
    return f"`{_toml_literal(value)}`"


def _check(section: str, obj: Any, skip: frozenset[str] = frozenset()) -> list[str]:
    doc = _documented().get(section)
    if doc is None:
        return [f"docs/configuration.md has no '### {section}' section"]
    problems = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in skip or dataclasses.is_dataclass(value):
            continue
        if f.name not in doc:
            problems.append(f"{section}: key '{f.name}' is not documented "
                            f"(default {_toml_literal(value)})")
        elif doc[f.name] != _expected_cell(value):
            problems.append(f"{section}: key '{f.name}' is documented with default "
                            f"{doc[f.name]}, the code says {_expected_cell(value)}")
    return problems


def test_every_agent_key_is_documented_with_its_default() -> None:
    from agent.config import Config

    problems = _check("[agent]", Config(), skip=frozenset({"extra"}))
    assert not problems, "\n".join(problems)


def test_every_collector_key_is_documented_with_its_default() -> None:
    from collector.config import Config

    cfg = Config()
    problems = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            problems += _check(f"[{f.name}]", value)
        elif f.name not in _documented().get("Top level", {}):
            problems.append(f"top-level key '{f.name}' is not documented")
    assert not problems, "\n".join(problems)


def test_the_enroll_table_matches_the_session_launcher() -> None:
    launcher = (ROOT / "installer" / "vigil_session.py").read_text()
    keys = set(re.findall(r'for key in \(([^)]*)\)', launcher)[0].replace('"', "").split(", "))
    assert set(_documented()["[enroll]"]) == keys


def test_documented_sections_are_real(tmp_path: Any) -> None:
    """Each documented collector section is accepted by the real loader (no stale tables)."""
    from collector.config import load_config

    names = [s.strip("[]") for s in _documented() if s.startswith("[") and s != "[agent]"
             and s != "[enroll]"]
    cfg_file = tmp_path / "collector.toml"
    cfg_file.write_text("".join(f"[{n}]\n" for n in names))
    load_config(cfg_file, tmp_path)


@pytest.mark.parametrize("bad", ["[server]\nlisten = 7443\n", "[smtp]\nhots = 'x'\n"])
def test_collector_config_errors_name_file_and_key(tmp_path: Any, bad: str) -> None:
    """The doc promises errors that name the file and the key: hold the code to it."""
    from collector.config import ConfigError, load_config

    cfg_file = tmp_path / "collector.toml"
    cfg_file.write_text(bad)
    with pytest.raises(ConfigError) as err:
        load_config(cfg_file, tmp_path)
    key = "server.listen" if "listen" in bad else "smtp.hots"
    assert str(cfg_file) in str(err.value) and key in str(err.value)


def test_agent_config_errors_name_file_and_key(tmp_path: Any) -> None:
    from agent.config import ConfigError, load_config

    cfg_file = tmp_path / "agent.toml"
    cfg_file.write_text('[agent]\ncontext_chars = "120"\n')
    with pytest.raises(ConfigError) as err:
        load_config(cfg_file)
    assert str(cfg_file) in str(err.value) and "context_chars" in str(err.value)
