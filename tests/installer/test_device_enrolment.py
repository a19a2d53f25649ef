"""Per-device enrolment on Linux, for real: ``installer/linux/install.sh`` with a real
collector's address, token and CA enrols the *device* once at install time; then two users
log on one after the other (the installed ``vigil-session``, as the systemd unit and the
autostart entry run it) and both report through that one identity, spending no further token;
a user's unsent spool lives outside their home, so deleting the profile loses nothing.

What this does NOT prove: two *OS accounts* (the users here are two login names under this
test's uid, so the 1733 sessions folder's protection between accounts is not exercised), and
two sessions at the same time (the collector keeps one stream per device, so concurrent
sessions of one device take turns: see README).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.installer.helpers import ROOT, clean_env, run

INSTALL = ROOT / "installer" / "linux" / "install.sh"


def _wait(cond: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Logon:
    """One user's desktop session: the installed vigil-session, with their own HOME."""

    def __init__(self, root: Path, user: str, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        env = clean_env(USER=user, LOGNAME=user, HOME=str(home),
                        XDG_DATA_HOME=str(home / ".local" / "share"))
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
        self.proc = subprocess.Popen(
            [str(root / "opt" / "vigil" / "bin" / "vigil-session"), "--recheck-seconds", "0.5"],
            env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def logoff(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, out
        return out


@pytest.fixture
def collector(tmp_path: Path):  # type: ignore[no-untyped-def]
    from tests.support.collector import start_collector

    c = start_collector(tmp_path)
    yield c
    c.stop()


def _install(built_wheel: Path, root: Path, collector, token: str,  # type: ignore[no-untyped-def]
             *extra: str) -> subprocess.CompletedProcess[str]:
    return run(["bash", str(INSTALL), "--root", str(root), "--collector",
                collector.stream_addr, "--enroll", collector.enrol_addr, "--token", token,
                "--ca", str(collector.ca_path), "--wheel", str(built_wheel),
                "--python", sys.executable, *extra], cwd=root.parent)


def _tokens(collector) -> list[str]:  # type: ignore[no-untyped-def]
    return [line.split("\t")[3] for line in collector.cli("token", "list").stdout.splitlines()]


def _devices(collector) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [tuple(r) for r in collector.query(
        "SELECT id, last_user FROM devices WHERE last_seen_at IS NOT NULL")]


def test_one_enrolment_per_device_two_users_and_a_profile_reset(
        built_wheel: Path, tmp_path: Path, collector) -> None:  # type: ignore[no-untyped-def]
    token = collector.create_token(uses=5)
    root = tmp_path / "root"
    proc = _install(built_wheel, root, collector, token)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = root / "var" / "lib" / "vigil"
    device = json.loads((state / "device" / "device.json").read_text())
    assert _tokens(collector) == ["1/5"]  # the install spent one use, for the whole device
    enrol_toml = root / "etc" / "vigil" / "enrol.toml"
    assert enrol_toml.stat().st_mode & 0o777 == 0o600  # the token is root's, not the users'
    assert "token" not in (root / "etc" / "vigil" / "agent.toml").read_text()
    assert (state / "sessions").stat().st_mode & 0o7777 == 0o1733

    homes = tmp_path / "home"
    for user in ("alice", "bob"):
        logon = Logon(root, user, homes / user)
        try:
            _wait(lambda user=user: (device["device_id"], user) in _devices(collector), 90,
                  f"{user}'s heartbeat through the device identity")
        finally:
            out = logon.logoff()
        assert "enrolling" not in out
        assert (state / "sessions" / user / "state.json").exists()
        assert not (homes / user / ".local" / "share" / "vigil-agent" / "device.json").exists()
    assert len(collector.query("SELECT id FROM devices")) == 1
    assert _tokens(collector) == ["1/5"]  # two users, still one use

    # alice's agent spooled a capture it could not send before she logged off...
    from agent.spool import Spool
    from tests.support.agent_client import make_capture

    spool = Spool(state / "sessions" / "alice" / "spool.sqlite3")
    spool.put(make_capture("c-kept-across-profile-reset", os_user="alice"))
    spool.close()
    shutil.rmtree(homes / "alice")  # ...then Shared PC deleted her profile at logoff
    logon = Logon(root, "alice", homes / "alice")
    try:
        _wait(lambda: collector.query("SELECT id FROM captures WHERE id = ?",
                                      ("c-kept-across-profile-reset",)), 90,
              "the capture from before the profile reset")
    finally:
        logon.logoff()
    assert _tokens(collector) == ["1/5"]


def test_an_offline_install_spools_then_connects_once_the_device_enrols(
        built_wheel: Path, tmp_path: Path, collector) -> None:  # type: ignore[no-untyped-def]
    token = collector.create_token(uses=1)
    root = tmp_path / "root"
    proc = _install(built_wheel, root, collector, token, "--no-enrol")  # as if offline
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = root / "var" / "lib" / "vigil"
    assert not (state / "device" / "device.json").exists()
    unit = root / "etc" / "systemd" / "system" / "vigil-enrol.service"
    assert "ConditionPathExists=!" in unit.read_text()
    assert (root / "etc" / "systemd" / "system" / "timers.target.wants" /
            "vigil-enrol.timer").is_symlink()
    if shutil.which("systemd-analyze") is not None:
        verify = run(["systemd-analyze", "verify", str(unit),
                      str(unit.with_suffix(".timer"))], cwd=root)
        assert verify.returncode == 0, verify.stdout + verify.stderr

    logon = Logon(root, "carol", tmp_path / "home" / "carol")
    try:
        _wait(lambda: (state / "sessions" / "carol" / "state.json").exists(), 90,
              "the unenrolled agent running anyway")
        st = json.loads((state / "sessions" / "carol" / "state.json").read_text())
        assert st["running"] and st["last_error"] == "not enrolled"
        # what the vigil-enrol timer runs, as root:
        enrol = run([str(root / "opt" / "vigil" / "bin" / "vigil-session"), "--enrol-device"],
                    cwd=tmp_path)
        assert enrol.returncode == 0, enrol.stdout + enrol.stderr
        device = json.loads((state / "device" / "device.json").read_text())
        _wait(lambda: (device["device_id"], "carol") in _devices(collector), 90,
              "the session's agent connecting after enrolment")
    finally:
        out = logon.logoff()
    assert "restarting the agent so it connects" in out
    again = run([str(root / "opt" / "vigil" / "bin" / "vigil-session"), "--enrol-device"],
                cwd=tmp_path)
    assert again.returncode == 0 and "already enrolled" in again.stderr
    assert _tokens(collector) == ["1/1"]
