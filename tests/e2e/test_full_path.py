"""The whole product, end to end, with every part real.

A pupil types into a real X window (Xvfb + openbox + xterm, keys from ``xdotool type``); the
real ``vigil-agent`` process matches it against the default rule library and streams it over
mutual TLS to a real ``vigil-collector serve``; the collector stores it in SQLite, triages it,
emails the DSL through a real SMTP server (aiosmtpd), and the DSL works it from arrival to
closure in real headless Chromium. Along the way, a sentence that matches nothing is typed too,
and afterwards it is searched for in every file both programs wrote: it must be nowhere.
"""

from __future__ import annotations

import asyncio
import email
import getpass
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from playwright.sync_api import sync_playwright

import rules
from tests.console.support import CHROMIUM, CHROMIUM_ARGS, browser_login
from tests.support.agent import AgentProcess, enroll_cli, write_config
from tests.support.collector import start_collector
from tests.support.x11 import XDesktop, have_x_tools, wait_for

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.x11,
    pytest.mark.browser,
    pytest.mark.skipif(not have_x_tools(), reason="needs Xvfb, openbox, xterm, xdotool"),
]

#: What the pupil types that the DSL must hear about (suicide, severity 5).
CONCERN = "i want to kill myself"
#: A sentence that matches no rule: it must never leave the agent's matcher.
PRIVATE = "the purple giraffe borrowed seventeen umbrellas from grandad on tuesday"
WINDOW = "Homework notes"
PASSWORD = "correct-horse-battery-staple-42"


class SmtpSink:
    """A real SMTP server (aiosmtpd) on 127.0.0.1, port 0, in its own thread."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def __enter__(self) -> SmtpSink:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        self.port = fut.result(10)
        return self

    async def _serve(self) -> int:
        self._server = await self._loop.create_server(lambda: SMTP(self), "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _close(self) -> None:
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


def _collector_cli(data_dir: Path, *args: str, stdin: str = "") -> str:
    r = subprocess.run([sys.executable, "-m", "collector.cli", *args, "--data-dir", str(data_dir)],
                       input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _files_under(*dirs: Path) -> list[Path]:
    return [p for d in dirs for p in d.rglob("*") if p.is_file()]


def dsl_and_token(data_dir: Path) -> str:
    """A DSL login ("dsl", :data:`PASSWORD`) and a one-use token for a year-9 pupil's device."""
    _collector_cli(data_dir, "user", "create", "--username", "dsl", "--role", "dsl",
                   "--site", "default", "--display-name", "Dee Ess-Ell",
                   "--password-stdin", stdin=PASSWORD + "\n")
    return _collector_cli(data_dir, "token", "create", "--site", "default",
                          "--group", "year-9", "--age-band", "secondary").split()[0]


@contextmanager
def enrolled_agent(tmp_path: Path, c: Any, token: str, x: XDesktop) -> Iterator[AgentProcess]:
    """The real agent process, enrolled with ``token``, running until its first heartbeat."""
    agent_dir = tmp_path / "agent"
    enroll_cli(agent_dir, c.enrol_addr, token, c.ca_path, collector=c.stream_addr, env=x.env)
    cfg = write_config(tmp_path / "agent.toml", collector=c.stream_addr)
    with AgentProcess(agent_dir, config_file=cfg, env=x.env) as agent:
        agent.wait_for_log("Vigil agent is running")
        wait_for(lambda: c.query("SELECT 1 FROM devices WHERE last_seen_at IS NOT NULL"),
                 30, what="the agent's first heartbeat")
        yield agent


def test_default_library_rates_the_test_phrases_as_expected() -> None:
    """Guards the test's own premises against library edits."""
    library = rules.load_library(rules.DEFAULT_LIBRARY)
    hits = library.scan(CONCERN, "keys", "secondary")
    assert any(h.rule.category == "suicide" and h.rule.severity == 5 for h in hits), hits
    assert library.scan(PRIVATE, "keys", "secondary") == []


