"""Fuzz the file formats a school edits by hand: rule files and both config files.

Seeds are the real shipped rule library and realistic configs; hypothesis mutates them
(cut, insert, replace, duplicate lines, raw bytes that are not UTF-8, wrong value types).
Whatever comes out, the loader either loads it completely or raises its own typed error
naming the file (and the line or key where it can): never a traceback from somewhere else.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import rules
from agent.config import ConfigError as AgentConfigError
from agent.config import load_config as load_agent_config
from collector.config import ConfigError as CollectorConfigError
from collector.config import load_config as load_collector_config

SEEDS = {p.name: p.read_bytes() for p in sorted(rules.DEFAULT_LIBRARY.glob("*.toml"))}
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

AGENT_SEED = b"""[agent]
collector = "collector.school.uk:7443"
context_chars = 120
screenshot_min_severity = 4
backoff_initial_seconds = 1.0
excluded_windows = ["password", "bank"]
watch_keys = true
rules_library = "/opt/vigil/rules"
"""
COLLECTOR_SEED = b"""[server]
listen = "0.0.0.0:7443"
allowed_hosts = ["localhost", "vigil.school.uk"]
rules_poll_seconds = 1.0
max_connections = 20000

[enrolment]
rate_per_second = 5.0
burst = 20

[retention]
closed_days = 365
"""
TOML_BITS = ["=", "[", "]", "[[rule]]", '"', "'''", "\n", "#", "{", "}", ",", "severity = ",
             "phrases = ", "true", "1e400", "nan", "-1", "99999999999999999999", "\\u0000",
             "[agent]", "[server]", "x.y = 1", "= =", "[[server]]", "\x00", "\ud800"]


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["cut", "insert", "replace", "dup", "bytes"]))
        i = draw(st.integers(0, len(data)))
        j = draw(st.integers(i, min(len(data), i + 40)))
        if op == "cut":
            del data[i:j]
        elif op == "insert":
            bit = draw(st.sampled_from(TOML_BITS) | st.text(max_size=12))
            data[i:i] = bit.encode("utf-8", "surrogatepass")
        elif op == "replace":
            data[i:j] = draw(st.sampled_from(TOML_BITS)).encode("utf-8", "surrogatepass")
        elif op == "dup":
            lines = bytes(data).splitlines(keepends=True)
            if lines:
                k = draw(st.integers(0, len(lines) - 1))
                lines.insert(k, lines[k])
                data = bytearray(b"".join(lines))
        else:
            data[i:i] = draw(st.binary(min_size=1, max_size=6))
    return bytes(data)


@SETTINGS
@given(st.data())
def test_mutated_rule_files_load_fully_or_fail_with_a_typed_error(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(SEEDS)))
    text = data.draw(mutated(SEEDS[name]))
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / name).write_bytes(text)
        try:
            rs = rules.load_library(d)
        except rules.RuleError as exc:
            msg = str(exc)
            assert name in msg, msg  # names the file
            assert exc.hint and "Traceback" not in msg
            return
        # loaded: every rule is complete and usable (never half-loaded)
        for r in rs.rules:
            assert r.id and r.category in rules.CATEGORIES and 1 <= r.severity <= 5
        rs.scan("some harmless text", "keys")


def _load_agent(text: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "agent.toml"
        path.write_bytes(text)
        try:
            cfg = load_agent_config(path)
        except AgentConfigError as exc:
            assert str(path) in str(exc), str(exc)
            return
        assert cfg.context_chars >= 10 and 1 <= cfg.screenshot_min_severity <= 6
        assert all(isinstance(w, str) for w in cfg.excluded_windows)


def _load_collector(text: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "collector.toml"
        path.write_bytes(text)
        try:
            cfg = load_collector_config(path, data_dir=Path(d))
        except CollectorConfigError as exc:
            assert str(path) in str(exc), str(exc)
            return
        assert all(isinstance(h, str) for h in cfg.server.allowed_hosts)
        assert isinstance(cfg.enrolment.burst, int)


@SETTINGS
@given(mutated(AGENT_SEED))
@example(b"[agent]\ncollector = \"\xff\xfe\"\n")          # not UTF-8
@example(b"[agent]\ncontext_chars = \"120\"\n")          # wrong type
@example(b"[agent]\nexcluded_windows = [1, 2]\n")        # wrong element type
@example(b"agent = 5\n")                                  # section is not a table
def test_mutated_agent_config_loads_or_names_the_file(text: bytes) -> None:
    _load_agent(text)


@SETTINGS
@given(mutated(COLLECTOR_SEED))
@example(b"[server]\nlisten = \"\xff\xfe\"\n")            # not UTF-8
@example(b"[server]\nallowed_hosts = [1, 2]\n")           # wrong element type
@example(b"[enrolment]\nburst = true\n")                  # bool for an int
@example(b"server = 5\n")                                 # section is not a table
def test_mutated_collector_config_loads_or_names_the_file(text: bytes) -> None:
    _load_collector(text)
