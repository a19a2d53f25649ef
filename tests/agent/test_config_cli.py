"""Config errors name file/key/fix; the CLI has help everywhere, clear errors, and status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import ConfigError, load_config
from agent.spool import Spool
from proto import vigil_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_file_then_flags(tmp_path: Path) -> None:
    f = tmp_path / "a.toml"
    f.write_text('[agent]\ncontext_chars = 80\ncollector = "c.school.uk:7443"\n')
    cfg = load_config(f, {"collector": "other:1", "context_chars": None})
    assert cfg.context_chars == 80 and cfg.collector == "other:1"
    assert cfg.spool_max_bytes == 50 * 1024 * 1024


@pytest.mark.parametrize(("text", "key", "fragment"), [
    ("[agent]\ncontxt_chars = 5\n", "contxt_chars", "known keys"),
    ("[agent]\ncontext_chars = \"many\"\n", "context_chars", "whole number"),
    ("[agent]\nexcluded_windows = \"x\"\n", "excluded_windows", "list of strings"),
    ("[agent]\ncollector = \"nohostport\"\n", "collector", "HOST:PORT"),
])
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, key: str,
                                       fragment: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert str(f) in str(err.value) and f"'{key}'" in str(err.value)
    assert fragment in str(err.value)


def test_missing_config_is_exit_2_without_traceback(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["status", "--data-dir", str(tmp_path), "--config", str(tmp_path / "no.toml")])
    err = capsys.readouterr().err
    assert rc == 2 and "no.toml" in err and "file not found" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("cmd", [[], ["enroll"], ["run"], ["status"], ["install-check"]])
def test_every_command_has_help(cmd: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "agent.cli", *cmd, "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "usage: vigil-agent" in out.stdout
    assert len(out.stdout.splitlines()) > 3


def test_status_reports_spool_and_drops(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    s = Spool(tmp_path / "spool.sqlite3")
    s.put(pb.Capture(id="a", severity=3))
    s.count_drop("spool_full", 2)
    s.close()
    assert main(["status", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "not running" in out and "typed phrases" in out and "removable media" in out
    assert "Spool: 1 captures waiting" in out and "spool_full=2" in out
    assert "Device id: not enrolled" in out


def test_enrol_with_unreadable_ca_is_clear(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["enroll", "--server", "127.0.0.1:1", "--token", "t", "--ca",
               str(tmp_path / "missing.crt"), "--data-dir", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.crt" in err and "--ca" in err


def test_enroll_table_is_left_to_the_launcher(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text('[agent]\nmerge_seconds = 5\n[enroll]\nserver = "h:7444"\ntoken = "t"\n'
                 'ca = "ca.pem"\n')
    assert load_config(f).merge_seconds == 5
    f.write_text('[enroll]\nserver = "h:7444"\ntoken = "t"\nca = "ca.pem"\n')
    assert load_config(f).merge_seconds == 60
