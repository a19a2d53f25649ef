"""``vigil-agent``: enroll, run, status, install-check. The only place logging is set up.

Errors go to stderr as one clear message and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
from pathlib import Path

from . import __version__
from .config import Config, ConfigError, load_config
from .enrol import EnrolError, enroll
from .paths import DATA_DIR_ENV, DataDir

__all__ = ["main"]


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vigil-agent",
        description="Vigil safeguarding agent. It runs visibly in your desktop session and "
                    "watches window titles, typed phrases (matched in memory, never stored) "
                    "and removable media against the school's rules.")
    p.add_argument("--version", action="version", version=f"vigil-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser, config: bool = True) -> None:
        sp.add_argument("--data-dir", type=Path, help="where the agent keeps its key, "
                        f"certificates, rules and spool (default: ${DATA_DIR_ENV}, else the "
                        "user data dir, ~/.local/share/vigil-agent on Linux)")
        if config:
            sp.add_argument("--config", type=Path, help="TOML config file ([agent] table)")

    e = sub.add_parser("enroll", help="enrol this device with a collector using a token",
                       description="Make a device key here and exchange a one-time token "
                       "for a device certificate.")
    e.add_argument("--server", required=True, help="enrolment address HOST:PORT")
    e.add_argument("--token", required=True, help="one-time enrolment token")
    e.add_argument("--ca", required=True, type=Path, help="the collector's CA certificate")
    e.add_argument("--collector", default="", help="stream address HOST:PORT (default: "
                   "same host, enrolment port - 1)")
    e.add_argument("--machine", action="store_true", help="enrol the device once for every "
                   "user (run as root/SYSTEM by the installers): the identity goes into the "
                   "machine-wide device folder (or --data-dir)")
    common(e, config=False)

    r = sub.add_parser("run", help="run the agent in this desktop session",
                       description="Watch, match, spool and stream captures until stopped.")
    common(r)
    r.add_argument("--collector", help="stream address HOST:PORT (overrides enrolment)")
    r.add_argument("--verbose", action="store_true", help="log debug messages")

    s = sub.add_parser("status", help="show what is monitored and the spool state",
                       description="Read-only: works while the agent is running.")
    common(s)

    c = sub.add_parser("install-check", help="check display, keyboard, media and enrolment",
                       description="Check this machine can run the agent: the desktop "
                       "session's display and keyboard (when run inside one), removable media, "
                       "and the enrolment and agent in the data dir.")
    common(c)
    return p


def _where(args: argparse.Namespace, data: DataDir) -> str:
    """How the data dir was chosen, for "not found" messages."""
    if args.data_dir:
        return "given by --data-dir"
    if os.environ.get(DATA_DIR_ENV):
        return f"from ${DATA_DIR_ENV}"
    if data.shared_identity:
        return "this user's session folder of the machine-wide install"
    return f"the default: no --data-dir and ${DATA_DIR_ENV} is not set"


def _not_found(args: argparse.Namespace, data: DataDir) -> str | None:
    """None when *data* holds an agent (enrolled, or one that has run); else what to do."""
    if data.device_json.exists() or data.state_json.exists() or data.spool.exists():
        return None
    lines = [f"Not found: no agent in {data.root} ({_where(args, data)}).",
             f"To see another agent, pass --data-dir DIR or set {DATA_DIR_ENV}=DIR; "
             "to set one up here, run: vigil-agent enroll --server HOST:PORT --token TOKEN "
             "--ca CA.pem"]
    demo = Path.cwd() / ".vigil-demo" / "env"
    if demo.is_file() and not os.environ.get(DATA_DIR_ENV):
        lines.append(f"For the quickstart demo, first run: . {demo}")
    return "\n".join(lines)


def _setup_logging(data: DataDir, verbose: bool) -> None:
    data.ensure()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    handlers.append(logging.handlers.RotatingFileHandler(
        data.log, maxBytes=1_000_000, backupCount=2, encoding="utf-8"))
    root = logging.getLogger()
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def _run(data: DataDir, config: Config, verbose: bool) -> int:
    from .platform import run_agent
    from .runtime import AgentRuntime

    _setup_logging(data, verbose)
    runtime = AgentRuntime(data, config)

    # On macOS the main thread turns the Cocoa run loop and asyncio runs in a worker.
    run_agent(runtime.run)
    logging.getLogger("agent").warning("Vigil agent stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        data = DataDir.resolve(args.data_dir)
        if args.command == "install-check":
            from .status import install_check

            ok, report = install_check(load_config(args.config), data,
                                       _not_found(args, data))
            print(report)
            return 0 if ok else 1
        if args.command == "enroll" and args.machine:
            from .paths import machine_device_dir

            where = args.data_dir or machine_device_dir()
            data = DataDir(where, where)
        if args.command == "enroll":
            device = enroll(data, args.server, args.token, args.ca, args.collector,
                            machine=args.machine)
            print(f"enrolled as {device.device_id}; collector {device.collector}; "
                  f"identity in {data.identity}")
            return 0
        config = load_config(args.config, {"collector": getattr(args, "collector", None)})
        if args.command == "status":
            from .status import status_report

            print(status_report(data, config))
            missing = _not_found(args, data)
            if missing:
                print(missing)
            return 0
        return _run(data, config, args.verbose)
    except (ConfigError, EnrolError, UsageError) as exc:
        print(f"vigil-agent: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"vigil-agent: error: a required component is missing: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
