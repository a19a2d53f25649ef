"""Alerts: a real aiosmtpd server on loopback receives them; re-escalation uses a fake clock."""

from __future__ import annotations

import asyncio
import email
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from collector.config import AlertsConfig, SmtpConfig
from collector.services.alerts import Alerter
from collector.services.ingest import ingest
from collector.store.sqlite import SqliteStore, open_store
from tests.collector.store_suite import POLICY, T0, cap
from tests.support.agent_client import AgentClient, make_capture
from tests.support.collector import start_collector


@dataclass
class Inbox:
    port: int
    messages: list[tuple[list[str], Message]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else b""
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(raw)))
        self.arrived.set()
        return "250 OK"

    async def wait(self, n: int, timeout: float = 20) -> None:
        async def _w() -> None:
            while len(self.messages) < n:
                self.arrived.clear()
                await self.arrived.wait()
        await asyncio.wait_for(_w(), timeout)


@pytest.fixture
async def inbox() -> AsyncIterator[Inbox]:
    box = Inbox(0)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(box), "127.0.0.1", 0)
    box.port = server.sockets[0].getsockname()[1]
    yield box
    server.close()
    await server.wait_closed()


class Webhook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []  # noqa: RUF012

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Webhook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    Webhook.received = []
    srv = HTTPServer(("127.0.0.1", 0), Webhook)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/hook"
    srv.shutdown()
    srv.server_close()


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def _run(fn: Any, *args: Any) -> Any:
    return fn(*args)


def _body(msg: Message) -> str:
    payload = msg.get_payload(decode=True)
    return payload.decode() if isinstance(payload, bytes) else str(payload)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = open_store(tmp_path / "vigil.db", tmp_path)
    s.ensure_site("s1", "Northfield High", T0)
    s.ensure_group("s1", "g1", "secondary")
    s.set_site_contacts("s1", ["dsl@school.test", "deputy@school.test", "head@school.test"],
                        None)
    _, secret = s.create_token("s1", "g1", 5, T0 + 10**9, "test", T0)
    s.enrol_device(secret, "d-1", "pc-1", "linux", "1.0", "abc", T0)
    yield s
    s.close()


async def test_severity_five_emails_dsl_without_content_then_escalates(
    store: SqliteStore, inbox: Inbox, webhook: str
) -> None:
    store.set_site_contacts("s1", ["dsl@school.test", "deputy@school.test"], webhook)
    clock = Clock(T0 / 1000)
    alerter = Alerter(store, _run, SmtpConfig(host="127.0.0.1", port=inbox.port),
                      AlertsConfig(ack_minutes=30), "https://vigil.school.test", clock)
    secret_text = cap(1, sev=5)
    secret_text.match, secret_text.context = "SECRET-MATCH", "SECRET-CONTEXT words"
    result = ingest(store, [secret_text], T0, POLICY)
    await alerter.on_items(result.items)
    await inbox.wait(1)
    (to, msg), = inbox.messages
    item_id = result.items[0].id
    assert to == ["dsl@school.test"] and "URGENT" in msg["Subject"]
    body = _body(msg)
    assert f"https://vigil.school.test/captures/{item_id}" in body
    assert "Self-harm" in body or "self_harm" in body
    assert "SECRET" not in body and "SECRET" not in msg["Subject"]
    assert Webhook.received and "SECRET" not in json.dumps(Webhook.received)
    assert Webhook.received[0]["queue_item_id"] == item_id

    await alerter.on_items(result.items)  # the same item again: no duplicate alert
    clock.t += 29 * 60
    assert await alerter.check_escalations() == 0
    clock.t += 2 * 60
    assert await alerter.check_escalations() == 1
    await inbox.wait(2)
    assert inbox.messages[1][0] == ["deputy@school.test"]
    assert "not yet acknowledged" in inbox.messages[1][1]["Subject"]
    clock.t += 31 * 60
    assert await alerter.check_escalations() == 0  # the list is exhausted
    assert [a.contact_index for a in store.alerts_for_item(item_id) if a.channel == "email"] \
        == [0, 1]


async def test_acknowledged_alert_is_not_escalated(store: SqliteStore, inbox: Inbox) -> None:
    clock = Clock(T0 / 1000)
    alerter = Alerter(store, _run, SmtpConfig(host="127.0.0.1", port=inbox.port),
                      AlertsConfig(ack_minutes=30), "https://v", clock)
    result = ingest(store, [cap(1, sev=5)], T0, POLICY)
    await alerter.on_items(result.items)
    await inbox.wait(1)
    store.acknowledge_alerts(result.items[0].id, "dsl1", int(clock.t * 1000))
    clock.t += 60 * 60
    assert await alerter.check_escalations() == 0
    assert len(inbox.messages) == 1


async def test_low_priority_is_not_alerted(store: SqliteStore, inbox: Inbox) -> None:
    alerter = Alerter(store, _run, SmtpConfig(host="127.0.0.1", port=inbox.port),
                      AlertsConfig(min_priority=110), "https://v", Clock(T0 / 1000))
    result = ingest(store, [cap(1, sev=2)], T0, POLICY)
    await alerter.on_items(result.items)
    assert store.alerts_for_item(result.items[0].id) == [] and inbox.messages == []


async def test_end_to_end_agent_capture_emails_the_dsl(tmp_path: Path, inbox: Inbox) -> None:
    c = start_collector(tmp_path, {"smtp": {"host": "127.0.0.1", "port": inbox.port},
                                   "server": {"public_url": "https://vigil.test"}},
                        init_args=("--dsl-email", "dsl@school.test"))
    try:
        a = AgentClient(c.enrol_addr, c.stream_addr, c.ca_pem)
        await a.enrol(c.create_token())
        capture = make_capture(severity=5, match="PRIVATE", context="PRIVATE words")
        async with a.connect() as s:
            await s.send_captures([capture])
            await s.wait_for(lambda s: capture.id in s.acked)
        await inbox.wait(1)
        (to, msg), = inbox.messages
        assert to == ["dsl@school.test"] and "PRIVATE" not in msg.as_string()
        assert "https://vigil.test/captures/" in _body(msg)
    finally:
        c.stop()
