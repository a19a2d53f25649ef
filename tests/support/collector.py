"""Run a REAL collector for tests: ``vigil-collector init`` + ``serve`` in a subprocess,
listening on 127.0.0.1 port 0 (the real ports are parsed from its output).

    from tests.support.collector import start_collector

    c = start_collector(tmp_path, config={"smtp": {"host": "127.0.0.1", "port": 2525}})
    try:
        token = c.create_token(site="default", group="year-9")   # plaintext token
        # c.enrol_addr / c.stream_addr: "127.0.0.1:PORT"; c.ca_path / c.ca_pem: the CA
        # c.console_url: "https://127.0.0.1:PORT/" when console=True and the console exists
        # c.db_path: the SQLite file (open it read-only in tests to check what was stored)
        # c.cli("rules", "publish", str(dir)) runs the real CLI against the same data dir
    finally:
        c.stop()        # SIGTERM, waits for a clean exit; c.log() has its stderr

A pytest fixture is a three-liner (see tests/collector/conftest.py). Pair it with
tests.support.agent_client.AgentClient for an agent-like mTLS client.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RunningCollector", "init_data_dir", "serve", "start_collector", "toml_dumps"]

_LINE = re.compile(r"^(stream|enrol|console): (\S+)$")
_CLI = [sys.executable, "-m", "collector.cli"]
_ROOT = Path(__file__).resolve().parents[2]
#: A tiny valid rule folder published as version 1 (tests must not depend on the library's
#: current contents). Pass ``rules_dir=rules.DEFAULT_LIBRARY`` to use the real library.
TEST_RULES = _ROOT / "tests" / "collector" / "rules_v1"


def toml_dumps(config: dict[str, dict[str, Any]]) -> str:
    """Tiny TOML writer for {section: {key: str|int|float|bool|list}}."""
    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list | tuple):
            return "[" + ", ".join(val(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} as TOML")
    out = []
    for section, table in config.items():
        out.append(f"[{section}]")
        out += [f"{k} = {val(v)}" for k, v in table.items()]
        out.append("")
    return "\n".join(out)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def init_data_dir(data_dir: Path, *args: str) -> None:
    """Run ``vigil-collector init --data-dir data_dir`` (idempotent)."""
    r = subprocess.run([*_CLI, "init", "--data-dir", str(data_dir), *args],
                       capture_output=True, text=True, env=_env(), cwd=_ROOT, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"vigil-collector init failed ({r.returncode}): {r.stderr}")


@dataclass
class RunningCollector:
    data_dir: Path
    proc: subprocess.Popen[str]
    enrol_addr: str
    stream_addr: str
    console_url: str | None
    log_path: Path
    _lines: queue.Queue[str] = field(default_factory=queue.Queue)
    name: str = "collector"
    pump: threading.Thread | None = None

    @property
    def db_path(self) -> Path:
        return self.data_dir / "vigil.db"

    @property
    def ca_path(self) -> Path:
        return self.data_dir / "pki" / "ca.pem"

    @property
    def ca_pem(self) -> bytes:
        return self.ca_path.read_bytes()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``vigil-collector ARGS --data-dir <this data dir>``."""
        return subprocess.run([*_CLI, *args, "--data-dir", str(self.data_dir)], check=check,
                              capture_output=True, text=True, env=_env(), cwd=_ROOT,
                              timeout=120)

    def create_token(self, site: str = "default", group: str = "secondary", uses: int = 1,
                     expires: str = "1d") -> str:
        """Create an enrolment token through the real CLI; returns the secret."""
        out = self.cli("token", "create", "--site", site, "--group", group,
                       "--uses", str(uses), "--expires", expires)
        return out.stdout.strip().splitlines()[0]

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the live store (a separate read connection; WAL allows it)."""
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.pump is not None:
            self.pump.join(10)  # it has read to the end of the pipe once the process is gone
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode


def start_collector(tmp_path: Path, config: dict[str, dict[str, Any]] | None = None,
                    console: bool = False, init_args: tuple[str, ...] = (),
                    rules_dir: Path | None = None,
                    timeout: float = 60) -> RunningCollector:
    """Init ``tmp_path/collector`` (publishing ``rules_dir`` as version 1) and start
    ``vigil-collector serve`` on 127.0.0.1 port 0 for all three listeners."""
    data_dir = tmp_path / "collector"
    init_data_dir(data_dir, "--rules", str(rules_dir or TEST_RULES), *init_args)
    # ingest.check_rules is off by default HERE ONLY: most test areas send synthetic rule ids
    # (make_capture's "test-rule"). tests/collector/test_refusals.py and tests/conformance run
    # the product default (on) with config={"ingest": {"check_rules": True}}.
    cfg: dict[str, dict[str, Any]] = {"server": {"rules_poll_seconds": 0.2},
                                      "retention": {"purge_interval_hours": 24.0},
                                      "ingest": {"check_rules": False},
                                      # no scheduled weekly e-mail unless a test asks for one
                                      # (its first send depends on the day of the week)
                                      "reports": {"weekly_day": ""}}
    for section, table in (config or {}).items():
        cfg.setdefault(section, {}).update(table)
    (data_dir / "collector.toml").write_text(toml_dumps(cfg))
    return serve(data_dir, data_dir / "serve.log", console=console, timeout=timeout)


def serve(data_dir: Path, log_path: Path, *, console: bool = False, name: str = "collector",
          timeout: float = 60) -> RunningCollector:
    """Start ``vigil-collector serve`` on an existing data dir (port 0 for every listener)
    and return it once it prints ``ready`` (its gRPC health service is SERVING by then).
    Several may serve one data dir: stateless collectors on one store (tests/e2e/
    test_failover.py, bench/trust.py). Raises with the log when it exits or times out,
    having closed its pipe and pump thread."""
    args = [*_CLI, "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
            "--enroll-listen", "127.0.0.1:0", "--console-listen", "127.0.0.1:0"]
    if not console:
        args.append("--no-console")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True,
                                env=_env(), cwd=_ROOT)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put("")

    pumping = threading.Thread(target=pump, daemon=True)
    pumping.start()

    def fail(exc: Exception) -> Exception:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        pumping.join(10)
        assert proc.stdout is not None
        proc.stdout.close()
        return exc

    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise fail(TimeoutError(f"{name} did not start in {timeout} s:\n"
                                    f"{log_path.read_text()}")) from None
        if line == "ready":
            return RunningCollector(data_dir, proc, found["enrol"], found["stream"],
                                    found.get("console"), log_path, lines, name=name,
                                    pump=pumping)
        if line == "" and proc.poll() is not None:
            raise fail(RuntimeError(f"{name} exited ({proc.returncode}):\n"
                                    f"{log_path.read_text()}"))
        m = _LINE.match(line)
        if m:
            found[m.group(1)] = m.group(2)
