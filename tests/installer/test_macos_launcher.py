"""The macOS "Vigil Agent.app" launcher (installer/macos/launcher), exercised on Linux.

TCC grants privacy permissions to the code signature of the process's executable, so the
launcher must run the agent IN-PROCESS (embedded CPython), never exec python. These tests compile
vigil_launcher.c with gcc against this venv's base Python and check that behaviour; the Apple
parts (cc on macOS, the Python framework, codesign, TCC) cannot be tested here.
"""

from __future__ import annotations

import json
import os
import plistlib
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.installer.helpers import ROOT, clean_env

LAUNCHER_DIR = ROOT / "installer" / "macos" / "launcher"
SOURCE = LAUNCHER_DIR / "vigil_launcher.c"
VENV = Path(sys.prefix)

# Stands in for vigil_session.py: reports what the embedded interpreter sees, imports the
# project's `agent` package from the venv, and exits with the requested status.
PROBE = """\
import json, os, sys
import agent
print(json.dumps({
    "pid": os.getpid(),
    "exe": os.readlink("/proc/self/exe"),
    "executable": sys.executable,
    "prefix": sys.prefix,
    "base_prefix": sys.base_prefix,
    "argv": sys.argv,
    "path": sys.path,
    "agent": agent.__name__,
    "flags": [sys.flags.ignore_environment, sys.flags.no_user_site],
}))
sys.stdout.flush()
code = os.environ.get("VIGIL_TEST_EXIT", "0")
if code == "raise":
    raise RuntimeError("probe failed on purpose")
sys.exit(int(code))
"""


def _python_config() -> Path | None:
    version = sysconfig.get_config_var("VERSION")
    bindir = sysconfig.get_config_var("BINDIR")
    for name in (f"python{version}-config", "python3-config"):
        if bindir and (Path(bindir) / name).is_file():
            return Path(bindir) / name
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def _embed_flags() -> tuple[list[str], list[str]]:
    config = _python_config()
    include = sysconfig.get_config_var("INCLUDEPY")
    if config is None or not include or not (Path(include) / "Python.h").is_file():
        pytest.skip("no python3-config / Python.h for this venv's base Python")
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")

    def flags(kind: str) -> list[str]:
        out = subprocess.run([str(config), kind, "--embed"], capture_output=True, text=True,
                             check=True, timeout=60)
        return out.stdout.split()

    return flags("--cflags"), flags("--ldflags")


Compile = Callable[..., Path]


@pytest.fixture(scope="module")
def compile_launcher(tmp_path_factory: pytest.TempPathFactory) -> Compile:
    cflags, ldflags = _embed_flags()
    base = tmp_path_factory.mktemp("launcher")
    counter = iter(range(1000))

    def build(*, script: Path, testing: bool = True, venv: Path | None = None) -> Path:
        binary = base / f"vigil-agent-{next(counter)}"
        defines = [f'-DVIGIL_SCRIPT="{script}"']
        if testing:
            defines.append("-DVIGIL_LAUNCHER_TESTING")
        if venv is not None:
            defines.append(f'-DVIGIL_VENV="{venv}"')
        cmd = ["gcc", "-Wall", "-Wextra", "-Werror", *cflags, *defines, str(SOURCE),
               "-o", str(binary), *ldflags]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
        assert result.returncode == 0, result.stderr
        return binary

    return build


@pytest.fixture(scope="module")
def probe_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    script = tmp_path_factory.mktemp("script") / "probe session.py"
    script.write_text(PROBE, encoding="utf-8")
    return script


@pytest.fixture(scope="module")
def launcher(compile_launcher: Compile, probe_script: Path) -> Path:
    return compile_launcher(script=probe_script)


