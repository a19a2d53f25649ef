"""Enrol the device, and start the Vigil agent in each desktop session (all three installers).

Two jobs, both run with the virtualenv's Python:

``vigil_session.py --enrol-device`` (root/SYSTEM: at install time, then by a retry timer until
it succeeds) enrols the *device* once: ``vigil-agent enroll --machine`` with the server, token
and CA from the ``[enroll]`` table of the root-only ``enrol.toml``, into the machine-wide device
folder (``agent.paths.machine_device_dir``). It does nothing once the device is enrolled.

``vigil_session.py`` (at each logon, as the user):

* Linux: the XDG autostart entry and the systemd ``--user`` unit (whichever the desktop uses);
* macOS: the LaunchAgent;
* Windows: the logon scheduled task (with ``pythonw.exe``, so no console window appears).

1. takes a per-session lock, so a second copy (for example autostart *and* systemd) exits;
2. runs ``vigil-agent run --config agent.toml`` with the device identity and this user's data
   dir under the machine folder (``sessions/<user>``, outside the profile: deleting a Shared-PC
   profile loses no spool), and restarts it (with back-off) if it fails. A session never
   enrols and never spends a token. While the device is not enrolled yet the agent runs
   anyway and keeps captures in its spool; once ``device.json`` appears the agent is
   restarted so it connects.

Without a machine-wide device folder (an install older than per-device enrolment, or a
developer's machine) it falls back to the per-user behaviour: enrol this user's agent from
``[enroll]`` in ``agent.toml`` at first logon, retrying with back-off, then run it.

It stays plain: the standard library, platformdirs and ``agent.paths`` (same virtualenv).
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

__all__ = ["EnrollSettings", "SessionError", "enrol_device", "main", "run_session"]

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
        self.restarted = False  # the last call ended because restart_when() became true
        self._sleep = sleep

    def stop(self, *_: Any) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.terminate()

    def call(self, cmd: list[str], env: dict[str, str] | None = None,
             restart_when: Callable[[], bool] | None = None, every: float = 30.0) -> int:
        """Run *cmd*; if *restart_when* turns true while it runs, stop it (``restarted``)."""
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        self.restarted = False
        self.child = subprocess.Popen(cmd, creationflags=flags, env=env)
        try:
            while True:
                try:
                    return self.child.wait(timeout=every if restart_when else None)
                except subprocess.TimeoutExpired:
                    if restart_when is not None and restart_when() and not self.stopping:
                        self.restarted = True
                        self.child.terminate()
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
                max_attempts: int | None = None, device_dir: Path | None = None,
                recheck: float = 30.0) -> int:
    """Run this session's agent. With *device_dir* (machine-wide install) the session uses
    the device identity and never enrols; without it, it enrols this user first."""
    from agent.paths import DEVICE_DIR_ENV

    agent = _agent_command(bindir)
    env: dict[str, str] | None = None
    if device_dir is None:
        _enrol_user(EnrollSettings.from_file(config), agent, data_dir, sup, max_attempts)
    else:
        env = {**os.environ, DEVICE_DIR_ENV: str(device_dir)}
    enrolled = (device_dir or data_dir) / "device.json"
    attempt = 0
    while not sup.stopping:
        waiting = not enrolled.exists()
        if waiting:
            log.warning("this device is not enrolled yet: the agent keeps captures in its "
                        "spool and connects once it is (enrolment retries as %s)",
                        "root/SYSTEM" if device_dir else "this user")
        started = time.monotonic()
        rc = sup.call([*agent, "run", "--config", str(config), "--data-dir", str(data_dir)],
                      env=env, restart_when=enrolled.exists if waiting else None,
                      every=recheck)
        if sup.restarted:
            log.info("the device is enrolled now: restarting the agent so it connects")
            continue
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


def _enrol_user(settings: EnrollSettings, agent: list[str], data_dir: Path, sup: _Supervisor,
                max_attempts: int | None) -> None:
    """The per-user fallback: enrol this user's own agent, retrying with back-off."""
    attempt = 0
    while not (data_dir / "device.json").exists() and not sup.stopping:
        log.info("enrolling this user's agent with %s", settings.server)
        rc = sup.call([*agent, "enroll", "--server", settings.server, "--token", settings.token,
                       "--ca", str(settings.ca), "--data-dir", str(data_dir)])
        if rc == 0:
            return
        attempt += 1
        if max_attempts is not None and attempt >= max_attempts:
            return
        wait = _backoff(attempt, 300)
        log.warning("enrolment failed (exit %s); retrying in %.0f s", rc, wait)
        sup.pause(wait)


