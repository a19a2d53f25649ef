"""``vigil-collector`` sub-commands owned by the console: user, roster, device, report.

Each command is a thin adapter over the console's services (collector/services/).

``register(subparsers)`` adds them; each handler takes the parsed args (with ``data_dir``)
and returns an exit code. Errors are one clear line on stderr and exit code 2. Every action
is audited as ``cli:<os user>``.
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import smtplib
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from collector.config import ConfigError, load_config
from collector.domain.vocabulary import LANGUAGES
from collector.services.accounts import ROLES, AuthError, BadInput, Refused
from collector.services.reports import weekly_text
from collector.services.roster import RosterError

from .db import open_console_store
from .web import Services

__all__ = ["register"]


class CliError(Exception):
    """A user mistake on the command line: printed as one line, exit code 2."""


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


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


@contextmanager
def _services(args: argparse.Namespace) -> Iterator[Services]:
    cfg = _config(args)
    if getattr(args, "store", None):
        cfg.store.url = args.store
    if cfg.store.url and not getattr(args, "db_path", None):
        from collector.store import StoreBusy, open_configured_store

        try:
            store = open_configured_store(cfg, migrate=False)
        except StoreBusy as exc:
            raise CliError(f"cannot open the store: {exc}") from None
    else:
        path = _db_path(args)
        if not path.exists():
            raise CliError(f"{path}: no store here; run 'vigil-collector init' first "
                           "(or pass --data-dir)")
        store = open_console_store(path, path.parent)
    try:
        yield Services(store, time.time)
    finally:
        store.close()


def _wrap(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (CliError, AuthError, RosterError, ConfigError, BadInput) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except Refused as e:
            print(f"error: {e.reason}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"error: {e.filename or ''} {e.strerror or e}".strip(), file=sys.stderr)
            return 2
    run.__name__ = fn.__name__
    return run


def _password(args: argparse.Namespace) -> tuple[str, bool]:
    """(password, generated): the first line of stdin with --password-stdin, else a new one."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n"), False
    return secrets.token_urlsafe(15), True


def _user_create(args: argparse.Namespace) -> int:
    password, generated = _password(args)
    with _services(args) as svc:
        user = svc.accounts.create_user(
            actor=_actor(), username=args.username, role=args.role, sites=args.site,
            password=password, display_name=args.display_name or "", email=args.email or "")
    print(f"created {user.role} {user.username} for {', '.join(user.sites)}")
    if generated:
        print(f"password: {password}")
        print("Give it to the user privately; it is not shown again.")
    return 0


def _user_list(args: argparse.Namespace) -> int:
    with _services(args) as svc:
        users = svc.accounts.list_users(actor=_actor())
    if not users:
        print("no console accounts yet; add one with 'vigil-collector user create'")
        return 0
    width = max(len(u["username"]) for u in users)
    for u in users:
        state = "  (disabled)" if u["disabled"] else ""
        print(f"{u['username']:<{width}}  {u['role']:<11}  {','.join(u['sites']):<16}  "
              f"{u['display_name']}{state}")
    return 0


def _user_reset_password(args: argparse.Namespace) -> int:
    password, generated = _password(args)
    with _services(args) as svc:
        ended = svc.accounts.reset_password(actor=_actor(), username=args.username,
                                            password=password)
    print(f"new password set for {args.username}; {ended} session(s) logged out")
    if generated:
        print(f"password: {password}")
        print("Give it to the user privately; it is not shown again.")
    return 0


def _user_approver(args: argparse.Namespace) -> int:
    with _services(args) as svc:
        svc.accounts.set_second_approver(actor=_actor(), username=args.username,
                                         on=args.on)
    state = "is now" if args.on else "is no longer"
    print(f"{args.username} {state} a four-eyes second approver for their site(s)")
    return 0


def _language_code(text: str) -> str:
    if text not in LANGUAGES:
        raise argparse.ArgumentTypeError(f"{text!r}: use one of {', '.join(LANGUAGES)}")
    return text


