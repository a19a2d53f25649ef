"""Run a real Vigil agent in tests: in-process (asyncio task) or as a ``vigil-agent`` process.

In-process (fast; inject backends and the channel factory; the same event loop as the test)::

    from tests.support.agent import InProcessAgent, no_backends, spool_captures

    async with InProcessAgent(data_dir, config, backends=no_backends()) as agent:
        agent.runtime.monitor.on_key(KeyEvent("char", "a"))   # drive it with plain events
        await agent.wait_for(lambda: spool_captures(data_dir), what="a capture")

As a process (what a pupil's laptop runs; real X display via ``env``)::

    from tests.support.agent import AgentProcess, enroll_cli

    enroll_cli(data_dir, "127.0.0.1:7444", token, ca_file)        # vigil-agent enroll
    with AgentProcess(data_dir, config_file=cfg, env=x.env) as proc:
        proc.wait_for_log("Vigil agent is running")
        proc.wait_for_focus(window_id)      # with extra_args=("--verbose",)
        ...
    print(proc.output)                                           # stderr+stdout of the agent

``config_file`` is a TOML file with an ``[agent]`` table (see agent/config.py; e.g.
``collector = "127.0.0.1:PORT"`` and ``rules_library = "/path/to/library"``). Captures
waiting in a data dir's spool can be read at any time with :func:`spool_captures`.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["AgentProcess", "InProcessAgent", "enroll_cli", "no_backends", "spool_captures",
           "write_config"]

ROOT = Path(__file__).resolve().parents[2]


def _agent_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("vigil-agent")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "agent.cli"]


def spool_captures(data_dir: Path) -> list[Any]:
    """Every capture waiting in the spool of *data_dir* (read-only; safe while it runs)."""
    from proto import vigil_pb2 as pb

    path = Path(data_dir) / "spool.sqlite3"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT payload FROM captures ORDER BY seq").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()
    return [pb.Capture.FromString(r[0]) for r in rows]


def write_config(path: Path, **values: Any) -> Path:
    """Write an ``[agent]`` TOML config file from keyword values (str, int, bool, lists)."""
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    path.write_text("[agent]\n" + "".join(f"{k} = {fmt(v)}\n" for k, v in values.items()))
    return path


def enroll_cli(data_dir: Path, server: str, token: str, ca_file: Path,
               collector: str = "", env: dict[str, str] | None = None) -> str:
    """Run ``vigil-agent enroll``; return its stdout. Raises CalledProcessError on failure."""
    cmd = [*_agent_cmd(), "enroll", "--server", server, "--token", token, "--ca", str(ca_file),
           "--data-dir", str(data_dir)]
    if collector:
        cmd += ["--collector", collector]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=True,
                         cwd=ROOT)
    return out.stdout


def no_backends() -> Any:
    """Backends with no OS sources: drive the monitor by calling it directly."""
    from agent.platform import Backends

    return Backends("test", None, None, None)


class InProcessAgent:
    """``AgentRuntime.run`` as an asyncio task in the current loop."""

    def __init__(self, data_dir: Path | Any, config: Any, **runtime_kwargs: Any) -> None:
        from agent.paths import DataDir
        from agent.runtime import AgentRuntime

        data = data_dir if isinstance(data_dir, DataDir) else DataDir(Path(data_dir))
        self.runtime = AgentRuntime(data, config, **runtime_kwargs)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> InProcessAgent:
        self._task = asyncio.create_task(self.runtime.run(self._stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, timeout=30)
            self._task = None

    async def wait_for(self, cond: Callable[[], Any], timeout: float = 20.0,
                       what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = cond()
            if value:
                return value
            if self._task is not None and self._task.done():
                self._task.result()
                raise AssertionError(f"agent stopped while waiting for {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            await asyncio.sleep(0.05)


class AgentProcess:
    """``vigil-agent run`` as a child process; output captured to a temp file."""

    def __init__(self, data_dir: Path, config_file: Path | None = None,
                 env: dict[str, str] | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.data_dir = Path(data_dir)
        self.cmd = [*_agent_cmd(), "run", "--data-dir", str(data_dir), *extra_args]
        if config_file is not None:
            self.cmd += ["--config", str(config_file)]
        self.env = dict(env if env is not None else os.environ)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        fd, name = tempfile.mkstemp(prefix="vigil-agent-", suffix=".out")
        os.close(fd)
        self.out_path = Path(name)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT,
                                         env=self.env, cwd=ROOT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"agent exited ({self.proc.returncode}):\n{self.output}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {text!r} in agent output after {timeout:.0f}s:\n"
                                   f"{self.output}")
            time.sleep(0.05)

    def current_focus(self) -> int | None:
        """The window id the agent last saw take focus (needs ``--verbose``: the agent logs
        ``focus: window 0x...`` at debug level; titles are never logged)."""
        ids = re.findall(r"focus: window (0x[0-9a-f]+)", self.output)
        return int(ids[-1], 16) if ids else None

    def wait_for_focus(self, window: int, timeout: float = 30.0) -> None:
        """Wait until the agent has processed the focus change to *window* (so keys typed
        next are attributed to it). Start the agent with ``extra_args=("--verbose",)``."""
        deadline = time.monotonic() + timeout
        while self.current_focus() != window:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"agent exited ({self.proc.returncode}):\n{self.output}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"agent never saw window {window:#x} take focus")
            time.sleep(0.02)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait for a clean exit; returns the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
