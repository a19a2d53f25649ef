"""Four-eyes that a small school can use (issue 14): the approver gets a link (notification
list, and email through a real SMTP server on loopback), approves or declines with a reason;
request, approval, decline and expiry are in the item's history; the requester is told; the
unlock's expiry is shown; a one-DSL school names its headteacher or the trust DSL as the
second person; a DSL records "referred to police" alone, without an unlock."""

from __future__ import annotations

import asyncio
import email
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from collector.config import SmtpConfig
from collector.services.accounts import AccountsService, AuthError

from .conftest import csrf_of, login, post
from .support import audit_rows, seed_capture, user


@dataclass
class Inbox:
    """A real SMTP server (aiosmtpd) on 127.0.0.1, port 0, in its own thread and loop."""

    port: int = 0
    messages: list[tuple[list[str], Message]] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else b""
        with self.arrived:
            self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(raw)))
            self.arrived.notify_all()
        return "250 OK"

    def wait(self, n: int, timeout: float = 20) -> list[tuple[list[str], Message]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.messages) >= n, timeout), \
                f"{len(self.messages)} of {n} emails arrived"
            return list(self.messages)

    def smtp(self) -> SmtpConfig:
        return SmtpConfig(host="127.0.0.1", port=self.port, sender="vigil@north.example")


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(loop.create_server(lambda: SMTP(box), "127.0.0.1", 0))
        holder["server"] = server
        box.port = server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()

    t = threading.Thread(target=serve, daemon=True, name="smtp-inbox")
    t.start()
    assert ready.wait(10)
    yield box
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


def _restricted(world: Any, site: str = "north") -> int:
    dev = world.devices["it1" if site == "north" else "south"]
    return seed_capture(world.store, site_id=site, device_id=dev, category="csam", severity=5,
                        rule_id="csam.terms", match="(withheld)", context="(withheld)",
                        window_title="(withheld)")


def _client(app: Any, username: str) -> Any:
    from starlette.testclient import TestClient

    c = TestClient(app, base_url="https://testserver")
    c.__enter__()
    assert login(c, username).status_code == 303
    return c


def test_request_then_decline_with_reason_is_told_and_in_the_history(world, inbox):
    app = world.make_app(smtp=inbox.smtp())
    qid = _restricted(world)
    dsl, deputy = _client(app, "dsl1"), _client(app, "deputy1")
    try:
        r = post(dsl, f"/captures/{qid}/unlock", {"reason": "preparing police referral"},
                 f"/captures/{qid}")
        assert r.status_code == 303
        # the approver's email: a link, no content
        (to, msg), = inbox.wait(1)
        assert to == ["deputy1@school.example"]
        body = msg.get_payload(decode=True).decode()  # type: ignore[union-attr]
        uid = int(body.split("/approvals/")[1].split()[0])
        assert f"https://testserver/approvals/{uid}" in body and "withheld" not in body
        # ... and the notification list, with a badge on every page
        page = deputy.get("/queue").text
        assert 'id="notice-badge"' in page
        notes = deputy.get("/notifications").text
        assert f'href="/approvals/{uid}"' in notes and "preparing police referral" in notes
        assert 'id="notice-badge"' not in deputy.get("/queue").text  # seen now

        # the requester cannot decide their own request
        own = dsl.get(f"/approvals/{uid}")
        assert own.status_code == 200 and 'id="form-decline"' not in own.text
        r = post(dsl, f"/approvals/{uid}/decline", {"reason": "no"}, "/approvals")
        assert r.status_code == 403
        # a decline needs a reason
        r = post(deputy, f"/approvals/{uid}/decline", {"reason": "  "}, f"/approvals/{uid}")
        assert r.status_code == 400 and "reason" in r.text
        r = post(deputy, f"/approvals/{uid}/decline",
                 {"reason": "Ring the LADO first, then ask again"}, f"/approvals/{uid}")
        assert r.status_code == 303
        assert "Declined by deputy1" in deputy.get(f"/approvals/{uid}").text
        # once decided, it cannot be approved
        assert post(deputy, f"/approvals/{uid}/approve", {}, "/approvals").status_code == 400

        # the requester is told (email and notification list) and reads the reason
        (to2, msg2) = inbox.wait(2)[1]
        assert to2 == ["dsl1@school.example"] and "declined" in str(msg2["Subject"])
        notes = dsl.get("/notifications").text
        assert "declined your four-eyes request" in notes
        assert "Ring the LADO first, then ask again" in notes
        # request and decline are in the item's history; the request form is back
        page = dsl.get(f"/captures/{qid}").text
        history = page.split('id="four-eyes-history"')[1].split("</ul>")[0]
        assert "asked to open the metadata" in history and "preparing police referral" in history
        assert "Four-eyes: declined" in history and "Ring the LADO first" in history
        assert f'action="/captures/{qid}/unlock"' in page
    finally:
        dsl.__exit__(None, None, None)
        deputy.__exit__(None, None, None)
    actions = [r["action"] for r in audit_rows(world.store) if r["action"].startswith("unlock.")]
    assert actions == ["unlock.request", "unlock.email", "unlock.decline", "unlock.email"]


