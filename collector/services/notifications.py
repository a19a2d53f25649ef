"""The console's notifications: what a user should look at now, in one list with a badge.

For a DSL or deputy DSL: new severity 4-5 items of their sites, items assigned to them, and
four-eyes requests waiting for them (also for a named second approver); for anyone who asked
for a four-eyes unlock: the answer. The badge counts what arrived since the user last opened
the list. Plus the banner every page shows while a site the user works on has no DSL
contacts (urgent email then reaches nobody).

Entries carry no capture content: a category, a severity, a site and a link. ``Mailer`` sends
the four-eyes emails (after the commit, never inside it); its failures are returned, audited
and shown, never raised into the request.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from collector.domain.vocabulary import category_label
from collector.services._text import fmt_time
from collector.services.accounts import CONTENT_ROLES, AccountsService, User
from collector.services.reports import send_email
from collector.store.repos.console import ConsoleRepos

__all__ = ["URGENT_SEVERITY", "Mailer", "Notice", "NotificationsService"]

log = logging.getLogger(__name__)

URGENT_SEVERITY = 4
DECISIONS_SHOWN_MS = 7 * 24 * 3600 * 1000   # a four-eyes answer stays listed this long
UNLOCK_REQUEST_MS = 24 * 3600 * 1000        # (= casework.UNLOCK_REQUEST_MS)
_LIMIT = 100


@dataclass(frozen=True)
class Mailer:
    """Sends plain-text email through the collector's ``[smtp]`` settings (a
    collector.config.SmtpConfig); ``public_url`` is the console's base for links."""

    smtp: Any
    public_url: str

    @property
    def enabled(self) -> bool:
        return bool(getattr(self.smtp, "host", ""))

    def link(self, path: str) -> str:
        return f"{self.public_url.rstrip('/')}{path}"

    def send(self, to: list[str], subject: str, text: str) -> str | None:
        """Send one email; returns None, or the error as text (logged, never raised)."""
        s = self.smtp
        try:
            send_email(text, subject, s.sender, to, s.host, s.port, starttls=s.starttls,
                       username=s.username, password=s.password)
        except (OSError, smtplib.SMTPException) as exc:
            log.error("email to %d recipient(s) failed: %s", len(to), exc)
            return f"{type(exc).__name__}: {exc}"[:300]
        return None


@dataclass(frozen=True)
class Notice:
    """One entry of the notification list; the template words it by ``kind``:
    urgent | assigned | approval | approved | declined."""

    kind: str
    at: int
    time: str
    link: str
    unread: bool
    site_id: str
    item_id: int
    category_label: str = ""
    severity: int = 0
    who: str = ""            # the requester (approval) or the approver (approved/declined)
    reason: str = ""
    until: str = ""          # approved: when the unlock ends


class NotificationsService:
    def __init__(self, store: ConsoleRepos, clock: Callable[[], float],
                 accounts: AccountsService) -> None:
        self.store = store
        self.clock = clock
        self.accounts = accounts

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def notices(self, user: User) -> list[Notice]:
        """Everything for this user, newest first (nothing of another site)."""
        now = self._now()
        seen = self.store.notice_seen(user.username)
        sites = self.accounts.sites_of(user)
        out: list[Notice] = []
        if user.role in CONTENT_ROLES and sites:
            for r in self.store.urgent_new_items(sites, URGENT_SEVERITY, _LIMIT):
                at = int(r["created_at"])
                out.append(Notice("urgent", at, fmt_time(at), f"/captures/{r['id']}",
                                  at > seen, r["site_id"], int(r["id"]),
                                  category_label(r["category"]), int(r["severity"])))
            for r in self.store.assigned_open_items(user.username, sites, _LIMIT):
                at = int(r["updated_at"])
                out.append(Notice("assigned", at, fmt_time(at), f"/captures/{r['id']}",
                                  at > seen, r["site_id"], int(r["id"]),
                                  category_label(r["category"]), int(r["severity"])))
        if user.can("approve") and sites:
            for r in self.store.pending_unlocks(sites, user.username, now - UNLOCK_REQUEST_MS):
                at = int(r["requested_at"])
                out.append(Notice("approval", at, fmt_time(at), f"/approvals/{r['id']}",
                                  at > seen, r["site_id"], int(r["queue_item_id"]),
                                  category_label(r["category"]), who=r["requested_by"],
                                  reason=r["reason"]))
        for r in self.store.decided_unlocks_of(user.username, now - DECISIONS_SHOWN_MS):
            if not user.has_site(r["site_id"]):
                continue
            approved = r["approved_at"] is not None
            at = int(r["approved_at"] if approved else r["declined_at"])
            out.append(Notice("approved" if approved else "declined", at, fmt_time(at),
                              f"/captures/{r['queue_item_id']}", at > seen, r["site_id"],
                              int(r["queue_item_id"]),
                              who=(r["approved_by"] if approved else r["declined_by"]) or "",
                              reason="" if approved else r["decline_reason"],
                              until=fmt_time(r["expires_at"]) if approved else ""))
        out.sort(key=lambda n: (-n.at, n.kind, n.item_id))
        return out

    def badge(self, user: User) -> int:
        """How many notices arrived since the user last opened the list."""
        return sum(1 for n in self.notices(user) if n.unread)

    def mark_seen(self, user: User) -> None:
        self.store.set_notice_seen(user.username, self._now())

    def sites_without_contacts(self, user: User) -> list[dict[str, Any]]:
        """The user's sites with no DSL contacts (the banner on every page)."""
        sites = self.accounts.sites_of(user)
        return self.store.sites_without_contacts(sites) if sites else []