def _run(binary: Path, *args: str, venv: Path | None = VENV,
         **env: str) -> tuple[int, int, str, str]:
    """Start the launcher; returns (its pid, exit status, stdout, stderr)."""
    extra = dict(env)
    if venv is not None:
        extra["VIGIL_LAUNCHER_VENV"] = str(venv)
    with subprocess.Popen([str(binary), *args], env=clean_env(**extra), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        return proc.pid, proc.returncode, out, err


def _report(out: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return data


def test_runs_the_script_in_process_in_the_venv(launcher: Path, probe_script: Path) -> None:
    pid, code, out, err = _run(launcher)
    assert code == 0, err
    report = _report(out)
    # Same process as the one we started, and its image is the launcher, not python: no exec,
    # no fork, so TCC would see the launcher's signature.
    assert report["pid"] == pid
    assert Path(report["exe"]) == launcher
    assert report["prefix"] == str(VENV)
    assert report["base_prefix"] == sys.base_prefix
    assert report["executable"] == str(VENV / "bin" / "python3")
    assert report["agent"] == "agent"
    assert report["argv"] == [str(probe_script)]
    assert any(p.startswith(str(VENV)) and p.endswith("site-packages") for p in report["path"])


def test_arguments_pass_through_unchanged_and_are_not_python_options(
        launcher: Path, probe_script: Path) -> None:
    args = ["--config", "/Library/Application Support/Vigil/agent.toml", "-c",
            "print('INJECTED')", "-m", "http.server", ""]
    _, code, out, err = _run(launcher, *args)
    assert code == 0, err
    assert _report(out)["argv"] == [str(probe_script), *args]
    assert out.splitlines() == [out.strip()]  # only the probe's report: `-c` code never ran
    assert "INJECTED" not in err


def test_python_environment_variables_cannot_inject_code(launcher: Path, tmp_path: Path) -> None:
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "sitecustomize.py").write_text("print('INJECTED')\n", encoding="utf-8")
    (evil / "usercustomize.py").write_text("print('INJECTED')\n", encoding="utf-8")
    _, code, out, err = _run(launcher, PYTHONPATH=str(evil), PYTHONHOME=str(evil),
                             PYTHONINSPECT="1", PYTHONUSERBASE=str(evil))
    assert code == 0, err
    report = _report(out)
    assert "INJECTED" not in out + err
    assert not any(p.startswith(str(evil)) for p in report["path"])
    assert report["flags"] == [1, 1]
    assert str(Path(report["argv"][0]).parent) not in report["path"]  # safe_path


@pytest.mark.parametrize(("requested", "expected"), [("0", 0), ("3", 3), ("42", 42),
                                                      ("raise", 1)])
def test_script_exit_status_propagates(launcher: Path, requested: str, expected: int) -> None:
    _, code, out, err = _run(launcher, VIGIL_TEST_EXIT=requested)
    assert code == expected, err
    assert _report(out)["agent"] == "agent"
    if requested == "raise":
        assert "RuntimeError: probe failed on purpose" in err


def test_missing_venv_exits_70_naming_the_path(launcher: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no such venv"
    _, code, out, err = _run(launcher, venv=missing)
    assert code == 70
    assert out == ""
    assert str(missing) in err
    assert err.startswith("vigil-agent: ")


def test_venv_without_pyvenv_cfg_exits_70(launcher: Path, tmp_path: Path) -> None:
    broken = tmp_path / "venv"
    (broken / "bin").mkdir(parents=True)
    os.symlink(sys.executable, broken / "bin" / "python3")
    _, code, out, err = _run(launcher, venv=broken)
    assert code == 70
    assert out == ""
    assert str(broken / "pyvenv.cfg") in err


def test_missing_script_exits_70_naming_it(compile_launcher: Compile, tmp_path: Path) -> None:
    script = tmp_path / "gone.py"
    binary = compile_launcher(script=script)
    _, code, out, err = _run(binary)
    assert code == 70
    assert out == ""
    assert f"session script is missing: {script}" in err


def test_env_override_is_compiled_out_of_release_builds(
        compile_launcher: Compile, probe_script: Path, tmp_path: Path) -> None:
    release_venv = tmp_path / "release-venv"  # the compiled-in default; does not exist
    binary = compile_launcher(script=probe_script, testing=False, venv=release_venv)
    _, code, out, err = _run(binary, venv=VENV)  # VIGIL_LAUNCHER_VENV is set, and ignored
    assert code == 70
    assert out == ""
    assert str(release_venv) in err


def test_source_never_shells_out_or_execs() -> None:
    text = SOURCE.read_text(encoding="utf-8")
    code = "\n".join(line for line in text.splitlines()
                     if not line.lstrip().startswith(("*", "/*")))
    for banned in ("system(", "popen(", "execv", "execl", "posix_spawn", "fork(", "Py_Main("):
        assert banned not in code, banned
    for needed in ("PyConfig_InitPythonConfig", "Py_InitializeFromConfig", "Py_RunMain",
                   "#ifdef VIGIL_LAUNCHER_TESTING"):
        assert needed in code, needed


def test_info_plist() -> None:
    with (LAUNCHER_DIR / "Info.plist").open("rb") as fh:
        info = plistlib.load(fh)
    assert info["CFBundleIdentifier"] == "org.vigil.agent"
    assert info["CFBundleExecutable"] == "vigil-agent"
    assert info["CFBundleName"] == "Vigil Agent"
    assert info["CFBundlePackageType"] == "APPL"
    assert info["LSUIElement"] is True
    assert info["LSMinimumSystemVersion"] == "12.0"
    assert info["CFBundleShortVersionString"]
    assert info["CFBundleVersion"]


def test_entitlements_plist() -> None:
    with (LAUNCHER_DIR / "entitlements.plist").open("rb") as fh:
        entitlements = plistlib.load(fh)
    assert entitlements == {"com.apple.security.cs.disable-library-validation": True}
    text = (LAUNCHER_DIR / "entitlements.plist").read_text(encoding="utf-8")
    assert "allow-unsigned-executable-memory" in text  # the decision to leave it out is explained


def test_build_script_syntax_and_safety() -> None:
    build = LAUNCHER_DIR / "build.sh"
    text = build.read_text(encoding="utf-8")
    assert "UNTESTED ON A REAL MAC" in text
    assert "set -euo pipefail" in text
    assert "--options runtime" in text and "--timestamp" in text
    assert "codesign --verify --strict" in text and "codesign -d -r-" in text
    assert "-DVIGIL_LAUNCHER_TESTING" not in text
    assert os.access(build, os.X_OK)
    syntax = subprocess.run(["bash", "-n", str(build)], capture_output=True, text=True,
                            check=False, timeout=30)
    assert syntax.returncode == 0, syntax.stderr


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the refusal off a Mac")
def test_build_script_refuses_to_run_off_a_mac(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(LAUNCHER_DIR / "build.sh"), str(tmp_path / "out")],
                            capture_output=True, text=True, check=False, timeout=30,
                            env=clean_env(IDENTITY="Developer ID Application: X (TEAMID)"))
    assert result.returncode == 1
    assert "run this on a Mac" in result.stderr
    assert not (tmp_path / "out").exists()
