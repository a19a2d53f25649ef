"""scripts/quickstart (the README's command 1), run for real against the repo's .venv.

The demo dir goes to tmp (VIGIL_DEMO_DIR), ports are picked by the OS (--ports auto), and
DISPLAY is removed so the script starts its own Xvfb + openbox, as on a headless server.
The tests skip only while ``vigil-collector serve`` does not exist yet.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.installer.helpers import ROOT, clean_env, run

QUICKSTART = ROOT / "scripts" / "quickstart"
VENV_BIN = ROOT / ".venv" / "bin"

pytestmark = pytest.mark.x11


@pytest.fixture(autouse=True)
def _needs_collector_serve(tmp_path: Path) -> None:
    exe = VENV_BIN / "vigil-collector"
    proc = run([str(exe), "serve", "--help"], cwd=tmp_path, timeout=60) if exe.exists() else None
    if proc is None or proc.returncode != 0:
        pytest.skip("`vigil-collector serve` is not implemented yet")


def _env(demo: Path, display: str | None = None) -> dict[str, str]:
    env = clean_env(VIGIL_DEMO_DIR=str(demo))
    env.pop("DISPLAY", None)
    if display:
        env["DISPLAY"] = display
    return env


def _quickstart(demo: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(QUICKSTART), "--no-install", "--ports", "auto", *extra],
                          cwd=demo.parent, env=_env(demo), capture_output=True, text=True,
                          timeout=240, check=False)


def _field(out: str, pattern: str) -> str:
    m = re.search(pattern, out, re.MULTILINE)
    assert m, f"{pattern!r} not in the output:\n{out}"
    return m.group(1)


def _pids(out: str) -> list[int]:
    return [int(p) for p in _field(out, r"^pids: ([\d ]+)$").split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of an exited grandchild still answers kill(0): treat it as gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][:1] != "Z"


def _log_in(console: str, ca: Path, username: str, password: str) -> httpx.Response:
    ctx = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(base_url=console, verify=ctx, timeout=30) as client:
        page = client.get("/login")
        assert page.status_code == 200
        csrf = _field(page.text, r'name="csrf" value="([^"]+)"')
        return client.post("/login", data={"csrf": csrf, "next": "/", "username": username,
                                           "password": password})


def _devices(demo: Path) -> list[dict[str, object]]:
    proc = run([str(VENV_BIN / "vigil-collector"), "devices", "--json", "--data-dir",
                str(demo / "collector")], cwd=demo, timeout=60)
    assert proc.returncode == 0, proc.stderr
    devices: list[dict[str, object]] = json.loads(proc.stdout)
    return devices


def test_first_run_sets_up_everything_and_a_rerun_reuses_it(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    first = _quickstart(demo, "--exit-after-ready")
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    console = _field(out, r"^  Console:\s+(https://127\.0\.0\.1:\d+/)")
    username, password = _field(out, r"^  DSL login:\s+(\S+ / \S+)$").split(" / ")
    assert "started a virtual display" in out
    assert f"GET {console}login -> 200" in out
    login = demo / "login.txt"
    assert login.stat().st_mode & 0o777 == 0o600
    assert f"password: {password}" in login.read_text()
    device = json.loads((demo / "agent" / "device.json").read_text())
    # the agent really connected: the collector saw it and it took rule version 1
    (row,) = _devices(demo)
    assert row["last_seen_at"] and row["rules_version"] == 1
    assert not [p for p in _pids(out) if _alive(p)], "processes left running after exit"

    again = _quickstart(demo, "--exit-after-ready")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "reusing collector data dir" in again.stdout
    assert "reusing enrolled agent" in again.stdout
    assert "created DSL login" not in again.stdout
    assert _field(again.stdout, r"^  DSL login:\s+(\S+ / \S+)$") == f"{username} / {password}"
    assert json.loads((demo / "agent" / "device.json").read_text()) == device
    assert len(_devices(demo)) == 1
    assert not [p for p in _pids(again.stdout) if _alive(p)]


def test_ctrl_c_stops_everything_and_the_printed_login_works(tmp_path: Path) -> None:
    """In an existing desktop session (here a real Xvfb + openbox) it watches that display."""
    from tests.support.x11 import XDesktop

    demo = tmp_path / "demo"
    with XDesktop() as desktop:
        _run_until_ctrl_c(demo, desktop.display)


def _run_until_ctrl_c(demo: Path, display: str) -> None:
    # A terminal's Ctrl-C goes to the foreground process group: model it with a new session.
    proc = subprocess.Popen([str(QUICKSTART), "--no-install", "--ports", "auto"],
                            cwd=demo.parent, env=_env(demo, display), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("pids: "):
                break
        out = "".join(lines)
        assert proc.poll() is None, f"quickstart exited early:\n{out}"
        assert "started a virtual display" not in out
        assert f"watching display {display} " in out
        console = _field(out, r"^  Console:\s+(https://127\.0\.0\.1:\d+/)")
        username, password = _field(out, r"^  DSL login:\s+(\S+ / \S+)$").split(" / ")
        resp = _log_in(console, demo / "collector" / "pki" / "ca.pem", username, password)
        assert resp.status_code == 303 and resp.headers["location"] == "/", resp.text[:500]
        deadline = time.monotonic() + 60
        while not any(d["last_seen_at"] for d in _devices(demo)):
            assert time.monotonic() < deadline, "the agent never reached the collector"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:   # the test failed early: stop what quickstart started
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            for pid in _pids("".join(lines)) if "pids: " in "".join(lines) else []:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
    assert proc.returncode == 130, out + rest
    assert "stopping" in rest
    assert not [p for p in _pids(out) if _alive(p)], "processes left running after Ctrl-C"