def test_approval_shows_the_expiry_and_the_expiry_enters_the_history(world, client_for):
    qid = _restricted(world)
    dsl, deputy = client_for("dsl1"), client_for("deputy1")
    post(dsl, f"/captures/{qid}/unlock", {"reason": "police referral"}, f"/captures/{qid}")
    uid = int(deputy.get("/approvals").text.split('href="/approvals/')[1].split('"')[0])
    assert post(deputy, f"/approvals/{uid}/approve", {}, f"/approvals/{uid}").status_code == 303
    assert "access until" in deputy.get(f"/approvals/{uid}").text
    assert "approved your four-eyes request" in dsl.get("/notifications").text
    page = dsl.get(f"/captures/{qid}").text
    assert 'id="unlock-until"' in page and 'id="pupil"' in page
    history = page.split('id="history"')[1].split("</ul>")[0]
    assert "asked to open the metadata" in history and "Four-eyes: approved" in history
    for _ in range(3):  # past the hour (sessions idle out after 30 minutes: keep it alive)
        world.clock.now += 1201
        page = dsl.get(f"/captures/{qid}").text
    assert 'id="pupil"' not in page  # locked again
    history = page.split('id="four-eyes-history"')[1].split("</ul>")[0]
    assert "unlock expired" in history


def test_a_one_dsl_school_names_its_headteacher_as_second_person(world, client_for):
    user(world.store, "head", "governor", ["north"], "Mrs Head")
    qid = _restricted(world)
    dsl = client_for("dsl1")
    post(dsl, f"/captures/{qid}/unlock", {"reason": "police referral"}, f"/captures/{qid}")
    head = client_for("head")
    assert head.get("/approvals").status_code == 403  # not named yet
    accounts = AccountsService(world.store, world.clock)
    with pytest.raises(AuthError, match="second approvers"):
        accounts.set_second_approver(actor="cli:root", username="tech1", on=True)
    accounts.set_second_approver(actor="cli:root", username="head", on=True)
    page = head.get("/approvals").text
    uid = int(page.split('href="/approvals/')[1].split('"')[0])
    assert head.get(f"/captures/{qid}").status_code == 403  # approving never shows content
    assert post(head, f"/approvals/{uid}/approve", {}, f"/approvals/{uid}").status_code == 303
    assert 'id="pupil"' in dsl.get(f"/captures/{qid}").text
    assert [r["actor"] for r in audit_rows(world.store, "unlock.approve")] == ["head"]
    assert audit_rows(world.store, "user.second_approver")[0]["target"] == "user:head"


def test_the_trust_dsl_approves_when_named_and_not_another_schools_request(world, client_for):
    qid = _restricted(world, "south")  # South Academy has one DSL
    south = client_for("dslsouth")
    post(south, f"/captures/{qid}/unlock", {"reason": "police"}, f"/captures/{qid}")
    AccountsService(world.store, world.clock).set_second_approver(
        actor="cli:root", username="trust1", on=True)
    trust = client_for("trust1")
    uid = int(trust.get("/approvals").text.split('href="/approvals/')[1].split('"')[0])
    assert client_for("dsl1").get(f"/approvals/{uid}").status_code == 404  # north's DSL
    assert post(trust, f"/approvals/{uid}/approve", {}, f"/approvals/{uid}").status_code == 303


def test_a_dsl_records_referred_to_police_alone_but_nothing_else(world, client_for):
    qid = _restricted(world)
    dsl = client_for("dsl1")
    page = dsl.get(f"/captures/{qid}").text
    assert 'id="form-police"' in page and 'id="pupil"' not in page
    r = post(dsl, f"/captures/{qid}/act", {"op": "action", "value": "refer_police",
                                            "note": "Ref 12/3456"}, f"/captures/{qid}")
    assert r.status_code == 303
    page = dsl.get(f"/captures/{qid}").text
    assert "Referred to police" in page.split('id="four-eyes-history"')[1]
    assert "withheld" not in page.replace("withheld by design", "")
    r = post(dsl, f"/captures/{qid}/act", {"op": "action", "value": "refer_head_of_year"},
             f"/captures/{qid}")
    assert r.status_code == 403
    r = post(dsl, f"/captures/{qid}/act", {"op": "note", "note": "x"}, f"/captures/{qid}")
    assert r.status_code == 403
    acts = [r["action"] for r in audit_rows(world.store, "capture.action")]
    assert acts == ["capture.action"]


def test_an_unknown_or_foreign_request_is_not_found(world, client_for):
    deputy = client_for("deputy1")
    assert deputy.get("/approvals/999999").status_code == 404
    assert deputy.get("/approvals/99999999999999999999999").status_code in (404,)
    token = csrf_of(deputy.get("/approvals").text)
    r = deputy.post("/approvals/999999/decline", data={"csrf": token, "reason": "x"},
                    follow_redirects=False)
    assert r.status_code == 404


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_cli_names_a_second_approver(world, capsys):
    """``vigil-collector user approver NAME --on|--off`` (the CLI works on the SQLite file)."""
    import argparse

    from collector.console.cli import register

    user(world.store, "head", "governor", ["north"], "Mrs Head")

    def run(*argv: str) -> int:
        parser = argparse.ArgumentParser(prog="vigil-collector")
        register(parser.add_subparsers(dest="cmd", required=True))
        args = parser.parse_args([*argv, "--data-dir", str(world.data_dir)])
        return int(args.fn(args))

    assert run("user", "approver", "head", "--on") == 0
    assert "is now a four-eyes second approver" in capsys.readouterr().out
    assert world.store.db.scalar("SELECT second_approver FROM users WHERE username = 'head'") == 1
    assert run("user", "approver", "tech1", "--on") == 2
    assert "second approvers" in capsys.readouterr().err
    assert run("user", "approver", "head", "--off") == 0
    assert world.store.db.scalar("SELECT second_approver FROM users WHERE username = 'head'") == 0