def enrol_device(settings: EnrollSettings, bindir: Path, device_dir: Path, sup: _Supervisor,
                 attempts: int = 1) -> int:
    """Enrol the device once (root/SYSTEM). 0 when enrolled (now or before)."""
    if (device_dir / "device.json").exists():
        log.info("the device is already enrolled (%s)", device_dir)
        return 0
    agent = _agent_command(bindir)
    rc = 1
    for attempt in range(attempts):
        log.info("enrolling this device with %s", settings.server)
        rc = sup.call([*agent, "enroll", "--machine", "--data-dir", str(device_dir),
                       "--server", settings.server, "--token", settings.token,
                       "--ca", str(settings.ca)])
        if rc == 0 or sup.stopping:
            return rc
        if attempt + 1 < attempts:
            wait = _backoff(attempt + 1, 300)
            log.warning("enrolment failed (exit %s); retrying in %.0f s", rc, wait)
            sup.pause(wait)
    log.warning("enrolment failed (exit %s); the retry timer will try again", rc)
    return rc


def _session_dir(sessions: Path) -> Path | None:
    """This user's data dir under the machine-wide *sessions* folder, made private to them;
    None if it cannot be (then the profile's data dir is used, with a warning)."""
    from agent.paths import session_folder_name, session_user

    path = sessions / session_folder_name(session_user())
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        if hasattr(os, "getuid") and path.stat().st_uid != os.getuid():
            log.error("%s belongs to another account: using the profile's data dir", path)
            return None
        if os.name == "posix":
            os.chmod(path, 0o700)
    except OSError as exc:
        log.error("cannot use %s (%s): using the profile's data dir", path, exc)
        return None
    return path


def _setup_logging(data_dir: Path | None) -> None:
    handlers: list[logging.Handler] = []
    if sys.stderr is not None:  # pythonw on Windows has no stderr
        handlers.append(logging.StreamHandler())
    with contextlib.suppress(OSError):
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            handlers.append(logging.FileHandler(data_dir / "session.log", encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, handlers=handlers,
                        format="%(asctime)s vigil-session: %(message)s")


def main(argv: list[str] | None = None) -> int:
    from agent.paths import machine_device_dir, machine_root

    parser = argparse.ArgumentParser(
        prog="vigil-session",
        description="Run the Vigil agent in this desktop session (or, with --enrol-device, "
                    "enrol this device once, as root/SYSTEM).")
    parser.add_argument("--config", type=Path, default=_DEFAULT_CONFIG,
                        help=f"machine-wide agent.toml (default: {_DEFAULT_CONFIG})")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="this session's agent data dir (default: sessions/<user> in the "
                             "machine folder, or the user's own data dir)")
    parser.add_argument("--bindir", type=Path, default=Path(sys.executable).parent,
                        help="the virtualenv's bin (Scripts) dir holding vigil-agent")
    parser.add_argument("--device-dir", type=Path, default=None,
                        help=f"the device identity folder (default: {machine_device_dir()} "
                             "when the installer made it; otherwise each user enrols)")
    parser.add_argument("--sessions-dir", type=Path, default=None,
                        help=f"where session data dirs live (default: "
                             f"{machine_root() / 'sessions'})")
    parser.add_argument("--enrol-device", action="store_true",
                        help="enrol this device (root/SYSTEM) if it is not enrolled, and exit")
    parser.add_argument("--enrol-config", type=Path, default=None,
                        help="file with the [enroll] table (default: enrol.toml beside "
                             "--config if present, else --config)")
    parser.add_argument("--attempts", type=int, default=1,
                        help="--enrol-device: tries before giving up (default 1)")
    parser.add_argument("--recheck-seconds", type=float, default=30.0,
                        help="how often an unenrolled session checks for enrolment")
    args = parser.parse_args(argv)
    device_dir: Path | None = args.device_dir
    if device_dir is None and machine_device_dir().is_dir():
        device_dir = machine_device_dir()
    enrol_config: Path = args.enrol_config or (
        args.config.parent / "enrol.toml" if (args.config.parent / "enrol.toml").exists()
        else args.config)
    sup = _Supervisor()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, sup.stop)
    try:
        if args.enrol_device:
            target = device_dir or machine_device_dir()
            _setup_logging(None)
            return enrol_device(EnrollSettings.from_file(enrol_config), args.bindir, target,
                                sup, max(1, args.attempts))
        data_dir: Path | None = args.data_dir
        if data_dir is None and device_dir is not None:
            data_dir = _session_dir(args.sessions_dir or machine_root() / "sessions")
        data_dir = data_dir or _data_dir()
        _setup_logging(data_dir)
        with _single_instance(data_dir / "session.lock") as owner:
            if not owner:
                log.info("another vigil-session already runs for this user; nothing to do")
                return 0
            log.info("started (pid %s, config %s, data %s, device %s)", os.getpid(),
                     args.config, data_dir, device_dir or "per user")
            return run_session(args.config, args.bindir, data_dir, sup, device_dir=device_dir,
                               recheck=args.recheck_seconds)
    except SessionError as exc:
        log.error("%s", exc)
        if sys.stderr is not None:
            print(f"vigil-session: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
