"""Run a REAL HAProxy for tests: Debian's ``haproxy`` in the foreground, on the committed
config (deploy/haproxy.cfg), in front of two collectors, on free 127.0.0.1 ports.

    lb = HAProxy.start([(c1.stream_addr, c1.enrol_addr), (c2.stream_addr, c2.enrol_addr)],
                       tmp_path)
    lb.wait_until(lambda s: all(x.checked_up for x in s.backend("vigil_stream")))
    # agents use lb.stream_addr / lb.enrol_addr
    lb.servers()            # every proxy/server row of `show stat`, from the admin socket
    lb.stop()

The admin socket is HAProxy's own view (server UP/DOWN, last health check, current
sessions per server); waiting reads it until a condition holds, and fails at once if HAProxy
exits. HAProxy refuses nothing as root, but it is started with a parent-death signal (setpriv)
so that it goes with a killed test process instead of lingering.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

__all__ = ["CONFIG", "HAProxy", "HAProxyUnavailable", "ServerState", "Stats"]

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"
T = TypeVar("T")


class HAProxyUnavailable(RuntimeError):
    """No haproxy binary (install Debian's ``haproxy``)."""


@dataclass(frozen=True)
class ServerState:
    """One row of ``show stat`` for a server of a backend."""

    backend: str
    name: str
    status: str         # "UP", "DOWN", "UP 1/2" (going down), "no check", ...
    check_status: str   # "L4OK" after a successful TCP check, "L4CON" when refused, ...
    current_sessions: int
    total_sessions: int

    @property
    def checked_up(self) -> bool:
        """UP, and HAProxy has seen it answer a health check (not just its initial state)."""
        return self.status == "UP" and self.check_status.startswith("L4OK")


@dataclass(frozen=True)
class Stats:
    rows: tuple[ServerState, ...]

    def backend(self, name: str) -> list[ServerState]:
        return [r for r in self.rows if r.backend == name]

    def server(self, backend: str, name: str) -> ServerState:
        for r in self.rows:
            if r.backend == backend and r.name == name:
                return r
        raise KeyError(f"{backend}/{name} is not in HAProxy's stats")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class HAProxy:
    proc: subprocess.Popen[bytes]
    root: Path
    stream_addr: str
    enrol_addr: str

    @property
    def stats_path(self) -> Path:
        return self.root / "admin.sock"

    @property
    def log_path(self) -> Path:
        return self.root / "haproxy.log"

    @classmethod
    def start(cls, collectors: Sequence[tuple[str, str]], root: Path,
              config: Path = CONFIG, timeout: float = 30.0) -> HAProxy:
        """HAProxy on ``config`` for two collectors given as (stream addr, enrol addr);
        returns once its admin socket answers (its listeners are bound by then)."""
        binary = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
        if binary is None:
            raise HAProxyUnavailable("haproxy not found; apt-get install haproxy")
        if len(collectors) != 2:
            raise ValueError("deploy/haproxy.cfg names two collectors (c1, c2)")
        root.mkdir(parents=True, exist_ok=True)
        prefix = [p, "--pdeathsig", "TERM"] if (p := shutil.which("setpriv")) else []
        last = ""
        for _ in range(5):  # another process may take a free port before HAProxy binds it
            stream, enrol = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
            env = dict(os.environ, VIGIL_STREAM_BIND=stream, VIGIL_ENROL_BIND=enrol,
                       VIGIL_HAPROXY_STATS=str(root / "admin.sock"),
                       VIGIL_HAPROXY_MAXCONN="2000",  # within a test process's fd limit
                       VIGIL_C1_STREAM=collectors[0][0], VIGIL_C1_ENROL=collectors[0][1],
                       VIGIL_C2_STREAM=collectors[1][0], VIGIL_C2_ENROL=collectors[1][1])
            check = subprocess.run([binary, "-c", "-f", str(config)], env=env,
                                   capture_output=True, text=True, timeout=30)
            if check.returncode != 0:
                raise RuntimeError(f"haproxy -c rejects {config}: {check.stdout}{check.stderr}")
            with open(root / "haproxy.log", "ab") as log:
                proc = subprocess.Popen([*prefix, binary, "-db", "-f", str(config)], env=env,
                                        stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
            lb = cls(proc, root, stream, enrol)
            try:
                lb.wait_until(lambda s: s.rows, timeout)
                return lb
            except RuntimeError as exc:  # exited: most likely a port was taken
                last = str(exc)
                lb.stop()
        raise RuntimeError(f"HAProxy did not start: {last}")

    def command(self, cmd: str) -> str:
        """One command on the admin socket (``show stat``, ``show sess``, ...)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.stats_path))
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def servers(self) -> Stats:
        text = self.command("show stat").lstrip("# ")
        rows = []
        for r in csv.DictReader(io.StringIO(text)):
            if r.get("svname") in ("FRONTEND", "BACKEND", None):
                continue
            rows.append(ServerState(
                backend=r["pxname"], name=r["svname"], status=r["status"],
                check_status=r.get("check_status", ""),
                current_sessions=int(r["scur"] or 0), total_sessions=int(r["stot"] or 0)))
        return Stats(tuple(rows))

    def wait_until(self, cond: Callable[[Stats], T], timeout: float = 30.0) -> T:
        """Read the stats until ``cond(stats)`` is truthy (returned); raises RuntimeError if
        HAProxy exits, TimeoutError (with the last stats) after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        delay, last = 0.005, None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.proc.returncode}: {self.log()}")
            try:
                last = self.servers()
                value = cond(last)
                if value:
                    return value
            except OSError:
                pass  # the admin socket is not there yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"HAProxy state not reached in {timeout} s: {last}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=delay)  # returns at once if HAProxy dies
            delay = min(delay * 2, 0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Hard stop (SIGTERM: close every connection now) and wait."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