def test_typed_concern_reaches_the_dsl_who_works_it_to_closure(
    tmp_path: Path, smtp: SmtpSink
) -> None:
    c = start_collector(tmp_path, console=True, rules_dir=rules.DEFAULT_LIBRARY,
                        config={"smtp": {"host": "127.0.0.1", "port": smtp.port},
                                "alerts": {"check_seconds": 0.5}})
    agent_dir = tmp_path / "agent"
    try:
        _collector_cli(c.data_dir, "site", "contacts", "--site", "default",
                       "--email", "dsl@school.example", "--email", "deputy@school.example")
        token = dsl_and_token(c.data_dir)
        with XDesktop() as x:
            with enrolled_agent(tmp_path, c, token, x) as agent:
                x.open_xterm(WINDOW)
                x.type_text(PRIVATE)
                x.key("Return")
                x.type_text(CONCERN)
                x.key("Return")

                # 1. stored by the collector, with bounded context and the real window
                rows = wait_for(lambda: c.query(
                    "SELECT match, context, window_title, severity, device_id, os_user"
                    " FROM captures WHERE category = 'suicide'"), 30, what="the capture")
                match, context, title, severity, device_id, os_user = rows[0]
                assert len(rows) == 1
                assert "kill myself" in match and match in CONCERN and severity == 5
                assert CONCERN in context and len(context) <= 120
                assert WINDOW in title
                assert os_user == getpass.getuser()
                (enrolled,) = c.query("SELECT id FROM devices")
                assert device_id == enrolled[0]

                # 2. triaged into the DSL's queue, pinned on top
                (item,) = wait_for(lambda: c.query(
                    "SELECT id, pinned, status FROM queue_items WHERE category = 'suicide'"),
                    20, what="the queue item")
                item_id, pinned, status = item
                assert pinned == 1 and status == "new"

                # 3. the DSL is emailed: a link and the category, never the content
                wait_for(lambda: smtp.messages, 30, what="the alert email")
                alert = smtp.messages[0]
                body = alert.get_payload(decode=True)
                text = (body.decode() if isinstance(body, bytes) else str(alert)) + alert["Subject"]
                assert alert["To"] == "dsl@school.example"
                assert "uicide" in text and f"/captures/{item_id}" in text
                assert CONCERN not in text and "myself" not in text
                agent.stop()
            agent_log = agent.output

        # 4. the DSL works it in a real browser, from the queue to closed
        assert c.console_url
        url = c.console_url.rstrip("/")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            ctx, page = browser_login(browser, url, "dsl", PASSWORD)
            assert page.url.endswith("/queue")
            row = page.locator(f'tr[data-id="{item_id}"]')
            row.wait_for(timeout=20_000)
            assert "PINNED" in row.inner_text().upper()
            page.click(f'tr[data-id="{item_id}"] a')
            page.wait_for_selector("dd.match")
            assert page.locator("dd.match").inner_text() == match
            assert WINDOW in page.locator("dd.title").inner_text()
            # one form: the action, the new status, the reason (severity 5 needs one to close)
            page.select_option("#form-act select[name=action]", "refer_head_of_year")
            page.select_option("#form-act select[name=status]", "closed")
            page.fill("#form-act input[name=reason]", "Referred to head of year; parents called")
            page.fill("#form-act textarea[name=note]", "Spoke to pupil with HoY")
            page.click("#form-act button[type=submit]")
            page.wait_for_selector("#done")
            assert page.locator("#status").inner_text() == "Closed"
            ctx.close()
            browser.close()

        assert c.query("SELECT status FROM queue_items WHERE id = ?", (item_id,)) == [("closed",)]
        actions = {r[0] for r in c.query("SELECT action FROM audit WHERE actor = 'dsl'")}
        assert {"login.ok", "capture.view", "capture.action", "capture.status"} <= actions
    finally:
        c.stop()

    # 5. privacy: the sentence that matched nothing is nowhere the agent or collector wrote
    secret = PRIVATE.encode()
    leaks = [str(p) for p in _files_under(agent_dir, c.data_dir) if secret in p.read_bytes()]
    assert leaks == []
    assert PRIVATE not in agent_log and PRIVATE not in c.log()
    assert "purple giraffe" not in agent_log

