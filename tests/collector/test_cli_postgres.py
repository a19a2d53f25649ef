"""The same admin commands with ``--store postgresql://...``: a technician's CLI works on the
trust's PostgreSQL store exactly as on the school's SQLite file, and every change is audited
there."""

from __future__ import annotations

import json
from pathlib import Path

from collector.store.postgres import open_postgres_store
from tests.collector.test_cli import cli
from tests.support.collector import TEST_RULES


def test_init_site_token_exemption_and_devices_on_postgresql(tmp_path: Path,
                                                            pg_url: str) -> None:
    d = tmp_path / "data"
    out = cli("init", "--data-dir", str(d), "--store", pg_url, "--site-id", "north",
              "--site-name", "North High", "--rules", str(TEST_RULES))
    assert out.returncode == 0, out.stderr
    assert not (d / "vigil.db").exists()  # nothing went to a local SQLite file
    common = ("--data-dir", str(d), "--store", pg_url)
    out = cli("site", "contacts", "--site", "north", "--email", "dsl@north.test", *common)
    assert out.returncode == 0, out.stderr
    tok = cli("token", "create", "--site", "north", "--group", "year-9", "--uses", "3",
              "--expires", "1d", "--json", *common)
    assert tok.returncode == 0, tok.stderr
    token = json.loads(tok.stdout)
    listing = cli("token", "list", *common)
    assert token["id"] in listing.stdout and "0/3\tactive" in listing.stdout
    ex = cli("exempt", "add", "--site", "north", "--category", "radicalisation", "--until",
             "2d", "--reason", "History unit on extremism", *common)
    assert ex.returncode == 0 and "exemption" in ex.stdout, ex.stderr
    bad = cli("token", "revoke", "t-nope", *common)
    assert bad.returncode == 2 and "no unrevoked token" in bad.stderr
    assert cli("devices", *common).returncode == 0

    store = open_postgres_store(pg_url, d)
    try:
        site = store.get_site("north")
        assert site is not None and site.dsl_contacts == ["dsl@north.test"]
        assert store.active_rule_version_number() == 1
        actions = [r["action"] for r in store.audit_rows()]
        for a in ("collector.init", "site.add", "site.contacts", "token.create", "token.list",
                  "exemption.add", "devices.list"):
            assert a in actions, (a, actions)
        assert all(r["actor"].startswith(("cli:", "system")) for r in store.audit_rows())
    finally:
        store.close()


def test_an_unreachable_postgresql_is_one_clear_line(tmp_path: Path) -> None:
    d = tmp_path / "data"
    assert cli("init", "--data-dir", str(d), "--rules", str(TEST_RULES)).returncode == 0
    out = cli("devices", "--data-dir", str(d), "--store",
              "postgresql://vigil@127.0.0.1:1/none?connect_timeout=2")
    assert out.returncode == 2
    assert out.stderr.startswith("vigil-collector: error: cannot open the store")
    assert "Traceback" not in out.stderr


def test_console_accounts_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    """`vigil-collector user ...` works on the trust's PostgreSQL store as on SQLite."""
    d = tmp_path / "data"
    assert cli("init", "--data-dir", str(d), "--store", pg_url, "--site-id", "north",
               "--rules", str(TEST_RULES)).returncode == 0
    common = ("--data-dir", str(d), "--store", pg_url)
    made = cli("user", "create", "--username", "dsl.north", "--role", "dsl", "--site", "north",
               "--display-name", "Dee Ess", *common)
    assert made.returncode == 0, made.stderr
    listing = cli("user", "list", *common)
    assert listing.returncode == 0 and "dsl.north" in listing.stdout, listing.stderr
    store = open_postgres_store(pg_url, d)
    try:
        assert any(r["action"].startswith("user.") for r in store.audit_rows())
    finally:
        store.close()