def _user_language(args: argparse.Namespace) -> int:
    with _services(args) as svc:
        svc.accounts.set_language(actor=_actor(), username=args.username,
                                  language=args.language)
    print(f"{args.username} now reads the console in {LANGUAGES[args.language]}")
    return 0


def _roster_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise CliError(f"{path}: not UTF-8 text ({e.reason}); save the CSV as UTF-8") from None
    with _services(args) as svc:
        result = svc.roster.import_roster(text, args.site, actor=_actor(), source=path.name)
    for err in result.errors:
        print(f"{path}: {err}", file=sys.stderr)
    print(f"imported {len(result.rows)} pupil(s) into {args.site}; "
          f"{len(result.errors)} row(s) rejected")
    return 1 if result.errors and not result.rows else 0


def _device_room(args: argparse.Namespace) -> int:
    with _services(args) as svc:
        try:
            hostname = svc.roster.set_room(args.device_id, args.room, actor=_actor())
        except Refused:
            raise CliError(f"device {args.device_id!r} is not enrolled; "
                           "see 'vigil-collector devices' for ids") from None
    print(f"{hostname} ({args.device_id}) is now in room {args.room!r}")
    return 0


def _report_weekly(args: argparse.Namespace) -> int:
    cfg = _config(args)
    public_url = str(getattr(cfg.server, "public_url", "") or "")
    sent = 0
    with _services(args) as svc:
        reports = svc.reports
        try:
            if args.email:
                text, sent = reports.email_weekly(args.site, cfg.smtp, actor=_actor(),
                                                  recipients=args.to, public_url=public_url)
            else:
                text = weekly_text(reports.weekly_summary(args.site), public_url)
                svc.audit.record(_actor(), "report.weekly", "", args.site, emailed_to=0)
        except BadInput as e:
            raise CliError(f"--site {args.site!r} does not exist" if "does not exist" in str(e)
                           else str(e)) from None
        except (OSError, smtplib.SMTPException) as e:
            raise CliError(f"could not send the email via {cfg.smtp.host}:"
                           f"{cfg.smtp.port}: {e}") from None
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
    parser.add_argument("--store", metavar="URL", help="the store: postgresql://user@host/db; "
                        "default: config store.url, else the SQLite file in the data dir")
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
    lst = usub.add_parser("list", help="list console accounts",
                          description="List every console account: username, role, sites "
                          "and name (never a password). Audited.")
    _common(lst)
    lst.set_defaults(**_handler(_user_list))
    reset = usub.add_parser("reset-password", help="give an account a new password",
                            description="Set a new password for an account and log out all "
                            "of its sessions. Prints a generated password unless one is given "
                            "on standard input. Audited.")
    reset.add_argument("username", help="log-in name")
    reset.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of standard input")
    _common(reset)
    reset.set_defaults(**_handler(_user_reset_password))
    appr = usub.add_parser("approver", help="name a four-eyes second approver",
                           description="Name (--on) or stop naming (--off) an account as the "
                           "second person who may approve four-eyes unlock requests at its "
                           "sites: for a school with one DSL, its headteacher (a governor "
                           "account) or the trust DSL (a trust_admin account). Audited.")
    appr.add_argument("username", help="log-in name")
    onoff = appr.add_mutually_exclusive_group(required=True)
    onoff.add_argument("--on", dest="on", action="store_true", help="name them")
    onoff.add_argument("--off", dest="on", action="store_false", help="stop naming them")
    _common(appr)
    appr.set_defaults(**_handler(_user_approver))
    lang = usub.add_parser("language", help="set the language an account reads the console in",
                           description="Set the console language of an account: cy (Cymraeg) "
                           "or en (English). The user can also switch it at the foot of every "
                           "console page. Audited.")
    lang.add_argument("username", help="log-in name")
    lang.add_argument("language", type=_language_code, metavar="|".join(LANGUAGES),
                      help="cy (Cymraeg) or en (English)")
    _common(lang)
    lang.set_defaults(**_handler(_user_language))

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
