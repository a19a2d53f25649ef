"""Alerts to the site's Designated Safeguarding Leads: email (+ optional webhook).

An alert carries NO capture content: only the site, the category, the priority and a link to
the console, because email is not a safe place for the details. A queue item is alerted when
its severity is 5 or its priority reaches ``alerts.min_priority``. If nobody acknowledges it
(acknowledge in the console, or moves it out of ``new``) within ``alerts.ack_minutes``, the
next contact in the site's ordered list is alerted, and so on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from collector.config import AlertsConfig, SmtpConfig
from collector.domain.vocabulary import category_label, lead_title
from collector.store.base import QueueItemRow, SiteRow, Store

__all__ = ["Alerter", "alert_text", "category_label"]

log = logging.getLogger(__name__)
Run = Callable[..., Awaitable[Any]]


def alert_text(site: SiteRow, item: QueueItemRow, link: str, escalated: bool) -> tuple[str, str]:
    """(subject, body) of an alert email. Deliberately content-free."""
    label = category_label(item.category)
    urgent = "URGENT: " if item.severity >= 5 else ""
    again = " (not yet acknowledged)" if escalated else ""
    subject = f"{urgent}Vigil safeguarding alert{again}: {label} at {site.name}"
    lines = [
        f"A safeguarding concern needs the attention of the school's "
        f"{lead_title(site.wales, long=True)}.",
        "",
        f"Site: {site.name}",
        f"Category: {label}",
        f"Priority: {item.priority} (severity {item.severity} of 5)",
    ]
    if item.refer_police:
        lines.append("Routing: refer to police. Do not view or copy the material.")
    lines += [
        "",
        f"Open it in Vigil: {link}",
        "",
        "This email deliberately contains no details of what was typed or seen.",
        "Please acknowledge the alert in Vigil so it is not escalated to the next contact.",
    ]
    return subject, "\n".join(lines) + "\n"


class Alerter:
    def __init__(
        self,
        store: Store,
        run: Run,
        smtp: SmtpConfig,
        cfg: AlertsConfig,
        public_url: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.run, self.smtp, self.cfg = store, run, smtp, cfg
        self.public_url = public_url.rstrip("/")
        self.clock = clock
        self.sent = 0

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def wants(self, item: QueueItemRow) -> bool:
        return item.status == "new" and (
            item.severity >= 5 or item.priority >= self.cfg.min_priority)

    def link(self, item: QueueItemRow) -> str:
        return f"{self.public_url}/captures/{item.id}"  # the console's queue-item page

    async def on_items(self, items: list[QueueItemRow]) -> None:
        """Called by the writer after each commit with the queue items it touched."""
        for item in items:
            if not self.wants(item):
                continue
            if await self.run(self.store.alerts_for_item, item.id):
                continue  # already alerted; escalation takes it from here
            await self.alert(item, 0)

    async def alert(self, item: QueueItemRow, index: int) -> bool:
        site = await self.run(self.store.get_site, item.site_id)
        if site is None or index >= len(site.dsl_contacts):
            if site is not None and index == 0:
                log.error("site %s has no DSL contacts: queue item %d was not emailed "
                          "(set them with `vigil-collector site contacts`)", item.site_id, item.id)
            return False
        contact = site.dsl_contacts[index]
        subject, body = alert_text(site, item, self.link(item), escalated=index > 0)
        error = await self._email(contact, subject, body)
        await self.run(self.store.record_alert, item.id, index, contact, "email", self._now(),
                       error)
        if error is None:
            self.sent += 1
        if index == 0 and site.webhook_url:
            werr = await self._webhook(site.webhook_url, site, item)
            await self.run(self.store.record_alert, item.id, index, site.webhook_url, "webhook",
                           self._now(), werr)
        return error is None

    async def _email(self, to: str, subject: str, body: str) -> str | None:
        if not self.smtp.host:
            log.error("no SMTP server configured ([smtp] host): alert to %s not sent", to)
            return "smtp not configured"
        msg = EmailMessage()
        msg["From"] = self.smtp.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg.set_content(body)
        try:
            await aiosmtplib.send(
                msg, hostname=self.smtp.host, port=self.smtp.port,
                username=self.smtp.username or None, password=self.smtp.password or None,
                start_tls=self.smtp.starttls, timeout=self.smtp.timeout_seconds)
        except Exception as exc:
            log.error("alert email to %s failed: %s", to, exc)
            return f"{type(exc).__name__}: {exc}"[:500]
        return None

    async def _webhook(self, url: str, site: SiteRow, item: QueueItemRow) -> str | None:
        payload = json.dumps({
            "site": site.id, "queue_item_id": item.id, "category": item.category,
            "severity": item.severity, "priority": item.priority, "link": self.link(item),
        }).encode()

        def post() -> None:
            req = urllib.request.Request(url, data=payload,  # noqa: S310 (configured URL)
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=self.cfg.webhook_timeout_seconds):  # noqa: S310
                pass

        try:
            await asyncio.to_thread(post)
        except Exception as exc:
            log.error("alert webhook %s failed: %s", url, exc)
            return f"{type(exc).__name__}: {exc}"[:500]
        return None

    async def check_escalations(self) -> int:
        """Alert the next contact for every item unacknowledged for ``ack_minutes``."""
        now = self._now()
        n = 0
        for item_id in await self.run(self.store.unacknowledged_alerted_items):
            alerts = [a for a in await self.run(self.store.alerts_for_item, item_id)
                      if a.channel == "email"]
            last = max(alerts, key=lambda a: (a.contact_index, a.id))
            if now - (last.sent_at or 0) < self.cfg.ack_minutes * 60_000:
                continue
            item = await self.run(self.store.get_queue_item, item_id)
            if item is None:
                continue
            site = await self.run(self.store.get_site, item.site_id)
            if site is None or last.contact_index + 1 >= len(site.dsl_contacts):
                continue  # everyone has been told
            await self.alert(item, last.contact_index + 1)
            n += 1
        return n

    async def run_escalations(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.check_seconds)
            try:
                # With several collectors on one store, only the leader escalates, so a DSL
                # never gets the same reminder twice.
                if await self.run(self.store.is_leader, "escalations"):
                    await self.check_escalations()
            except Exception:
                log.exception("alert escalation check failed")
