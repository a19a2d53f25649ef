"""The vigil-collector command line, run for real against temp data dirs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from collector.cli import build_parser
from collector.config import ConfigError, load_config
from collector.domain.triage import TriagePolicy
from collector.services.ingest import ingest
from collector.store.sqlite import open_store
from tests.collector.store_suite import cap
from tests.support.collector import TEST_RULES

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    out = cli("init", "--data-dir", str(d), "--rules", str(TEST_RULES), "--hostname",
              "vigil.school.test")
    assert out.returncode == 0, out.stderr
    return d


def _subcommands() -> list[list[str]]:
    parser = build_parser()
    paths: list[list[str]] = []

    def walk(p: object, prefix: list[str]) -> None:
        for action in getattr(p, "_actions", []):
            choices = getattr(action, "choices", None)
            if isinstance(choices, dict):
                for name, sub in choices.items():
                    paths.append([*prefix, name])
                    walk(sub, [*prefix, name])
    walk(parser, [])
    return paths


def test_every_command_has_help() -> None:
    parser = build_parser()
    for path in _subcommands():
        sub = parser
        for name in path:
            sub = next(a for a in sub._actions if isinstance(getattr(a, "choices", None), dict)
                       ).choices[name]
        assert sub.format_help().strip(), path
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{' '.join(path)} {action.option_strings} has no help"
    assert cli("token", "create", "--help").returncode == 0


def test_init_is_idempotent_and_creates_everything(data_dir: Path) -> None:
    ca = (data_dir / "pki" / "ca.pem").read_bytes()
    again = cli("init", "--data-dir", str(data_dir), "--rules", str(TEST_RULES))
    assert again.returncode == 0 and "site: default (exists)" in again.stdout
    assert (data_dir / "pki" / "ca.pem").read_bytes() == ca
    for f in ("pki/ca-key.pem", "pki/server.pem", "rules/signing-key.pem", "screenshot.key"):
        assert (data_dir / f).exists()
        if "key" in f:
            assert (data_dir / f).stat().st_mode & 0o077 == 0
    assert "* v1" in cli("rules", "list", "--data-dir", str(data_dir)).stdout
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((data_dir / "pki" / "server.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "vigil.school.test"} <= set(sans.get_values_for_type(x509.DNSName))
    store = open_store(data_dir / "vigil.db", data_dir)
    try:
        assert [r["action"] for r in store.audit_rows()].count("collector.init") == 2
        assert all(r["actor"].startswith("cli:") for r in store.audit_rows("collector.init"))
    finally:
        store.close()


def test_errors_are_one_line_exit_2(tmp_path: Path, data_dir: Path) -> None:
    out = cli("token", "list", "--data-dir", str(tmp_path / "missing"))
    assert out.returncode == 2 and "run `vigil-collector init" in out.stderr
    out = cli("token", "create", "--site", "nope", "--group", "g", "--data-dir", str(data_dir))
    assert out.returncode == 2 and "site 'nope' does not exist" in out.stderr
    out = cli("devices", "--silent", "soon", "--data-dir", str(data_dir))
    assert out.returncode == 2 and "3d" in out.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[smtp]\nport = 'twenty-five'\n")
    out = cli("purge", "--data-dir", str(data_dir), "--config", str(bad))
    assert out.returncode == 2 and "smtp.port" in out.stderr and "int" in out.stderr
    assert "Traceback" not in out.stderr


def test_config_layers_and_typed_errors(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[alerts]\nack_minutes = 10\n[triage]\ntimezone = 'UTC'\n")
    cfg = load_config(f, tmp_path)
    assert cfg.alerts.ack_minutes == 10 and cfg.alerts.min_priority == 90
    f.write_text("[alerts]\nack_minute = 10\n")
    with pytest.raises(ConfigError, match=r"unknown key 'alerts.ack_minute'.*ack_minutes"):
        load_config(f)
    f.write_text("[nonsense]\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(f)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.toml")


def test_tokens_devices_and_purge(data_dir: Path) -> None:
    d = ["--data-dir", str(data_dir)]
    out = cli("token", "create", "--site", "default", "--group", "year-9", "--uses", "3", *d)
    secret = out.stdout.strip()
    assert secret.startswith("vgl_")
    listing = cli("token", "list", *d).stdout
    assert "year-9\t0/3\tactive" in listing and secret not in listing
    store = open_store(data_dir / "vigil.db", data_dir)
    now = int(time.time() * 1000)
    try:
        store.enrol_device(secret, "d-old", "pc-old", "linux", "1.0", "01", now - 5 * 86_400_000)
        store.ensure_site("s1", "s1", now)
        c = cap(1, device="d-old", t=now - 40 * 86_400_000, shot=b"png")
        c.site_id = "default"
        item = ingest(store, [c], now - 40 * 86_400_000, TriagePolicy()).items[0]
        store.set_queue_status(item.id, "false_positive", "dsl", now - 31 * 86_400_000)
    finally:
        store.close()
    silent = cli("devices", "--silent", "3d", *d).stdout
    assert "d-old" in silent and "pc-old" in silent
    assert "d-old" not in cli("devices", "--silent", "6d", *d).stdout
    dry = cli("purge", "--dry-run", *d)
    assert "would purge: 1 queue items, 1 captures, 1 screenshots" in dry.stdout
    assert len(list((data_dir / "screenshots").glob("*.bin"))) == 1
    done = cli("purge", *d)
    assert "purged: 1 queue items, 1 captures, 1 screenshots" in done.stdout
    assert list((data_dir / "screenshots").glob("*.bin")) == []
    store = open_store(data_dir / "vigil.db", data_dir)
    try:
        actions = [r["action"] for r in store.audit_rows()]
    finally:
        store.close()
    assert {"token.create", "devices.list", "retention.purge", "retention.purge.dry_run"} \
        <= set(actions)


def test_exemption_needs_reason_and_is_audited(data_dir: Path) -> None:
    d = ["--data-dir", str(data_dir)]
    out = cli("exempt", "add", "--site", "default", "--category", "radicalisation",
              "--reason", "  ", *d)
    assert out.returncode == 2 and "reason" in out.stderr
    out = cli("exempt", "add", "--site", "default", "--category", "radicalisation", "--group",
              "year-10", "--until", "7d", "--reason", "History: extremism unit this week", *d)
    assert out.returncode == 0 and "exemption" in out.stdout



def test_devices_output_never_replays_control_characters(data_dir: Path) -> None:
    d = ["--data-dir", str(data_dir)]
    secret = cli("token", "create", "--site", "default", "--group", "g", *d).stdout.strip()
    store = open_store(data_dir / "vigil.db", data_dir)
    try:
        store.enrol_device(secret, "d-evil", "pc\x1b[2J\x07evil", "linux", "1", "01",
                           int(time.time() * 1000))
    finally:
        store.close()
    out = cli("devices", *d).stdout
    assert "\x1b" not in out and "\x07" not in out and "pc\\x1b[2J\\x07evil" in out
