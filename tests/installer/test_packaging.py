"""The wheel a technician installs: built from the tree, installed into a fresh virtualenv, and
every console script and sub-command answers ``--help`` with real help text (as
aw-watcher-window's CI does). Also: the wheel carries its data files and type markers.
"""

from __future__ import annotations

import argparse
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.installer.helpers import ROOT, choices_from_error, clean_env, run, subcommands

CONSOLE_SCRIPTS = ("vigil-agent", "vigil-collector", "vigil-rules")
PACKAGES = ("proto", "rules", "agent", "collector")

# (glob relative to the repo root, required now?) Data that only appears once its package is
# written is checked as soon as the source tree has it; until then that case is skipped.
DATA_FILES = {
    "rules library": ("rules/library/*.toml", False),
    "proto sources": ("proto/*.proto", True),
    "proto stubs": ("proto/*.pyi", True),
    "py.typed markers": ("*/py.typed", True),
    "console templates": ("collector/console/templates/*.html", False),
    "console static files": ("collector/console/static/*", False),
}


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


@pytest.mark.parametrize("what", sorted(DATA_FILES))
def test_wheel_carries_data_files(built_wheel: Path, what: str) -> None:
    pattern, required = DATA_FILES[what]
    in_source = {p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern) if p.is_file()}
    if not in_source:
        if required:
            pytest.fail(f"{pattern} matches nothing in the source tree")
        pytest.skip(f"{pattern} does not exist in the source tree yet")
    missing = sorted(in_source - _wheel_names(built_wheel))
    assert not missing, (f"{what} missing from {built_wheel.name}: {missing} "
                         "(check [tool.setuptools.package-data] in pyproject.toml)")


def test_every_package_ships_py_typed(built_wheel: Path) -> None:
    names = _wheel_names(built_wheel)
    missing = [f"{p}/py.typed" for p in PACKAGES if f"{p}/py.typed" not in names]
    assert not missing, f"missing type markers in the wheel: {missing}"


def test_wheel_carries_every_python_module(built_wheel: Path) -> None:
    """A sub-package without __init__.py is silently left out by setuptools: catch that."""
    in_source = {
        p.relative_to(ROOT).as_posix()
        for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    missing = sorted(in_source - _wheel_names(built_wheel))
    assert not missing, f"modules missing from the wheel (no __init__.py?): {missing}"


def test_installed_code_comes_from_the_venv_not_the_tree(fresh_venv: Path,
                                                          tmp_path: Path) -> None:
    code = "import agent, collector, rules, proto; print(agent.__file__, proto.__file__)"
    proc = run([str(fresh_venv / "bin" / "python"), "-c", code], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for path in proc.stdout.split():
        assert Path(path).is_relative_to(fresh_venv), f"{path} is not inside the fresh venv"


def _help_page(script: Path, path: tuple[str, ...], cwd: Path) -> tuple[list[str], list[str]]:
    """Run `script *path --help`; return (problems, sub-command names)."""
    cmd = " ".join((script.name, *path))
    proc = run([str(script), *path, "--help"], cwd=cwd, timeout=60,
               env=clean_env(COLUMNS="100"))
    if proc.returncode != 0 or "usage:" not in proc.stdout:
        return [f"`{cmd} --help` exited {proc.returncode}: "
                f"{(proc.stderr or proc.stdout).strip()[-800:]}"], []
    problems = []
    if "Traceback" in proc.stderr:
        problems.append(f"`{cmd} --help` printed a traceback:\n{proc.stderr[-800:]}")
    found = subcommands(proc.stdout)
    if found:   # probe the real choice list: it also names sub-commands argparse hid
        probe = run([str(script), *path, "no-such-command"], cwd=cwd, timeout=60)
        for name in choices_from_error(probe.stderr):
            found.setdefault(name, "")
    problems += [f"`{cmd} {name}` has no help text (add help= to add_parser)"
                 for name, text in found.items() if not text]
    return problems, list(found)


def _check_help(script: Path, cwd: Path) -> tuple[list[str], list[str]]:
    """Walk every sub-command (3 levels deep), a few at a time; return (problems, seen)."""
    problems: list[str] = []
    seen: list[str] = []
    frontier: list[tuple[str, ...]] = [()]
    with ThreadPoolExecutor(max_workers=4) as pool:
        while frontier:
            pages = list(pool.map(lambda p: _help_page(script, p, cwd), frontier))
            nxt: list[tuple[str, ...]] = []
            for path, (probs, subs) in zip(frontier, pages, strict=True):
                seen.append(" ".join((script.name, *path)))
                problems += probs
                if len(path) < 2:
                    nxt += [(*path, sub) for sub in subs]
            frontier = nxt
    return problems, seen


@pytest.mark.parametrize("script", CONSOLE_SCRIPTS)
def test_console_script_and_every_subcommand_has_help(fresh_venv: Path, script: str,
                                                      tmp_path: Path) -> None:
    exe = fresh_venv / "bin" / script
    assert exe.exists(), f"{script} was not installed by the wheel (check [project.scripts])"
    problems, seen = _check_help(exe, tmp_path)
    assert not problems, "\n".join(problems)
    assert seen[0] == script


@pytest.mark.parametrize("script", CONSOLE_SCRIPTS)
def test_unknown_subcommand_is_one_clear_error(fresh_venv: Path, script: str,
                                               tmp_path: Path) -> None:
    proc = run([str(fresh_venv / "bin" / script), "no-such-command"], cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.strip(), "the error must go to stderr"
    assert "Traceback" not in proc.stderr, proc.stderr


def test_help_checker_catches_a_subcommand_without_help() -> None:
    """The checker above is only worth something if it notices a missing help= for real."""
    parser = argparse.ArgumentParser(prog="demo")
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("enroll", help="Enrol this device")
    sub.add_parser("a-rather-long-sub-command-name", help="Wrapped onto the next line")
    sub.add_parser("silent")
    parser.add_argument("--role", choices=["dsl", "admin"])
    found = subcommands(parser.format_help())
    assert found == {"enroll": "Enrol this device",
                     "a-rather-long-sub-command-name": "Wrapped onto the next line",
                     "silent": ""}


def test_help_checker_finds_hidden_subcommands_behind_a_metavar() -> None:
    parser = argparse.ArgumentParser(prog="demo", exit_on_error=False)
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.add_parser("run", help="Run it")
    sub.add_parser("hidden")
    assert subcommands(parser.format_help()) == {"run": "Run it"}
    with pytest.raises(argparse.ArgumentError) as err:
        parser.parse_args(["no-such-command"])
    assert choices_from_error(f"demo: error: {err.value}\n") == ["run", "hidden"]
