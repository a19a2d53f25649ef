"""``vigil-collector`` sub-commands owned by the console: user, roster, device, report.

``register(subparsers)`` adds them; each handler takes the parsed args (with ``data_dir``)
and returns an exit code. Errors are one clear line on stderr and exit code 2. Every action
is audited as ``cli:<os user>``.
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import smtplib
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collector.config import ConfigError, load_config

from .audit import audit
from .auth import ROLES, AuthError, create_user
from .db import connect, migrate_all
from .reports import email_weekly, weekly_summary, weekly_text
from .roster import RosterError, import_roster

__all__ = ["register"]


class CliError(Exception):
    """A user mistake on the command line: printed as one line, exit code 2."""


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _db_path(args: argparse.Namespace) -> Path:
    explicit = getattr(args, "db_path", None)
    if explicit:
        return Path(explicit)
    return Path(_config(args).db_path)


def _config(args: argparse.Namespace) -> Any:
    data_dir = getattr(args, "data_dir", None)
    config = getattr(args, "config", None)
    return load_config(Path(config) if config else None,
                       data_dir=Path(data_dir) if data_dir else None)


def _open(args: argparse.Namespace) -> sqlite3.Connection:
    path = _db_path(args)
    if not path.exists():
        raise CliError(f"{path}: no store here; run 'vigil-collector init' first "
                       "(or pass --data-dir)")
    migrate_all(path)
    return connect(path)


def _wrap(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (CliError, AuthError, RosterError, ConfigError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"error: {e.filename or ''} {e.strerror or e}".strip(), file=sys.stderr)
            return 2
    run.__name__ = fn.__name__
    return run


def _user_create(args: argparse.Namespace) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        generated = False
    else:
        password = secrets.token_urlsafe(15)
        generated = True
    conn = _open(args)
    try:
        now = _now_ms()
        conn.execute("BEGIN IMMEDIATE")
        try:
            user = create_user(conn, username=args.username, role=args.role, sites=args.site,
                               password=password, now_ms=now,
                               display_name=args.display_name or "", email=args.email or "")
            audit(conn, now, _actor(), "user.create", f"user:{user.username}",
                  user.sites[0] if len(user.sites) == 1 and user.sites[0] != "*" else None,
                  {"role": user.role, "sites": list(user.sites)})
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    print(f"created {user.role} {user.username} for {', '.join(user.sites)}")
    if generated:
        print(f"password: {password}")
        print("Give it to the user privately; it is not shown again.")
    return 0


def _roster_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise CliError(f"{path}: not UTF-8 text ({e.reason}); save the CSV as UTF-8") from None
    conn = _open(args)
    try:
        result = import_roster(conn, text, args.site)
        audit(conn, _now_ms(), _actor(), "roster.import", str(path.name), args.site,
              {"imported": len(result.rows), "rejected": len(result.errors),
               "bad_lines": [e.line for e in result.errors][:200]})
    finally:
        conn.close()
    for err in result.errors:
        print(f"{path}: {err}", file=sys.stderr)
    print(f"imported {len(result.rows)} pupil(s) into {args.site}; "
          f"{len(result.errors)} row(s) rejected")
    return 1 if result.errors and not result.rows else 0


def _device_room(args: argparse.Namespace) -> int:
    conn = _open(args)
    try:
        row = conn.execute("SELECT site_id, hostname FROM devices WHERE id = ?",
                           (args.device_id,)).fetchone()
        if row is None:
            raise CliError(f"device {args.device_id!r} is not enrolled; "
                           "see 'vigil-collector devices' for ids")
        conn.execute("UPDATE devices SET room = ? WHERE id = ?",
                     (args.room or None, args.device_id))
        audit(conn, _now_ms(), _actor(), "device.room", f"device:{args.device_id}", row[0],
              {"room": args.room})
    finally:
        conn.close()
    print(f"{row[1]} ({args.device_id}) is now in room {args.room!r}")
    return 0


def _report_weekly(args: argparse.Namespace) -> int:
    conn = _open(args)
    try:
        if conn.execute("SELECT 1 FROM sites WHERE id = ?", (args.site,)).fetchone() is None:
            raise CliError(f"--site {args.site!r} does not exist")
        cfg = _config(args)
        public_url = str(getattr(cfg.server, "public_url", "") or "")
        sent = 0
        if args.email:
            try:
                text, sent = email_weekly(conn, args.site, _now_ms(), cfg.smtp, args.to,
                                          public_url)
            except ValueError as e:
                raise CliError(str(e)) from None
            except (OSError, smtplib.SMTPException) as e:
                raise CliError(f"could not send the email via {cfg.smtp.host}:"
                               f"{cfg.smtp.port}: {e}") from None
        else:
            text = weekly_text(weekly_summary(conn, args.site, _now_ms()), public_url)
        audit(conn, _now_ms(), _actor(), "report.weekly", "", args.site, {"emailed_to": sent})
    finally:
        conn.close()
    print(text, end="")
    if sent:
        print(f"(emailed to {sent} recipient(s))")
    return 0


def _handler(fn: Callable[[argparse.Namespace], int]) -> dict[str, Any]:
    # collector.cli dispatches on ``fn``; ``func`` is the usual argparse idiom.
    wrapped = _wrap(fn)
    return {"fn": wrapped, "func": wrapped}


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--data-dir", help="collector data dir (default: platformdirs "
                        "user_data_dir('vigil-collector'))")
    parser.add_argument("--config", help="TOML config file (default: <data dir>/collector.toml)")
    return parser


def register(subparsers: Any) -> None:
    """Add the console's sub-commands to ``vigil-collector``'s sub-parsers."""
    user = subparsers.add_parser("user", help="console accounts",
                                 description="Manage console accounts.")
    usub = user.add_subparsers(dest="user_command", required=True, metavar="COMMAND")
    create = usub.add_parser("create", help="create a console account",
                             description="Create a console account. Prints a generated "
                             "password unless one is given on standard input.")
    create.add_argument("--username", required=True, help="log-in name")
    create.add_argument("--role", required=True, choices=ROLES, help="what the user may see")
    create.add_argument("--site", required=True, action="append",
                        help="site id (repeat for a trust admin; '*' = every site)")
    create.add_argument("--display-name", help="name shown in the console")
    create.add_argument("--email", help="email address (for summaries)")
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")
    _common(create)
    create.set_defaults(**_handler(_user_create))

    roster = subparsers.add_parser("roster", help="pupil roster",
                                   description="Manage the pupil roster.")
    rsub = roster.add_subparsers(dest="roster_command", required=True, metavar="COMMAND")
    imp = rsub.add_parser("import", help="import a roster CSV from the MIS",
                          description="Import a CSV with columns: username, display name, "
                          "year group or form, site. Bad rows are reported by line number; "
                          "the rest are imported.")
    imp.add_argument("file", help="CSV file (UTF-8)")
    imp.add_argument("--site", required=True, help="site id the roster belongs to")
    _common(imp)
    imp.set_defaults(**_handler(_roster_import))

    device = subparsers.add_parser("device", help="one device",
                                   description="Change one device's details.")
    dsub = device.add_subparsers(dest="device_command", required=True, metavar="COMMAND")
    room = dsub.add_parser("room", help="assign a device to a room",
                           description="Assign a device to a room (shown to the DSL).")
    room.add_argument("device_id", help="device id")
    room.add_argument("room", help="room name, e.g. 'IT2'; empty string clears it")
    _common(room)
    room.set_defaults(**_handler(_device_room))

    report = subparsers.add_parser("report", help="reports",
                                   description="Produce reports.")
    psub = report.add_subparsers(dest="report_command", required=True, metavar="COMMAND")
    weekly = psub.add_parser("weekly", help="weekly DSL summary",
                             description="Print the weekly DSL summary (counts by category "
                             "and severity, open items, silent devices); --email sends it "
                             "through the [smtp] settings of collector.toml.")
    weekly.add_argument("--site", required=True, help="site id")
    weekly.add_argument("--email", action="store_true",
                        help="email it to the site's DSL contacts")
    weekly.add_argument("--to", action="append", help="recipient instead of the DSL contacts")
    _common(weekly)
    weekly.set_defaults(**_handler(_report_weekly))
