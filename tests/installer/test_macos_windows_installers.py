"""installer/macos and installer/windows cannot run here (no macOS, no Windows PowerShell).

What these tests prove, and nothing more:
* both PowerShell scripts parse (tree-sitter-powershell, the grammar GitHub uses; a test
  shows it flags an injected syntax error), and pin the fixes that Intune and Task Scheduler
  need (the Sysnative relaunch before anything reads ``$env:ProgramFiles``, version-sorted
  Python discovery, priority 5, the SYSTEM enrolment task, a token file Users cannot read);
* the LaunchAgent, the LaunchDaemon and the PPPC profile are property lists whose keys and
  values are ones Apple documents (launchd.plist(5); Device Management "Privacy Preferences
  Policy Control" and "Service Management - Managed Login Items" payloads), checked with
  ``plistlib`` and the key lists below, not by macOS or an MDM;
* ``installer/macos/install.sh --root DIR`` (run with Linux bash) writes the files it promises.
Nothing here exercises launchd, TCC, Task Scheduler, icacls or PowerShell itself.
"""

from __future__ import annotations

import plistlib
import re
import sys
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.installer.helpers import ROOT, run, write_ca

MACOS = ROOT / "installer" / "macos"
WINDOWS = ROOT / "installer" / "windows"

#: launchd.plist(5) keys this project may use, and the documented ProcessType values.
LAUNCHD_KEYS = {"Label", "ProgramArguments", "Program", "RunAtLoad", "KeepAlive",
                "ThrottleInterval", "ProcessType", "LimitLoadToSessionType", "StartInterval",
                "StartCalendarInterval", "WorkingDirectory", "EnvironmentVariables",
                "StandardOutPath", "StandardErrorPath", "ExitTimeOut", "Nice",
                "AssociatedBundleIdentifiers"}
PROCESS_TYPES = {"Background", "Standard", "Adaptive", "Interactive"}
#: PPPC (com.apple.TCC.configuration-profile-policy) Services keys and identity keys.
TCC_SERVICES = {"Accessibility", "AddressBook", "AppleEvents", "BluetoothAlways", "Calendar",
                "Camera", "FileProviderPresence", "ListenEvent", "MediaLibrary", "Microphone",
                "Photos", "PostEvent", "Reminders", "ScreenCapture", "SpeechRecognition",
                "SystemPolicyAllFiles", "SystemPolicyAppBundles", "SystemPolicyAppData",
                "SystemPolicyDesktopFolder", "SystemPolicyDocumentsFolder",
                "SystemPolicyDownloadsFolder", "SystemPolicyNetworkVolumes",
                "SystemPolicyRemovableVolumes", "SystemPolicySysAdminFiles"}
TCC_IDENTITY_KEYS = {"Identifier", "IdentifierType", "CodeRequirement", "Authorization",
                     "Comment", "StaticCode", "AEReceiverIdentifier",
                     "AEReceiverIdentifierType", "AEReceiverCodeRequirement"}
AUTHORIZATIONS = {"Allow", "Deny", "AllowStandardUserToSetSystemService"}
#: Apple: MDM may not Allow these; at most a standard user may approve them.
NOT_PRE_APPROVABLE = {"ListenEvent", "ScreenCapture", "Camera", "Microphone"}
SERVICEMANAGEMENT_RULE_TYPES = {"BundleIdentifier", "BundleIdentifierPrefix", "Label",
                                "LabelPrefix", "TeamIdentifier"}
PAYLOAD_KEYS = {"PayloadType", "PayloadIdentifier", "PayloadUUID", "PayloadVersion"}


