"""Start the Vigil agent in a user's desktop session (all three installers use this file).

The installers run it at logon, once per user session, with the virtualenv's Python:

* Linux: the XDG autostart entry and the systemd ``--user`` unit (whichever the desktop uses);
* macOS: the LaunchAgent;
* Windows: the logon scheduled task (with ``pythonw.exe``, so no console window appears).

What it does, in order:

1. takes a per-user lock, so a second copy (for example autostart *and* systemd) exits quietly;
2. if this user's agent is not enrolled yet, runs ``vigil-agent enroll`` with the server,
   token and CA from the ``[enroll]`` table of the machine-wide ``agent.toml``, retrying with
   back-off while the collector cannot be reached (a laptop may log on offline);
3. runs ``vigil-agent run --config agent.toml`` and restarts it (with back-off) if it fails.

It is deliberately plain: no dependency beyond the standard library and platformdirs (a core
dependency of vigil), so it runs on every OS the agent runs on.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["EnrollSettings", "SessionError", "main"]

log = logging.getLogger("vigil-session")

_DEFAULT_CONFIG = {
    "win32": Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "Vigil" / "agent.toml",
    "darwin": Path("/Library/Application Support/Vigil/agent.toml"),
}.get(sys.platform, Path("/etc/vigil/agent.toml"))


class SessionError(Exception):
    """A problem the technician must fix (bad or missing config); exit code 2."""


class EnrollSettings:
    """The ``[enroll]`` table of agent.toml: where and how a new user session enrols."""

    def __init__(self, server: str, token: str, ca: Path) -> None:
        self.server, self.token, self.ca = server, token, ca

    @classmethod
    def from_file(cls, path: Path) -> EnrollSettings:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SessionError(f"{path}: file not found (re-run the Vigil installer, "
                               "or pass --config)") from None
        except tomllib.TOMLDecodeError as exc:
            raise SessionError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise SessionError(f"{path}: cannot read: {exc.strerror}") from None
        table = data.get("enroll")
        if not isinstance(table, dict):
            raise SessionError(f"{path}: missing [enroll] table (server, token, ca); "
                               "re-run the installer with the collector address, token and CA")
        values: dict[str, str] = {}
        for key in ("server", "token", "ca"):
            value = table.get(key)
            if not isinstance(value, str) or not value.strip():
                raise SessionError(f"{path}: key 'enroll.{key}': missing or not a string "
                                   "(set it, in double quotes)")
            values[key] = value.strip()
        if ":" not in values["server"]:
            raise SessionError(f"{path}: key 'enroll.server': expected HOST:PORT, got "
                               f"{values['server']!r} (the collector's enrolment port, "
                               "7444 by default)")
        ca = Path(values["ca"])
        if not ca.is_absolute():
            ca = path.parent / ca
        return cls(values["server"], values["token"], ca)


def _agent_command(bindir: Path) -> list[str]:
    """How to call vigil-agent from this virtualenv without opening a console on Windows."""
    if sys.platform == "win32":
        python = bindir / "pythonw.exe"
        if not python.exists():
            python = Path(sys.executable)
        return [str(python), "-c", "import sys; from agent.cli import main; sys.exit(main())"]
    return [str(bindir / "vigil-agent")]


def _data_dir() -> Path:
    import platformdirs  # same location as agent.paths.default_data_dir()

    return Path(platformdirs.user_data_dir("vigil-agent", appauthor=False))


@contextlib.contextmanager
def _single_instance(lock_path: Path) -> Iterator[bool]:
    """Yield True while this process holds the per-user lock, False if another one does."""
    lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle: IO[bytes] = open(lock_path, "a+b")  # noqa: SIM115 - held for the whole session
    try:
        try:
            if sys.platform == "win32":
                import msvcrt

                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            else:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        handle.close()


class _Supervisor:
    """Runs children one at a time and forwards a stop request to the current one."""

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self._sleep = sleep

    def stop(self, *_: Any) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.terminate()

    def call(self, cmd: list[str]) -> int:
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        self.child = subprocess.Popen(cmd, creationflags=flags)
        try:
            return self.child.wait()
        finally:
            self.child = None

    def pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            self._sleep(min(1.0, end - time.monotonic()))


def _backoff(attempt: int, cap: float) -> float:
    return float(min(cap, 5 * 2 ** min(attempt, 10)))


def run_session(config: Path, bindir: Path, data_dir: Path, sup: _Supervisor,
                max_attempts: int | None = None) -> int:
    settings = EnrollSettings.from_file(config)
    agent = _agent_command(bindir)
    attempt = 0
    while not (data_dir / "device.json").exists() and not sup.stopping:
        log.info("enrolling this user's agent with %s", settings.server)
        rc = sup.call([*agent, "enroll", "--server", settings.server, "--token", settings.token,
                       "--ca", str(settings.ca), "--data-dir", str(data_dir)])
        if rc == 0:
            break
        attempt += 1
        if max_attempts is not None and attempt >= max_attempts:
            return rc
        wait = _backoff(attempt, 300)
        log.warning("enrolment failed (exit %s); retrying in %.0f s", rc, wait)
        sup.pause(wait)
    attempt = 0
    while not sup.stopping:
        started = time.monotonic()
        rc = sup.call([*agent, "run", "--config", str(config), "--data-dir", str(data_dir)])
        if rc == 0 or sup.stopping:
            log.info("agent stopped (exit %s)", rc)
            return 0
        attempt = 0 if time.monotonic() - started > 300 else attempt + 1
        if max_attempts is not None and attempt >= max_attempts:
            return rc
        wait = _backoff(attempt, 60)
        log.warning("agent exited with %s; restarting in %.0f s", rc, wait)
        sup.pause(wait)
    return 0


def _setup_logging(data_dir: Path) -> None:
    handlers: list[logging.Handler] = []
    if sys.stderr is not None:  # pythonw on Windows has no stderr
        handlers.append(logging.StreamHandler())
    with contextlib.suppress(OSError):
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        handlers.append(logging.FileHandler(data_dir / "session.log", encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, handlers=handlers,
                        format="%(asctime)s vigil-session: %(message)s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vigil-session",
        description="Enrol (first time) and run the Vigil agent in this desktop session.")
    parser.add_argument("--config", type=Path, default=_DEFAULT_CONFIG,
                        help=f"machine-wide agent.toml (default: {_DEFAULT_CONFIG})")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="this user's agent data dir (default: the agent's own default)")
    parser.add_argument("--bindir", type=Path, default=Path(sys.executable).parent,
                        help="the virtualenv's bin (Scripts) dir holding vigil-agent")
    args = parser.parse_args(argv)
    data_dir: Path = args.data_dir or _data_dir()
    _setup_logging(data_dir)
    sup = _Supervisor()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, sup.stop)
    with _single_instance(data_dir / "session.lock") as owner:
        if not owner:
            log.info("another vigil-session already runs for this user; nothing to do")
            return 0
        log.info("started (pid %s, config %s)", os.getpid(), args.config)
        try:
            return run_session(args.config, args.bindir, data_dir, sup)
        except SessionError as exc:
            log.error("%s", exc)
            if sys.stderr is not None:
                print(f"vigil-session: {exc}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
