"""The console's vigil-collector sub-commands, on a real store (and a real SMTP server).

SQLite only, and on purpose not over the two-backend ``world``: these commands find their
store from ``--data-dir`` and open the SQLite file there (collector/console/cli.py, through
open_console_store); they do not read ``store.url`` yet, so there is no PostgreSQL path to
test until they do.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import time

import pytest
from aiosmtpd.controller import Controller
from starlette.testclient import TestClient

from collector.console import create_app
from collector.console.cli import register

from .conftest import login
from .support import audit_rows, connect, device, make_store, seed_capture, site


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def data(tmp_path):
    db = make_store(tmp_path)  # <data dir>/vigil.db, as collector.config places it
    with connect(db) as conn:
        site(conn, "north", "North High School", ["dsl@north.example"])
    return tmp_path


def run(argv: list[str], monkeypatch=None, stdin: str = "") -> int:
    parser = argparse.ArgumentParser(prog="vigil-collector")
    register(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    if monkeypatch is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return int(args.fn(args))


def test_user_create_prints_a_password_that_logs_in(data, capsys):
    assert run(["user", "create", "--username", "mrs.jones", "--role", "dsl", "--site", "north",
                "--display-name", "Mrs Jones", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    password = next(line.split(": ", 1)[1] for line in out.splitlines()
                    if line.startswith("password: "))
    app = create_app(data / "vigil.db", data, public_url="https://testserver",
                     allowed_hosts=["testserver"])
    with TestClient(app, base_url="https://testserver") as c:
        assert login(c, "mrs.jones", password).status_code == 303
        assert "Mrs Jones" in c.get("/queue").text
    row = audit_rows(data / "vigil.db", "user.create")[0]
    assert row["actor"].startswith("cli:") and row["target"] == "user:mrs.jones"
    assert password not in row["detail"]


def test_user_create_password_stdin_and_errors(data, capsys, monkeypatch):
    assert run(["user", "create", "--username", "tech", "--role", "technician", "--site",
                "north", "--password-stdin", "--data-dir", str(data)], monkeypatch,
               "a long enough password\n") == 0
    assert "password:" not in capsys.readouterr().out
    assert run(["user", "create", "--username", "tech", "--role", "technician", "--site",
                "north", "--data-dir", str(data)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert run(["user", "create", "--username", "x", "--role", "dsl", "--site", "nowhere",
                "--data-dir", str(data)]) == 2
    assert "'nowhere' does not exist" in capsys.readouterr().err
    assert run(["user", "create", "--username", "y", "--role", "dsl", "--site", "north",
                "--password-stdin", "--data-dir", str(data)], monkeypatch, "short\n") == 2
    assert "at least 12 characters" in capsys.readouterr().err
    assert run(["user", "create", "--username", "z", "--role", "dsl", "--site", "north",
                "--data-dir", str(data / "missing")]) == 2
    assert "run 'vigil-collector init' first" in capsys.readouterr().err


def test_roster_import_reports_bad_lines_and_imports_the_rest(data, capsys, tmp_path):
    f = tmp_path / "roster.csv"
    f.write_text("username,display name,year group,site\n"
                 "asmith,Alex Smith,Year 9,north\n"
                 "bjones,Bea Jones,12B,north\n"
                 ",No Name,Year 7,north\n"
                 "cgreen,Cat Green,Year 42,north\n"
                 "dlee,Dan Lee,Y3,south\n"
                 "emma,Emma Teacher,Staff,\n"
                 "onlytwo,cells\n", encoding="utf-8")
    assert run(["roster", "import", str(f), "--site", "north", "--data-dir", str(data)]) == 0
    cap = capsys.readouterr()
    assert "imported 3 pupil(s) into north; 4 row(s) rejected" in cap.out
    for line, why in ((4, "username is empty"), (5, "Year 42"), (6, "'south'"),
                      (8, "expected 4 columns")):
        assert f"roster.csv: line {line}: " in cap.err and why in cap.err
    with connect(data / "vigil.db") as conn:
        rows = {r["username"]: r["age_band"] for r in conn.execute("SELECT * FROM pupils")}
    assert rows == {"asmith": "secondary", "bjones": "sixth_form", "emma": "staff"}
    detail = json.loads(audit_rows(data / "vigil.db", "roster.import")[0]["detail"])
    assert detail == {"imported": 3, "rejected": 4, "bad_lines": [4, 5, 6, 8]}


def test_device_room(data, capsys):
    with connect(data / "vigil.db") as conn:
        dev = device(conn, "north", "NH-LAP-009")
    assert run(["device", "room", dev, "Library", "--data-dir", str(data)]) == 0
    with connect(data / "vigil.db") as conn:
        assert conn.execute("SELECT room FROM devices").fetchone()[0] == "Library"
    assert audit_rows(data / "vigil.db", "device.room")[0]["target"] == f"device:{dev}"
    assert run(["device", "room", "nope", "X", "--data-dir", str(data)]) == 2
    assert "is not enrolled" in capsys.readouterr().err


def test_report_weekly_prints_and_emails(data, capsys):
    received: list[str] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope.content.decode())
            return "250 OK"

    port = _free_port()
    ctl = Controller(Handler(), hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        (data / "collector.toml").write_text(f'[smtp]\nhost = "127.0.0.1"\nport = {port}\n')
        with connect(data / "vigil.db") as conn:
            dev = device(conn, "north", "NH-LAP-001")
            seed_capture(conn, site_id="north", device_id=dev, severity=5, category="suicide",
                         time_ms=int(time.time() * 1000) - 3600_000)
        assert run(["report", "weekly", "--site", "north", "--email", "--data-dir",
                    str(data)]) == 0
    finally:
        ctl.stop()
    out = capsys.readouterr().out
    assert "New items this week: 1" in out and "emailed to 1 recipient" in out
    assert len(received) == 1 and "To: dsl@north.example" in received[0]
    assert "New items this week: 1" in received[0] and "pupil1" not in received[0]
    assert audit_rows(data / "vigil.db", "report.weekly")
    assert run(["report", "weekly", "--site", "mars", "--data-dir", str(data)]) == 2


def test_registered_in_vigil_collector(data, capsys):
    from collector.cli import main
    assert main(["device", "room", "nope", "X", "--data-dir", str(data)]) == 2
    assert "is not enrolled" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["roster", "import", "--help"])
    assert "year group or form" in capsys.readouterr().out


def test_report_weekly_email_errors_are_one_line(data, capsys):
    assert run(["report", "weekly", "--site", "north", "--email", "--data-dir", str(data)]) == 2
    assert "set [smtp] host in collector.toml" in capsys.readouterr().err
    port = _free_port()  # nothing listens here
    (data / "collector.toml").write_text(f'[smtp]\nhost = "127.0.0.1"\nport = {port}\n')
    assert run(["report", "weekly", "--site", "north", "--email", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert f"could not send the email via 127.0.0.1:{port}" in err and "Traceback" not in err


def test_user_list_and_reset_password(data, capsys, monkeypatch):
    assert run(["user", "create", "--username", "mrs.jones", "--role", "dsl", "--site", "north",
                "--display-name", "Mrs Jones", "--password-stdin", "--data-dir", str(data)],
               monkeypatch, "the first long password\n") == 0
    capsys.readouterr()
    assert run(["user", "list", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "mrs.jones" in out and "dsl" in out and "north" in out and "Mrs Jones" in out
    assert "argon2" not in out
    app = create_app(data / "vigil.db", data, public_url="https://testserver",
                     allowed_hosts=["testserver"])
    with TestClient(app, base_url="https://testserver") as c:
        assert login(c, "mrs.jones", "the first long password").status_code == 303
        assert c.get("/queue").status_code == 200
        assert run(["user", "reset-password", "mrs.jones", "--data-dir", str(data)]) == 0
        out = capsys.readouterr().out
        assert "1 session(s) logged out" in out
        new = next(line.split(": ", 1)[1] for line in out.splitlines()
                   if line.startswith("password: "))
        # the old session ended with the old password
        assert c.get("/queue", follow_redirects=False).status_code == 303
        assert login(c, "mrs.jones", "the first long password").status_code == 401
        assert login(c, "mrs.jones", new).status_code == 303
    assert run(["user", "reset-password", "nobody", "--password-stdin", "--data-dir",
                str(data)], monkeypatch, "a long enough password\n") == 2
    assert "'nobody' does not exist" in capsys.readouterr().err
    assert run(["user", "reset-password", "mrs.jones", "--password-stdin", "--data-dir",
                str(data)], monkeypatch, "short\n") == 2
    assert "at least 12 characters" in capsys.readouterr().err
    reset = audit_rows(data / "vigil.db", "user.reset_password")
    assert len(reset) == 1 and reset[0]["actor"].startswith("cli:")
    assert new not in reset[0]["detail"]
    assert audit_rows(data / "vigil.db", "user.list")