def _plist(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        data: dict[str, Any] = plistlib.load(f)
    return data


PLISTS = ["org.vigil.agent.plist", "org.vigil.enrol.plist", "org.vigil.uplink.plist"]
APP_BINARY = "/Library/Vigil/Vigil Agent.app/Contents/MacOS/vigil-agent"


@pytest.mark.parametrize("name", PLISTS)
def test_launchd_plists_use_only_documented_keys(name: str) -> None:
    plist = _plist(MACOS / name)
    assert set(plist) <= LAUNCHD_KEYS, set(plist) - LAUNCHD_KEYS
    assert plist["Label"] == name.removesuffix(".plist")
    assert plist["ProcessType"] in PROCESS_TYPES
    if name == "org.vigil.agent.plist":  # the signed launcher the privacy profile names
        assert plist["ProgramArguments"][0] == APP_BINARY
    else:  # root daemons: no privacy permissions, so plain Python
        assert plist["ProgramArguments"][0] == "/Library/Vigil/venv/bin/python3"
    if name == "org.vigil.enrol.plist":
        assert plist["ProgramArguments"][1] == "/Library/Vigil/vigil_session.py"


def test_uplink_daemon_runs_the_relay_as_root_on_the_agents_socket() -> None:
    """The relay is a LaunchDaemon (root: no UserName, no GUI session), kept alive, on the
    socket and device folder the agents use (agent.relay's macOS defaults)."""
    from agent.paths import machine_device_dir

    plist = _plist(MACOS / "org.vigil.uplink.plist")
    args = plist["ProgramArguments"]
    assert args[1:3] == ["-m", "agent.relay"]
    opts = dict(zip(args[3::2], args[4::2], strict=True))
    assert opts == {"--device-dir": str(machine_device_dir("darwin", env={})),
                    "--socket": "/var/run/vigil/uplink.sock"}
    assert "UserName" not in plist and "LimitLoadToSessionType" not in plist
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] is True
    assert plist["ProcessType"] != "Background"  # Background throttles the capture I/O
    assert plist["StandardErrorPath"].startswith("/Library/Logs/Vigil/")


def test_launch_agent_plist_is_a_per_user_keepalive_agent() -> None:
    plist = _plist(MACOS / "org.vigil.agent.plist")
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] is True
    assert plist["LimitLoadToSessionType"] == "Aqua"   # one per user GUI session
    assert plist["ProgramArguments"][1:] == ["--config",
                                             "/Library/Application Support/Vigil/agent.toml"]
    assert plist["AssociatedBundleIdentifiers"] == "org.vigil.agent"  # Login Items name it


def test_enrol_daemon_retries_until_enrolled() -> None:
    plist = _plist(MACOS / "org.vigil.enrol.plist")
    assert "--enrol-device" in plist["ProgramArguments"]
    assert plist["RunAtLoad"] is True and plist["StartInterval"] == 300
    assert "LimitLoadToSessionType" not in plist  # a daemon: root, no GUI session


def test_pppc_profile_payloads_are_apples() -> None:
    profile = _plist(MACOS / "vigil-pppc.mobileconfig")
    assert profile["PayloadType"] == "Configuration" and profile["PayloadScope"] == "System"
    payloads = profile["PayloadContent"]
    uuids = [profile["PayloadUUID"]] + [p["PayloadUUID"] for p in payloads]
    assert len({uuid.UUID(u) for u in uuids}) == len(uuids)
    for p in payloads:
        assert set(p) >= PAYLOAD_KEYS, p.get("PayloadType")
    by_type = {p["PayloadType"]: p for p in payloads}
    assert set(by_type) == {"com.apple.TCC.configuration-profile-policy",
                            "com.apple.servicemanagement"}
    services = by_type["com.apple.TCC.configuration-profile-policy"]["Services"]
    assert set(services) <= TCC_SERVICES
    assert set(services) == {"Accessibility", "ListenEvent", "ScreenCapture",
                             "SystemPolicyRemovableVolumes"}
    for name, entries in services.items():
        for entry in entries:
            assert set(entry) <= TCC_IDENTITY_KEYS, set(entry) - TCC_IDENTITY_KEYS
            assert entry["IdentifierType"] in {"bundleID", "path"} and entry["CodeRequirement"]
            # only the signed launcher, never Python (which would let every script have it)
            assert entry["Identifier"] == "org.vigil.agent" == _plist(
                MACOS / "launcher" / "Info.plist")["CFBundleIdentifier"]
            assert entry["CodeRequirement"].startswith('identifier "org.vigil.agent" and ')
            assert "python" not in entry["CodeRequirement"].lower()
            assert entry["Authorization"] in AUTHORIZATIONS
            if name in NOT_PRE_APPROVABLE:
                assert entry["Authorization"] != "Allow", name
    assert services["Accessibility"][0]["Authorization"] == "Allow"       # titles via AX
    assert services["SystemPolicyRemovableVolumes"][0]["Authorization"] == "Allow"
    rules = by_type["com.apple.servicemanagement"]["Rules"]
    assert {r["RuleType"] for r in rules} <= SERVICEMANAGEMENT_RULE_TYPES
    labels = {r["RuleValue"] for r in rules if r["RuleType"] == "Label"}
    assert labels == {_plist(MACOS / n)["Label"] for n in PLISTS}


