"""What a newcomer meets first with ``vigil-agent``: ``status`` and ``install-check`` find the
agent through ``$VIGIL_AGENT_DATA_DIR`` (the quickstart's env file sets it) or say where they
looked and what to do, and outside a desktop session install-check explains instead of
failing. The real CLI, in a subprocess with a temp HOME (so the default data dir is empty)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agent.spool import Spool
from proto import vigil_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]


def _agent(*args: str, home: Path, cwd: Path | None = None,
           **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("VIGIL_AGENT_DATA_DIR", "VIGIL_DEVICE_DIR", "XDG_DATA_HOME",
                         "DISPLAY", "WAYLAND_DISPLAY")}
    base.update(HOME=str(home), PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, env=base, timeout=120, check=False)


def test_status_finds_the_agent_named_by_the_environment(tmp_path: Path) -> None:
    data = tmp_path / "demo-agent"
    data.mkdir()
    spool = Spool(data / "spool.sqlite3")
    spool.put(pb.Capture(id="waiting", severity=3))
    spool.close()
    out = _agent("status", home=tmp_path, VIGIL_AGENT_DATA_DIR=str(data))
    assert out.returncode == 0, out.stderr
    assert f"Data dir: {data}\n" in out.stdout
    assert "Spool: 1 captures waiting" in out.stdout and "Not found" not in out.stdout
    # --data-dir wins over the environment
    other = _agent("status", "--data-dir", str(tmp_path / "other"), home=tmp_path,
                   VIGIL_AGENT_DATA_DIR=str(data))
    assert f"Not found: no agent in {tmp_path / 'other'} (given by --data-dir)" in other.stdout


def test_status_without_an_agent_says_where_it_looked_and_what_to_do(tmp_path: Path) -> None:
    default = tmp_path / ".local" / "share" / "vigil-agent"
    out = _agent("status", home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"Not found: no agent in {default} (the default: no --data-dir and " \
           "$VIGIL_AGENT_DATA_DIR is not set)." in out.stdout
    assert "pass --data-dir DIR or set VIGIL_AGENT_DATA_DIR=DIR" in out.stdout
    assert "vigil-agent enroll --server HOST:PORT --token TOKEN --ca CA.pem" in out.stdout
    # run where a quickstart demo lives, it points at the demo's env file
    demo_env = tmp_path / ".vigil-demo" / "env"
    demo_env.parent.mkdir()
    demo_env.write_text("export VIGIL_AGENT_DATA_DIR=/somewhere\n")
    out = _agent("status", home=tmp_path, cwd=tmp_path)
    assert f"For the quickstart demo, first run: . {demo_env}" in out.stdout


def test_install_check_outside_a_session_explains_and_passes(tmp_path: Path) -> None:
    data = tmp_path / "agent"
    out = _agent("install-check", "--data-dir", str(data), home=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PROBLEMS FOUND" not in out.stdout
    assert "this shell is not in a desktop session. That is not a fault of the install" \
        in out.stdout
    assert "Media detection: OK" in out.stdout
    assert f"Enrolment: not enrolled (no {data / 'device.json'})" in out.stdout
    assert f"Agent: not running from {data}" in out.stdout
    assert f"Not found: no agent in {data} (given by --data-dir)" in out.stdout
    assert out.stdout.rstrip().endswith(
        "Result: OK for what can be checked outside a desktop session (display and keyboard "
        "not checked)")


def test_install_check_takes_data_dir() -> None:
    out = subprocess.run([sys.executable, "-m", "agent.cli", "install-check", "--help"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert out.returncode == 0 and "--data-dir DATA_DIR" in out.stdout
    assert "$VIGIL_AGENT_DATA_DIR" in out.stdout
