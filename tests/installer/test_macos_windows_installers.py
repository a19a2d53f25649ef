"""installer/macos and installer/windows cannot run here (no macOS, no PowerShell).

What these tests prove, and nothing more:
* the LaunchAgent and the PPPC profile are well-formed property lists with the keys launchd and
  an MDM need (``plistlib`` parses them: that is a real XML/type check, not a macOS check);
* ``installer/macos/install.sh --root DIR`` (run with Linux bash) writes the files it promises;
* each README says plainly that its scripts are untested on the real OS.
Nothing here exercises launchd, TCC, Task Scheduler or PowerShell.
"""

from __future__ import annotations

import plistlib
import sys
import tomllib
import uuid
from pathlib import Path

from tests.installer.helpers import ROOT, run, write_ca

MACOS = ROOT / "installer" / "macos"
WINDOWS = ROOT / "installer" / "windows"


def test_launch_agent_plist_is_a_per_user_keepalive_agent() -> None:
    with (MACOS / "org.vigil.agent.plist").open("rb") as f:
        plist = plistlib.load(f)
    assert plist["Label"] == "org.vigil.agent"
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] is True
    assert plist["LimitLoadToSessionType"] == "Aqua"   # one per user GUI session
    args = plist["ProgramArguments"]
    assert args[0] == "/Library/Vigil/venv/bin/python3"
    assert args[1] == "/Library/Vigil/vigil_session.py"
    assert args[2:] == ["--config", "/Library/Application Support/Vigil/agent.toml"]


def test_pppc_profile_is_well_formed_and_covers_the_three_permissions() -> None:
    with (MACOS / "vigil-pppc.mobileconfig").open("rb") as f:
        profile = plistlib.load(f)
    assert profile["PayloadType"] == "Configuration"
    uuids = [profile["PayloadUUID"]] + [p["PayloadUUID"] for p in profile["PayloadContent"]]
    assert len({uuid.UUID(u) for u in uuids}) == len(uuids)
    (tcc,) = profile["PayloadContent"]
    assert tcc["PayloadType"] == "com.apple.TCC.configuration-profile-policy"
    services = tcc["Services"]
    assert set(services) == {"Accessibility", "ListenEvent", "ScreenCapture"}
    # Apple: MDM may Allow Accessibility, but Input Monitoring and Screen Recording can at most
    # be left for a standard user to approve.
    assert services["Accessibility"][0]["Authorization"] == "Allow"
    for name in ("ListenEvent", "ScreenCapture"):
        assert services[name][0]["Authorization"] == "AllowStandardUserToSetSystemService"
    for entries in services.values():
        for entry in entries:
            assert entry["IdentifierType"] == "bundleID" and entry["CodeRequirement"]


def test_macos_install_writes_the_promised_files(built_wheel: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    ca = write_ca(tmp_path / "ca.crt")
    proc = run(["bash", str(MACOS / "install.sh"), "--root", str(root), "--collector",
                "vigil.school.test:7443", "--token", "tok_1", "--ca", str(ca), "--wheel",
                str(built_wheel), "--python", sys.executable], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    conf = root / "Library" / "Application Support" / "Vigil"
    data = tomllib.loads((conf / "agent.toml").read_text())
    assert data == {"agent": {"collector": "vigil.school.test:7443"},
                    "enroll": {"server": "vigil.school.test:7444", "token": "tok_1",
                               "ca": "/Library/Application Support/Vigil/ca.crt"}}
    assert (conf / "ca.crt").read_bytes() == ca.read_bytes()
    assert (root / "Library" / "Vigil" / "venv" / "bin" / "vigil-agent").exists()
    assert (root / "Library" / "Vigil" / "vigil_session.py").exists()
    installed = root / "Library" / "LaunchAgents" / "org.vigil.agent.plist"
    assert installed.read_bytes() == (MACOS / "org.vigil.agent.plist").read_bytes()

    proc = run(["bash", str(MACOS / "uninstall.sh"), "--root", str(root)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [p for p in root.rglob("*") if not p.is_dir()] == []


def test_readmes_say_the_scripts_are_untested_on_the_real_os() -> None:
    for readme, os_name in ((MACOS / "README.md", "Mac"), (WINDOWS / "README.md", "Windows")):
        head = readme.read_text()[:600]
        assert "Untested on" in head and os_name in head, readme


def test_windows_scripts_exist_and_use_the_documented_paths() -> None:
    """Not a lint (there is no PowerShell here): it only pins the paths the docs promise."""
    install = (WINDOWS / "install.ps1").read_text()
    assert (WINDOWS / "uninstall.ps1").exists()
    assert '(Join-Path $env:ProgramData "Vigil")' in install
    assert "New-ScheduledTaskTrigger -AtLogOn" in install
    assert '-GroupId "S-1-5-32-545"' in install
    assert "pythonw.exe" in install