def test_macos_install_writes_the_promised_files(built_wheel: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    ca = write_ca(tmp_path / "ca.crt")
    args = ["bash", str(MACOS / "install.sh"), "--root", str(root), "--collector",
            "vigil.school.test:7443", "--token", "tok_1", "--ca", str(ca), "--wheel",
            str(built_wheel), "--python", sys.executable, "--no-enrol"]
    proc = run(args, cwd=tmp_path)  # no launcher: refused, with what to do, before any work
    assert proc.returncode == 2 and "launcher/build.sh" in proc.stderr, proc.stderr
    assert not root.exists() or not any(root.iterdir())
    # a stand-in for the signed bundle build.sh makes (signing needs a Mac)
    app = tmp_path / "Vigil Agent.app"
    (app / "Contents" / "MacOS").mkdir(parents=True)
    (app / "Contents" / "MacOS" / "vigil-agent").write_text("#!/bin/sh\n")
    (app / "Contents" / "MacOS" / "vigil-agent").chmod(0o755)
    (app / "Contents" / "Info.plist").write_bytes((MACOS / "launcher" / "Info.plist").read_bytes())
    proc = run([*args, "--app", str(app)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installed = root / "Library" / "Vigil" / "Vigil Agent.app" / "Contents" / "MacOS"
    assert (installed / "vigil-agent").read_text() == "#!/bin/sh\n"
    conf = root / "Library" / "Application Support" / "Vigil"
    assert tomllib.loads((conf / "agent.toml").read_text()) == {
        "agent": {"collector": "vigil.school.test:7443"}}
    assert tomllib.loads((conf / "enrol.toml").read_text()) == {
        "enroll": {"server": "vigil.school.test:7444", "token": "tok_1",
                   "ca": "/Library/Application Support/Vigil/ca.crt"}}
    assert (conf / "enrol.toml").stat().st_mode & 0o777 == 0o600
    assert (conf / "device").stat().st_mode & 0o777 == 0o755
    assert (conf / "sessions").stat().st_mode & 0o7777 == 0o1733
    assert (conf / "ca.crt").read_bytes() == ca.read_bytes()
    assert (root / "Library" / "Vigil" / "venv" / "bin" / "vigil-agent").exists()
    assert (root / "Library" / "Vigil" / "vigil_session.py").exists()
    assert (root / "Library" / "Logs" / "Vigil").is_dir()
    for folder, name in (("LaunchAgents", "org.vigil.agent.plist"),
                         ("LaunchDaemons", "org.vigil.enrol.plist"),
                         ("LaunchDaemons", "org.vigil.uplink.plist")):
        assert (root / "Library" / folder / name).read_bytes() == (MACOS / name).read_bytes()

    proc = run(["bash", str(MACOS / "uninstall.sh"), "--root", str(root), "--purge-user-data"],
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [p for p in root.rglob("*") if not p.is_dir()] == []


def test_readmes_say_the_scripts_are_untested_on_the_real_os() -> None:
    for readme, os_name in ((MACOS / "README.md", "Mac"), (WINDOWS / "README.md", "Windows")):
        head = readme.read_text()[:600]
        assert "Untested on" in head and os_name in head, readme


def _parser() -> Any:
    ts = pytest.importorskip("tree_sitter")
    tsp = pytest.importorskip("tree_sitter_powershell")
    return ts.Parser(ts.Language(tsp.language()))


def _errors(node: Any) -> list[str]:
    out = []
    if node.type == "ERROR" or node.is_missing:
        out.append(f"line {node.start_point[0] + 1}: {node.type}")
    for child in node.children:
        out.extend(_errors(child))
    return out


@pytest.mark.parametrize("script", ["install.ps1", "uninstall.ps1"])
def test_powershell_scripts_parse(script: str) -> None:
    tree = _parser().parse((WINDOWS / script).read_bytes())
    assert not tree.root_node.has_error, _errors(tree.root_node)


def test_the_parser_would_catch_a_broken_script() -> None:
    text = (WINDOWS / "install.ps1").read_text()
    for broken in (text.replace("if (-not $Python) {", "if (-not $Python {", 1),
                   text.replace('$relaunch = @("-NoProfile"', '$relaunch = @("-NoProfile"', 1)
                   .replace("exit $LASTEXITCODE\n}", "exit $LASTEXITCODE\n", 1)):
        assert broken != text
        assert _parser().parse(broken.encode()).root_node.has_error


def _body(script: str) -> str:
    """The script after its param() block (the defaults inside param may name ProgramFiles:
    they are recomputed in the relaunched 64-bit process)."""
    text = (WINDOWS / script).read_text()
    return text[text.index("Set-StrictMode"):]


@pytest.mark.parametrize("script", ["install.ps1", "uninstall.ps1"])
def test_32bit_powershell_relaunches_through_sysnative_before_anything_else(script: str) -> None:
    body = _body(script)
    relaunch = body.index(
        "if ($env:PROCESSOR_ARCHITEW6432 -and -not [Environment]::Is64BitProcess)")
    assert "Sysnative\\WindowsPowerShell\\v1.0\\powershell.exe" in body[relaunch:relaunch + 400]
    assert "$PSBoundParameters" in body[relaunch:relaunch + 800]
    for use in ("$env:ProgramFiles", "icacls", "Register-ScheduledTask", "Get-ScheduledTask"):
        at = body.find(use)
        assert at == -1 or at > relaunch, f"{use} runs before the 64-bit relaunch"


def test_windows_install_pins_what_a_school_laptop_needs() -> None:
    install = (WINDOWS / "install.ps1").read_text()
    assert '(Join-Path $env:ProgramData "Vigil")' in install
    assert "New-ScheduledTaskTrigger -AtLogOn" in install
    assert '-GroupId "S-1-5-32-545"' in install and "pythonw.exe" in install
    assert "-Priority 5" in install  # the default 7 is below normal
    assert "Sort-Object FullName" not in install  # a name sort puts Python39 above Python313
    assert re.search(r"Sort-Object -Property @\{ Expression = \{ \[int\]", install)
    # the device enrols once, as SYSTEM; the sessions never do
    assert "--enrol-device" in install and '-UserId "SYSTEM"' in install
    enrol_acl = next(line for line in install.splitlines()
                     if line.startswith("Invoke-Checked") and "$enrolPath" in line)
    assert "S-1-5-32-545" not in enrol_acl  # Users cannot read the token
    assert "token =" not in install[install.index("$toml = @"):install.index("$enrolToml = @")]
    assert '"*S-1-5-32-545:(AD,X)"' in install and '"*S-1-3-0:(OI)(CI)(IO)F"' in install
    uninstall = (WINDOWS / "uninstall.ps1").read_text()
    assert '"Vigil Enrol"' in uninstall and "sessions" in uninstall


def test_windows_install_runs_the_uplink_relay_as_system_and_locks_the_key() -> None:
    install = (WINDOWS / "install.ps1").read_text()
    relay = install[install.index("$relayArgs ="):install.index('-TaskName "Vigil Uplink"')]
    assert '"-m agent.relay --device-dir' in relay
    assert '$relayPrincipal = New-ScheduledTaskPrincipal -UserId "SYSTEM" -LogonType ' \
        'ServiceAccount -RunLevel Highest' in relay
    assert "New-ScheduledTaskTrigger -AtStartup" in relay
    assert "-ExecutionTimeLimit ([TimeSpan]::Zero)" in relay and "-Priority 5" in relay
    assert "-RestartCount" in relay and "-RestartInterval" in relay
    assert "-MultipleInstances IgnoreNew" in relay  # one relay: it owns the pipe
    assert 'Register-ScheduledTask -TaskName "Vigil Uplink" -TaskPath "\\Vigil\\"' in install
    # the key: SYSTEM and Administrators only, inheritance removed
    key_acl = next(line for line in install.splitlines()
                   if "icacls" in line and "$deviceKey" in line)
    assert '"/inheritance:r", "/grant:r", "*S-1-5-18:F", "*S-1-5-32-544:F"' in key_acl
    assert "S-1-5-32-545" not in key_acl
    # the folder: Users list it but inherit nothing; the public parts are granted one by one
    folder_acl = install[install.index('@($deviceDir, "/inheritance:r"'):]
    folder_acl = folder_acl[:folder_acl.index('")') + 2]  # to the end of the argument list
    assert folder_acl.endswith('"*S-1-5-32-545:RX")')  # RX, this folder only: no (OI)(CI)
    assert '"*S-1-5-18:(OI)(CI)F"' in folder_acl
    assert '@($public, "/grant", "*S-1-5-32-545:R")' in install
    assert install.index("Protect-DeviceIdentity $deviceDir") > install.index("--enrol-device")
    uninstall = (WINDOWS / "uninstall.ps1").read_text()
    assert '"Vigil Uplink"' in uninstall

