"""installer/linux: a real install into a temp root (--root), checked with the tools a Linux
packager would use (shellcheck, systemd-analyze verify, desktop-file-validate), plus the
session launcher every installer shares (installer/vigil_session.py).

What this does NOT prove: that a real desktop session on a real laptop starts the unit (that
needs a systemd user manager and a display manager, which this container does not run).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.installer.helpers import ROOT, clean_env, run, write_ca

INSTALL = ROOT / "installer" / "linux" / "install.sh"
UNINSTALL = ROOT / "installer" / "linux" / "uninstall.sh"
SESSION = ROOT / "installer" / "vigil_session.py"
SHELL_SCRIPTS = [
    ROOT / "installer" / "linux" / "install.sh",
    ROOT / "installer" / "linux" / "uninstall.sh",
    ROOT / "installer" / "macos" / "install.sh",
    ROOT / "installer" / "macos" / "uninstall.sh",
    ROOT / "scripts" / "quickstart",
]


def _install(root: Path, wheel: Path, ca: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run(["bash", str(INSTALL), "--root", str(root), "--collector",
                "collector.school.test:7443", "--token", "tok-123.abc", "--ca", str(ca),
                "--wheel", str(wheel), "--python", sys.executable, "--no-enrol", *extra],
               cwd=root.parent)


@pytest.fixture(scope="module")
def installed(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("linux-install")
    ca = write_ca(base / "ca.crt")
    proc = _install(base / "root", built_wheel, ca)
    assert proc.returncode == 0, f"install.sh failed:\n{proc.stdout}\n{proc.stderr}"
    return base / "root"


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shell_scripts_pass_shellcheck(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    if not script.exists():
        pytest.fail(f"{script.relative_to(ROOT)} is missing")
    proc = run(["shellcheck", "--severity=style", str(script)], cwd=ROOT)
    assert proc.returncode == 0, proc.stdout


def test_config_names_collector_token_and_ca(installed: Path) -> None:
    cfg_path = installed / "etc" / "vigil" / "agent.toml"
    data = tomllib.loads(cfg_path.read_text())
    assert data == {"agent": {"collector": "collector.school.test:7443"}}
    # every session's agent reads it: world-readable, root-owned, not writable by users
    assert cfg_path.stat().st_mode & 0o777 == 0o644
    enrol_path = installed / "etc" / "vigil" / "enrol.toml"
    assert tomllib.loads(enrol_path.read_text())["enroll"] == {
        "server": "collector.school.test:7444", "token": "tok-123.abc",
        "ca": str(installed / "etc" / "vigil" / "ca.crt")}
    # only root enrols (the device, once): the token is not readable by users any more
    assert enrol_path.stat().st_mode & 0o777 == 0o600
    assert (installed / "etc" / "vigil" / "ca.crt").read_text().startswith(
        "-----BEGIN CERTIFICATE-----")
    state = installed / "var" / "lib" / "vigil"
    assert (state / "device").stat().st_mode & 0o777 == 0o755
    assert (state / "sessions").stat().st_mode & 0o7777 == 0o1733


def test_agent_config_loader_accepts_the_written_file(installed: Path) -> None:
    from agent.config import load_config

    cfg = load_config(installed / "etc" / "vigil" / "agent.toml")
    assert cfg.collector == "collector.school.test:7443"


def test_the_venv_has_the_agent(installed: Path) -> None:
    venv = installed / "opt" / "vigil" / "venv"
    assert (venv / "bin" / "vigil-agent").exists()
    proc = run([str(venv / "bin" / "python"), "-c", "import agent; print(agent.__file__)"],
               cwd=installed)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).is_relative_to(venv)


def test_systemd_user_unit_is_valid_and_enabled(installed: Path) -> None:
    unit_dir = installed / "etc" / "systemd" / "user"
    unit = unit_dir / "vigil-agent.service"
    text = unit.read_text()
    assert f"ExecStart={installed}/opt/vigil/bin/vigil-session\n" in text
    assert "WantedBy=graphical-session.target" in text
    wants = unit_dir / "graphical-session.target.wants" / "vigil-agent.service"
    assert wants.is_symlink() and wants.resolve() == unit.resolve()
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    proc = run(["systemd-analyze", "verify", str(unit)], cwd=installed)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_xdg_autostart_entry_is_valid(installed: Path) -> None:
    desktop = installed / "etc" / "xdg" / "autostart" / "vigil-agent.desktop"
    exec_line = next(line for line in desktop.read_text().splitlines()
                     if line.startswith("Exec="))
    assert os.access(exec_line.removeprefix("Exec="), os.X_OK), exec_line
    if shutil.which("desktop-file-validate") is None:
        pytest.skip("desktop-file-validate is not installed (apt-get install desktop-file-utils)")
    proc = run(["desktop-file-validate", str(desktop)], cwd=installed)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("drop", "extra", "expect"), [
    ("--token", (), "--token"),
    ("--ca", (), "--ca"),
    (None, ("--collector", "no-port-here"), "HOST:PORT"),
])
def test_bad_input_is_one_clear_error(tmp_path: Path, drop: str | None,
                                      extra: tuple[str, ...], expect: str) -> None:
    ca = write_ca(tmp_path / "ca.crt")
    args = {"--collector": "c.test:7443", "--token": "t", "--ca": str(ca)}
    if drop:
        del args[drop]
    argv = [x for kv in args.items() for x in kv] + list(extra)
    proc = run(["bash", str(INSTALL), "--root", str(tmp_path / "r"), *argv], cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expect in proc.stderr and "install.sh:" in proc.stderr
    assert not (tmp_path / "r" / "opt").exists(), "nothing may be installed on bad input"


def test_ca_that_is_not_a_certificate_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "ca.crt"
    bad.write_text("hello\n")
    proc = run(["bash", str(INSTALL), "--root", str(tmp_path / "r"), "--collector", "c:7443",
                "--token", "t", "--ca", str(bad)], cwd=tmp_path)
    assert proc.returncode == 2 and "not a PEM certificate" in proc.stderr


def test_session_launcher_names_the_missing_key(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[agent]\ncollector = "c:7443"\n[enroll]\nserver = "c:7444"\nca = "ca.crt"\n')
    proc = run([sys.executable, str(SESSION), "--config", str(cfg), "--data-dir",
                str(tmp_path / "data")], cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"{cfg}: key 'enroll.token'" in proc.stderr
    assert "Traceback" not in proc.stderr


def _wait_for(cond: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return True
        time.sleep(0.1)
    return False


def test_session_launcher_runs_once_per_user(installed: Path, tmp_path: Path) -> None:
    """Autostart and systemd may both fire at logon: the second launcher must step aside."""
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[agent]\ncollector = "127.0.0.1:1"\n[enroll]\nserver = "127.0.0.1:1"\n'
                   f'token = "t"\nca = "{installed}/etc/vigil/ca.crt"\n')
    data = tmp_path / "data"
    launcher = installed / "opt" / "vigil" / "lib" / "vigil_session.py"
    python = installed / "opt" / "vigil" / "venv" / "bin" / "python"
    argv = [str(python), str(launcher), "--config", str(cfg), "--data-dir", str(data)]
    first = subprocess.Popen(argv, env=clean_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        log = data / "session.log"
        assert _wait_for(lambda: log.exists() and "enrolling" in log.read_text()), \
            "the first launcher never started enrolling"
        second = run(argv, cwd=tmp_path, timeout=60)
        assert second.returncode == 0, second.stderr
        assert "another vigil-session already runs" in second.stderr
        assert first.poll() is None, "the first launcher must keep running"
    finally:
        first.send_signal(signal.SIGTERM)
        _out, err = first.communicate(timeout=30)
    assert first.returncode == 0, err


@pytest.mark.x11
def test_install_logon_enrol_run_then_uninstall(built_wheel: Path, tmp_path: Path) -> None:
    """End to end: install.sh with a real collector's address, token and CA enrols the
    device; a user's "logon" (the installed vigil-session, as the unit/autostart run it)
    connects with that identity; uninstall.sh then removes every installed file but the
    identity and spools, which --purge-user-data removes."""
    import psutil

    from tests.support.collector import start_collector
    from tests.support.x11 import XDesktop, wait_for

    collector = start_collector(tmp_path)
    try:
        token = collector.create_token(group="secondary", uses=1)
        # (enrolment at install: the installer's default, so no --no-enrol here)
        root = tmp_path / "root"
        proc = run(["bash", str(INSTALL), "--root", str(root), "--collector",
                    collector.stream_addr, "--enroll", collector.enrol_addr, "--token", token,
                    "--ca", str(collector.ca_path), "--wheel", str(built_wheel),
                    "--python", sys.executable], cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        home = tmp_path / "home"
        identity = root / "var" / "lib" / "vigil" / "device"  # enrolled by install.sh
        # the token is root's (enrol.toml, 0600), never in the agent.toml every user reads
        assert token not in (root / "etc" / "vigil" / "agent.toml").read_text()
        enrol_toml = root / "etc" / "vigil" / "enrol.toml"
        assert token in enrol_toml.read_text() and enrol_toml.stat().st_mode & 0o777 == 0o600
        data = root / "var" / "lib" / "vigil" / "sessions" / "pupil"
        with XDesktop() as x:
            env = clean_env(DISPLAY=x.display, HOME=str(home), USER="pupil", LOGNAME="pupil",
                            XDG_DATA_HOME=str(home / ".local" / "share"))
            session = subprocess.Popen([str(root / "opt" / "vigil" / "bin" / "vigil-session")],
                                       env=env, cwd=home.parent, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
            try:
                device = json.loads((identity / "device.json").read_text())
                wait_for(lambda: (data / "state.json").exists(), timeout=60,
                         what="the session's agent")

                def seen() -> bool:
                    out = collector.cli("devices", "--json").stdout
                    return any(d["id"] == device["device_id"] and d["last_seen_at"]
                               for d in json.loads(out))

                wait_for(seen, timeout=60, what="the agent's first heartbeat")
                children = psutil.Process(session.pid).children(recursive=True)
                assert children, "vigil-session should be running vigil-agent"
            finally:
                session.send_signal(signal.SIGTERM)
                out, _ = session.communicate(timeout=60)
            assert session.returncode == 0, out
            assert "enrolling" not in out, "a session must never enrol: the device already is"
            assert not [c for c in children if c.is_running() and c.status() != "zombie"]
        proc = run(["bash", str(UNINSTALL), "--root", str(root)], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        left = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                      if not p.is_dir() and not p.is_relative_to(root / "var" / "lib" / "vigil"))
        assert left == [], f"uninstall left files behind: {left}"
        assert (identity / "device.json").exists(), "the identity and spools are kept unless purged"
        proc = run(["bash", str(UNINSTALL), "--root", str(root), "--purge-user-data"],
                   cwd=tmp_path)
        assert proc.returncode == 0 and not (root / "var" / "lib" / "vigil").exists()
    finally:
        collector.stop()
