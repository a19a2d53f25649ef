"""What a newcomer meets first with ``vigil-collector``: help pages that read as plain text,
and every command finding the data dir through ``$VIGIL_COLLECTOR_DATA_DIR`` (which the
quickstart's env file sets), or saying where it looked and what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from collector.cli import build_parser
from tests.support.collector import TEST_RULES

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, home: Path, cwd: Path | None = None,
         **env: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a fresh environment: HOME is *home*, so the default data dir is
    *home*/.local/share/vigil-collector; *env* adds variables."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("VIGIL_COLLECTOR_DATA_DIR", "XDG_DATA_HOME")}
    base.update(HOME=str(home), PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-m", "collector.cli", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, env=base, timeout=120, check=False)


def _help_pages() -> dict[str, str]:
    pages = {"vigil-collector": build_parser().format_help()}

    def walk(p: object, prefix: str) -> None:
        for action in getattr(p, "_actions", []):
            choices = getattr(action, "choices", None)
            if isinstance(choices, dict):
                for name, sub in choices.items():
                    pages[f"{prefix} {name}"] = sub.format_help()
                    walk(sub, f"{prefix} {name}")
    walk(build_parser(), "vigil-collector")
    return pages


def test_help_pages_show_no_markup() -> None:
    pages = _help_pages()
    assert len(pages) > 15
    marked = {name: line for name, page in pages.items() for line in page.splitlines()
              if "`" in line or ":data:" in line}
    assert not marked, marked
    top = pages["vigil-collector"]
    assert "Set up, run and administer the Vigil collector." in top
    assert "$VIGIL_COLLECTOR_DATA_DIR" in top and "cli:<os user>" in top


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("first-run") / "collector"
    out = _cli("init", "--data-dir", str(d), "--rules", str(TEST_RULES), "--no-model",
               home=d.parent)
    assert out.returncode == 0, out.stderr
    return d


def test_every_command_finds_the_data_dir_from_the_environment(data_dir: Path,
                                                                tmp_path: Path) -> None:
    env = {"VIGIL_COLLECTOR_DATA_DIR": str(data_dir)}
    devices = _cli("devices", "--json", home=tmp_path, **env)
    assert devices.returncode == 0 and json.loads(devices.stdout) == [], devices.stderr
    token = _cli("token", "create", "--site", "default", "--group", "year-9", home=tmp_path,
                 **env)
    assert token.returncode == 0, token.stderr
    listed = _cli("token", "list", home=tmp_path, **env)
    assert "year-9\t0/1\tactive" in listed.stdout, listed.stdout + listed.stderr
    contacts = _cli("site", "contacts", "--site", "default", "--email", "dsl@school.test",
                    home=tmp_path, **env)
    assert contacts.returncode == 0, contacts.stderr
    # a console command (registered by collector.console.cli) finds it the same way
    user = _cli("user", "create", "--username", "dsl", "--role", "dsl", "--site", "default",
                home=tmp_path, **env)
    assert user.returncode == 0 and "password: " in user.stdout, user.stderr
    # --data-dir still wins over the environment
    flag = _cli("devices", "--data-dir", str(tmp_path / "other"), home=tmp_path, **env)
    assert flag.returncode == 2 and f"at {tmp_path / 'other'} (given by --data-dir" in flag.stderr


def test_not_found_says_where_it_looked_and_what_to_do(tmp_path: Path) -> None:
    default = tmp_path / ".local" / "share" / "vigil-collector"
    out = _cli("devices", home=tmp_path)
    assert out.returncode == 2
    err = out.stderr
    assert err.count("\n") == 1, err      # one line, no traceback
    assert f"no collector data dir at {default} (the default: no --data-dir and " \
           "$VIGIL_COLLECTOR_DATA_DIR is not set" in err
    assert "--data-dir DIR or $VIGIL_COLLECTOR_DATA_DIR" in err
    assert f"run `vigil-collector init --data-dir {default}`" in err
    gone = tmp_path / "gone"
    out = _cli("user", "create", "--username", "x", "--role", "dsl", "--site", "default",
               home=tmp_path, VIGIL_COLLECTOR_DATA_DIR=str(gone))
    assert out.returncode == 2 and f"at {gone} (from $VIGIL_COLLECTOR_DATA_DIR;" in out.stderr
    # run where a quickstart demo lives, the message points at its env file
    demo_env = tmp_path / ".vigil-demo" / "env"
    demo_env.parent.mkdir()
    demo_env.write_text("export VIGIL_COLLECTOR_DATA_DIR=/somewhere\n")
    out = _cli("rules", "list", home=tmp_path, cwd=tmp_path)
    assert f"For the quickstart demo, first run: . {demo_env}" in out.stderr
