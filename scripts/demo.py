"""Helpers for scripts/quickstart's demo; not part of Vigil itself.

    python scripts/demo.py mailsink --maildir DIR [--listen 127.0.0.1:0]
    python scripts/demo.py capture [--timeout SECONDS]     (scripts/demo-capture runs this)

``mailsink`` is the demo's SMTP server: it accepts mail on loopback only and writes every
message, unsent anywhere, into a Maildir (one file per message in DIR/new/), so the DSL's
urgent-alert email can be read without a mail account. It prints ``smtp: HOST:PORT`` and then
``ready``. It uses aiosmtpd, the same SMTP server the alert tests use.

``capture`` makes a severity-5 test capture through the real path: it opens a window on the
display the demo agent watches, titled with a phrase from the default library's
``suicide.intent`` rule, and waits until the alert email is in the demo's Maildir. It reads
VIGIL_DEMO_DISPLAY and VIGIL_DEMO_MAIL from the demo's env file (scripts/demo-capture sources it).
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

#: The window title: "end it all" is a severity-5 phrase of the default library.
TITLE = "Vigil demo test capture: I am going to end it all"


async def _serve(maildir: Path, listen: str) -> None:
    from aiosmtpd.handlers import Mailbox
    from aiosmtpd.smtp import SMTP

    host, _, port = listen.rpartition(":")
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise SystemExit(f"demo.py mailsink: {listen}: the sink listens on loopback only")
    for sub in ("tmp", "new", "cur"):  # mailbox.Maildir makes them only in a new folder
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    handler = Mailbox(str(maildir))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname="vigil-demo"),
                                      host, int(port))
    bound = server.sockets[0].getsockname()
    print(f"smtp: {bound[0]}:{bound[1]}", flush=True)
    print("ready", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


def _messages(maildir: Path) -> set[Path]:
    return {p for sub in ("new", "cur") if (maildir / sub).is_dir()
            for p in (maildir / sub).iterdir() if p.is_file()}


def _open_window(display_name: str) -> tuple[Any, Any]:
    from Xlib import X, display

    d = display.Display(display_name)
    screen = d.screen()
    win = screen.root.create_window(80, 80, 640, 120, 1, screen.root_depth,
                                    background_pixel=screen.white_pixel,
                                    event_mask=X.StructureNotifyMask)
    win.set_wm_name(TITLE)
    win.change_property(d.intern_atom("_NET_WM_NAME"), d.intern_atom("UTF8_STRING"), 8,
                        TITLE.encode())
    win.set_wm_class("vigil-demo-capture", "VigilDemoCapture")
    win.map()
    d.flush()
    return d, win


def _capture(timeout: float) -> int:
    display_name = os.environ.get("VIGIL_DEMO_DISPLAY", "")
    mail = os.environ.get("VIGIL_DEMO_MAIL", "")
    if not display_name or not mail:
        print("demo-capture: VIGIL_DEMO_DISPLAY and VIGIL_DEMO_MAIL are not set: start the "
              "demo with scripts/quickstart, then run scripts/demo-capture", file=sys.stderr)
        return 2
    maildir = Path(mail)
    before = _messages(maildir)
    try:
        d, win = _open_window(display_name)
    except Exception as exc:  # Xlib raises its own error types for a display that is gone
        print(f"demo-capture: cannot open a window on {display_name} ({exc}); is the demo "
              "still running?", file=sys.stderr)
        return 1
    print(f"opened a window titled {TITLE!r} on display {display_name}; the agent there "
          "should capture it (severity 5, suicide.intent)")
    print(f"waiting up to {timeout:g} s for the alert email in {maildir / 'new'} ...",
          flush=True)
    deadline = time.monotonic() + timeout
    try:
        while not (_messages(maildir) - before):
            if time.monotonic() > deadline:
                print("demo-capture: no new alert email. A capture like this one within the "
                      "last 60 minutes joins the same queue item, which was emailed already "
                      "(the console shows its count going up). Otherwise see "
                      "`vigil-agent status` and the demo's collector.log.", file=sys.stderr)
                return 1
            time.sleep(0.2)
    finally:
        win.destroy()
        d.close()
    for path in sorted(_messages(maildir) - before):
        with open(path, "rb") as fh:
            msg = email.message_from_binary_file(fh, policy=email.policy.default)
        print(f"alert email to {msg['To']}: {msg['Subject']}")
        print(f"  read it: less {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="demo.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mailsink", help="run the demo's loopback SMTP server into a Maildir")
    m.add_argument("--maildir", required=True, type=Path, help="Maildir to write mail into")
    m.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0)")
    c = sub.add_parser("capture", help="make a severity-5 test capture in the running demo")
    c.add_argument("--timeout", type=float, default=60.0,
                   help="how long to wait for the alert email (default 60 s)")
    args = p.parse_args(argv)
    if args.cmd == "mailsink":
        asyncio.run(_serve(args.maildir, args.listen))
        return 0
    return _capture(args.timeout)


if __name__ == "__main__":
    sys.exit(main())
