"""``vigil-collector``: set up, run and administer the collector.

Every command that changes something is written to the audit log as ``cli:<os user>``.
Errors are one clear line on stderr and exit status 2. ``--help`` shows ``_DESCRIPTION``,
which is plain text: this docstring's markup would show literally in a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "not_found", "parse_duration"]

_DUR = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE_BANDS = ("primary", "secondary", "sixth_form", "staff")
#: Shown by ``vigil-collector --help``: plain text, as a terminal shows it.
_DESCRIPTION = """\
Set up, run and administer the Vigil collector.

Every command works on one data dir: --data-dir DIR, else $VIGIL_COLLECTOR_DATA_DIR, else the
user data dir. scripts/quickstart writes an env file that sets it to the demo's collector.
Every command that changes something is written to the audit log as cli:<os user>.
Errors are one clear line on stderr and exit status 2."""


class CliError(Exception):
    """Shown to the user as one line, exit status 2."""


def parse_duration(text: str) -> int:
    """'3d' -> seconds. Units: s, m, h, d, w."""
    m = _DUR.match(text.strip().lower())
    if not m:
        raise CliError(f"duration {text!r} must look like 30m, 12h, 3d or 2w")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _s(text: str) -> str:
    """Terminal-safe: control characters from stored data are shown escaped."""
    from collector.validate import safe_text

    return safe_text(text)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli:unknown"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _cfg(args: argparse.Namespace) -> Any:
    from collector.config import load_config

    cfg = load_config(Path(args.config) if getattr(args, "config", None) else None,
                      Path(args.data_dir) if args.data_dir else None)
    if getattr(args, "store", None):
        cfg.store.url = args.store
    return cfg


def _where(args: argparse.Namespace) -> str:
    """How the data dir was chosen, for "not found" messages."""
    from collector.config import DATA_DIR_ENV

    if getattr(args, "data_dir", None):
        return "given by --data-dir"
    if os.environ.get(DATA_DIR_ENV):
        return f"from ${DATA_DIR_ENV}"
    return f"the default: no --data-dir and ${DATA_DIR_ENV} is not set"


def not_found(args: argparse.Namespace, data_dir: Path, missing: Path) -> str:
    """Where we looked, why there, and what to do."""
    from collector.config import DATA_DIR_ENV

    text = (f"no collector data dir at {data_dir} ({_where(args)}; {missing} does not "
            f"exist). Name the collector's data dir with --data-dir DIR or ${DATA_DIR_ENV}; "
            f"to make a new one, run `vigil-collector init --data-dir {data_dir}`")
    demo = Path.cwd() / ".vigil-demo" / "env"
    if demo.is_file() and not os.environ.get(DATA_DIR_ENV):
        text += f". For the quickstart demo, first run: . {demo}"
    return text


def _require_data_dir(args: argparse.Namespace) -> None:
    """Every command but init needs a data dir that ``init`` made: its CA or its store."""
    cfg = _cfg(args)
    if not (cfg.db_path.exists() or (cfg.data_dir / "pki" / "ca.pem").exists()):
        raise CliError(not_found(args, cfg.data_dir, cfg.db_path))


def _store(args: argparse.Namespace) -> Any:
    from collector.config import ConfigError
    from collector.store import StoreBusy, open_configured_store

    cfg = _cfg(args)
    if not cfg.store.url and not cfg.db_path.exists():
        raise CliError(not_found(args, cfg.data_dir, cfg.db_path))
    try:
        return cfg, open_configured_store(cfg)
    except (ConfigError, StoreBusy) as exc:
        raise CliError(f"cannot open the store: {exc}") from None


def _estate(store: Any) -> Any:
    from collector.services.estate import EstateService

    return EstateService(store, _now_ms)


# -- commands ----------------------------------------------------------------------------------
def cmd_init(args: argparse.Namespace) -> int:
    from collector.services.audit import AuditLog
    from collector.services.rules import ensure_signing_key, has_published, publish
    from collector.store import open_configured_store
    from collector.store.screenshots import ensure_key
    from collector.tls import ensure_pki

    cfg = _cfg(args)
    d: Path = cfg.data_dir
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    _, pki_new = ensure_pki(d, list(args.hostname or []), args.site_name)
    key_new = ensure_signing_key(d)
    ensure_key(d)
    store = open_configured_store(cfg)
    try:
        now = _now_ms()
        estate = _estate(store)
        site_new = estate.add_site(_actor(), args.site_id, args.site_name)
        if args.dsl_email:
            estate.set_contacts(_actor(), args.site_id, args.dsl_email, None)
        published = None
        if not has_published(store):
            import rules

            lib = Path(args.rules) if args.rules else rules.DEFAULT_LIBRARY
            published = publish(store, d, lib, _actor(), now,
                                note="default library" if not args.rules else str(lib),
                                model=_model_choice(args),
                                keep_models=cfg.retention.model_artefacts)
        AuditLog(store, time.time).record(
            _actor(), "collector.init", str(d), args.site_id, pki_created=pki_new,
            signing_key_created=key_new, site_created=site_new,
            rules_published=published.version.version if published else None)
    finally:
        store.close()
    print(f"data dir: {d}")
    print(f"CA certificate (give to agents): {d / 'pki' / 'ca.pem'}")
    print(f"site: {args.site_id}" + (" (created)" if site_new else " (exists)"))
    if published:
        print(f"rules: published default library as version {published.version.version}; "
              f"{_model_text(published.model)}")
    return 0


def _model_choice(args: argparse.Namespace) -> Any:
    if args.no_model:
        return "none"
    return Path(args.model) if args.model else "current"


def _model_text(model: Any) -> str:
    if model is None:
        return "no model"
    return f"model {_s(model.name)} {_s(model.version)} ({model.digest[:12]}, {model.size} bytes)"


def cmd_serve(args: argparse.Namespace) -> int:
    from collector.server import CollectorServer

    cfg = _cfg(args)
    for flag, attr in (("listen", "listen"), ("enroll_listen", "enroll_listen"),
                       ("console_listen", "console_listen"), ("public_url", "public_url")):
        value = getattr(args, flag)
        if value:
            setattr(cfg.server, attr, value)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> None:
        server = CollectorServer(cfg, console=not args.no_console)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            listeners = await server.start()
            for name in ("stream", "enrol", "console"):
                if name in listeners:
                    print(f"{name}: {listeners[name]}", flush=True)
            print("ready", flush=True)
            await stop.wait()
        finally:
            await server.stop()

    asyncio.run(run())
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    _, store = _store(args)
    try:
        estate = _estate(store)
        if args.token_cmd == "create":  # noqa: S105
            if args.uses < 1:
                raise CliError("--uses must be at least 1")
            tok, secret = estate.create_token(_actor(), args.site, args.group, args.uses,
                                              parse_duration(args.expires) * 1000,
                                              args.age_band)
            if args.json:
                print(json.dumps({"id": tok.id, "token": secret, "expires_at": tok.expires_at}))
            else:
                print(secret)
                print(f"(id {tok.id}; {args.uses} use(s); expires in {args.expires})",
                      file=sys.stderr)
        elif args.token_cmd == "revoke":  # noqa: S105
            estate.revoke_token(_actor(), args.id)
            print(f"revoked {args.id}")
        else:
            for ts in estate.tokens(_actor()):
                t = ts.token
                print(f"{t.id}\t{_s(t.site_id)}\t{_s(t.group_name)}\t{t.uses}/{t.max_uses}"
                      f"\t{ts.state}")
    finally:
        store.close()
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    from collector.services import rules as rules_admin

    cfg, store = _store(args)
    try:
        keep = cfg.retention.model_artefacts
        if args.rules_cmd == "publish":
            pub = rules_admin.publish(store, cfg.data_dir, Path(args.dir), _actor(), _now_ms(),
                                      args.note or "", _model_choice(args), keep)
            rv = pub.version
            print(f"published version {rv.version} ({rv.content_hash[:12]}) with "
                  f"{_model_text(pub.model)}; running collectors push it within "
                  f"{cfg.server.rules_poll_seconds:g} s")
            shipped = rules_admin.shipped_model()
            if shipped is not None and not args.model and not args.no_model:
                from rules.artefact import artefact_digest

                if pub.model is None or artefact_digest(shipped)[0] != pub.model.digest:
                    print(f"note: this install ships a different model; publish with "
                          f"--model {shipped} to roll it out")
        elif args.rules_cmd == "rollback":
            pub = rules_admin.rollback(store, cfg.data_dir, _actor(), _now_ms(), keep)
            print(f"rolled back: version {pub.version.version} now active "
                  f"({pub.version.note}) with {_model_text(pub.model)}")
        else:
            for v in rules_admin.versions(store, _actor(), _now_ms()):
                mark = "*" if v.active else " "
                when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(v.created_at / 1000))
                print(f"{mark} v{v.version}\t{v.content_hash[:12]}\t{when}Z\t"
                      f"{_s(v.published_by)}\t{_s(v.note)}")
    finally:
        store.close()
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    _, store = _store(args)
    try:
        estate = _estate(store)
        if args.revoke:
            estate.revoke_device(_actor(), args.revoke)
            print(f"revoked {args.revoke}")
            return 0
        silent = parse_duration(args.silent) * 1000 if args.silent else None
        devices = estate.devices(_actor(), silent)
        if args.json:
            print(json.dumps([d.__dict__ for d in devices], indent=2))
            return 0
        print("device\tsite\tgroup\thostname\tagent\trules\tspool\tdrops\tlast seen")
        for d in devices:
            seen = (time.strftime("%Y-%m-%d %H:%M", time.gmtime(d.last_seen_at / 1000)) + "Z"
                    if d.last_seen_at else "never")
            drops = ",".join(f"{_s(k)}={v}" for k, v in sorted(d.drops.items())) or "0"
            print(f"{d.id}\t{_s(d.site_id)}\t{_s(d.group_name)}\t{_s(d.hostname)}\t"
                  f"{_s(d.agent_version) or '-'}"
                  f"\tv{d.rules_version}\t{d.spool_depth}\t{drops}\t{seen}"
                  + ("\tREVOKED" if d.revoked_at else ""))
    finally:
        store.close()
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    from collector.services.retention import policy_from, purge

    cfg, store = _store(args)
    try:
        report = purge(store, policy_from(cfg.retention), _actor(), dry_run=args.dry_run)
    finally:
        store.close()
    verb = "would purge" if args.dry_run else "purged"
    print(f"{verb}: {report.queue_items} queue items, {report.captures} captures, "
          f"{report.screenshots} screenshots, {report.audit_rows} audit rows")
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    _, store = _store(args)
    try:
        estate = _estate(store)
        if args.site_cmd == "add":
            created = estate.add_site(_actor(), args.site, args.name, wales=args.wales)
            print(f"site {args.site} " + ("created" if created else "already exists")
                  + (" (Welsh school: its lead is the DSP)" if created and args.wales else ""))
            if not created and args.wales:
                print(f"to make it a Welsh school: vigil-collector site wales {args.site} --on")
        elif args.site_cmd == "wales":
            estate.set_wales(_actor(), args.site, args.on)
            print(f"{args.site}: " + ("a Welsh school; its lead is named the Designated "
                                      "Safeguarding Person (DSP)" if args.on else
                                      "not a Welsh school; its lead is named the DSL"))
        else:
            estate.set_contacts(_actor(), args.site, args.email or [], args.webhook)
            print(f"{args.site}: {len(args.email or [])} DSL contact(s), in escalation order")
    finally:
        store.close()
    return 0


def cmd_exempt(args: argparse.Namespace) -> int:
    _, store = _store(args)
    try:
        estate = _estate(store)
        if args.exempt_cmd == "add":
            kind, eid = estate.add_exemption(
                _actor(), args.site, args.reason or "", group=args.group, rule_id=args.rule,
                category=args.category,
                ttl_ms=parse_duration(args.until) * 1000 if args.until else None)
            print(f"{kind} {eid} added")
        else:
            estate.remove_exemption(_actor(), args.id)
            print(f"removed {args.id}")
    finally:
        store.close()
    return 0


# -- parser ------------------------------------------------------------------------------------
def _model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", metavar="DIR", help="scorer artefact folder the bundle names "
                   "(default: the active bundle's model, else the one shipped with Vigil)")
    g.add_argument("--no-model", action="store_true", help="publish a bundle naming no model")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="collector data dir (default: "
                        "$VIGIL_COLLECTOR_DATA_DIR, else the user data dir, "
                        "~/.local/share/vigil-collector on Linux)")
    common.add_argument("--config", help="TOML config file (default: <data dir>/collector.toml)")
    common.add_argument("--store", metavar="URL", help="the store: postgresql://user@host/db "
                        "(several collectors may share it); default: config store.url, else "
                        "the SQLite file in the data dir")
    p = argparse.ArgumentParser(prog="vigil-collector", description=_DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    s = sub.add_parser("init", parents=[common], help="create the data dir, CA, keys and store")
    s.add_argument("--site-id", default="default", help="site slug (default: default)")
    s.add_argument("--site-name", default="Default school", help="site display name")
    s.add_argument("--hostname", action="append", help="extra server cert name (repeatable)")
    s.add_argument("--dsl-email", action="append", help="DSL contact, in escalation order")
    s.add_argument("--rules", help="rule folder to publish as version 1 (default: the "
                   "default library)")
    _model_flags(s)
    s.set_defaults(fn=cmd_init)

    s = sub.add_parser("serve", parents=[common], help="run the gRPC ports and the console")
    s.add_argument("--listen", help="mTLS stream HOST:PORT (default 0.0.0.0:7443)")
    s.add_argument("--enroll-listen", help="TLS enrolment HOST:PORT (default 0.0.0.0:7444)")
    s.add_argument("--console-listen", help="console HOST:PORT (default 127.0.0.1:8443)")
    s.add_argument("--public-url", help="console base URL used in alert emails")
    s.add_argument("--no-console", action="store_true", help="serve gRPC only")
    s.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("token", help="enrolment tokens")
    tsub = s.add_subparsers(dest="token_cmd", required=True, metavar="ACTION")
    t = tsub.add_parser("create", parents=[common], help="create a token (printed once)")
    t.add_argument("--site", required=True, help="site slug")
    t.add_argument("--group", required=True, help="device group, e.g. year-9")
    t.add_argument("--age-band", choices=_AGE_BANDS, help="age band for a new group")
    t.add_argument("--uses", type=int, default=1, help="how many devices may use it (1)")
    t.add_argument("--expires", default="7d", help="lifetime, e.g. 12h, 7d (7d)")
    t.add_argument("--json", action="store_true", help="print id and token as JSON")
    t = tsub.add_parser("revoke", parents=[common], help="revoke a token by id")
    t.add_argument("id", help="token id (see: vigil-collector token list)")
    tsub.add_parser("list", parents=[common], help="list tokens (never the secrets)")
    s.set_defaults(fn=cmd_token)

    s = sub.add_parser("rules", help="publish, roll back and list rule versions")
    rsub = s.add_subparsers(dest="rules_cmd", required=True, metavar="ACTION")
    r = rsub.add_parser("publish", parents=[common], help="validate, sign and publish DIR")
    r.add_argument("dir", help="folder of *.toml rule files")
    r.add_argument("--note", help="why (shown by: vigil-collector rules list)")
    _model_flags(r)
    rsub.add_parser("rollback", parents=[common], help="go back one version")
    rsub.add_parser("list", parents=[common], help="list versions (* = active)")
    s.set_defaults(fn=cmd_rules)

    s = sub.add_parser("devices", parents=[common], help="list devices and their health")
    s.add_argument("--silent", help="only devices not heard from in this long, e.g. 3d")
    s.add_argument("--revoke", metavar="ID", help="revoke a device (its stream is refused)")
    s.add_argument("--json", action="store_true", help="JSON output")
    s.set_defaults(fn=cmd_devices)

    s = sub.add_parser("purge", parents=[common], help="apply the retention policy now")
    s.add_argument("--dry-run", action="store_true", help="count only; delete nothing")
    s.set_defaults(fn=cmd_purge)

    s = sub.add_parser("site", help="sites and their DSL contacts")
    ssub = s.add_subparsers(dest="site_cmd", required=True, metavar="ACTION")
    x = ssub.add_parser("add", parents=[common], help="add a site")
    x.add_argument("--site", required=True, help="site slug")
    x.add_argument("--name", required=True, help="display name")
    x.add_argument("--wales", action="store_true",
                   help="a Welsh school: name its lead the DSP (Keeping Learners Safe)")
    x = ssub.add_parser("wales", parents=[common],
                        help="mark a site a Welsh school (--on) or not (--off)")
    x.add_argument("site", help="site slug")
    onoff = x.add_mutually_exclusive_group(required=True)
    onoff.add_argument("--on", dest="on", action="store_true",
                       help="a Welsh school: its lead is the Designated Safeguarding Person")
    onoff.add_argument("--off", dest="on", action="store_false",
                       help="not a Welsh school: its lead is the DSL")
    x = ssub.add_parser("contacts", parents=[common], help="set DSL alert contacts")
    x.add_argument("--site", required=True, help="site slug")
    x.add_argument("--email", action="append", help="contact email, in escalation order")
    x.add_argument("--webhook", help="optional webhook URL (JSON POST, no capture content)")
    s.set_defaults(fn=cmd_site)

    s = sub.add_parser("exempt", help="exclusions and time-boxed exemptions (audited)")
    esub = s.add_subparsers(dest="exempt_cmd", required=True, metavar="ACTION")
    e = esub.add_parser("add", parents=[common], help="add one (needs --reason)")
    e.add_argument("--site", required=True, help="site slug")
    e.add_argument("--group", help="only this device group")
    e.add_argument("--rule", help="rule id")
    e.add_argument("--category", help="category id")
    e.add_argument("--reason", required=True, help="written reason (audited)")
    e.add_argument("--until", help="time-box, e.g. 7d (without it: a standing exclusion)")
    e = esub.add_parser("remove", parents=[common], help="remove one")
    e.add_argument("id", type=int, help="exemption id")
    s.set_defaults(fn=cmd_exempt)

    try:
        console_cli = importlib.import_module("collector.console.cli")
    except ImportError:
        console_cli = None
    if console_cli is not None and hasattr(console_cli, "register"):
        console_cli.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from collector.config import ConfigError
    from collector.server import ServerError
    from collector.services.rules import RulesAdminError
    from collector.store.base import StoreError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        import rules

        rule_errors: tuple[type[Exception], ...] = (rules.RuleError, rules.BundleError)
    except ImportError:
        rule_errors = ()
    handled: tuple[type[Exception], ...] = (CliError, ConfigError, RulesAdminError, ServerError,
                                            StoreError, ValueError, *rule_errors)
    try:
        if args.cmd != "init":
            _require_data_dir(args)
        return int(args.fn(args) or 0)
    except handled as exc:
        text = "\n".join(_s(line) for line in str(exc).splitlines())
        print(f"vigil-collector: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
