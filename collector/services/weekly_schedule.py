"""The weekly summary sent by ``serve``: each site's summary to its DSL contacts once a week,
at ``[reports] weekly_day`` / ``weekly_hour`` (school time, ``triage.timezone``).

Once per site and week, however many collectors share the store: only the leader of the
``weekly`` job sends (``store.is_leader``), and each send first claims its (site, ISO week)
row, so a leader that changes mid-week, or a restart after the due time, does not send twice.
A failed send gives its claim back and is retried at the next check; a collector that starts
within a day after the due time still sends that week's summary (later, it waits for the
next week). ``vigil-collector report weekly --email``
(for cron) stays; it does not claim, so use one or the other.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from collector.services.accounts import AccountsService
from collector.services.audit import AuditLog
from collector.services.reports import ReportsService, send_email, weekly_text
from collector.store.repos.console import ConsoleRepos

__all__ = ["CATCH_UP_MS", "DAYS", "WeeklySchedule", "due_week"]

log = logging.getLogger(__name__)

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
Run = Callable[..., Awaitable[Any]]


def _zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


#: How long after the due time a collector that was down (or just installed) still sends that
#: week's summary. Later than this it waits for next week: a school that installs Vigil on a
#: Thursday gets its first summary the next Monday, not a surprise one at once.
CATCH_UP_MS = 24 * 3600 * 1000


def due_week(now_ms: int, day: str, hour: int, timezone: str,
             catch_up_ms: int = CATCH_UP_MS) -> str | None:
    """The ISO week ('2026-W47') whose summary is due at ``now_ms``, or None before this
    week's due time (``day`` at ``hour`` local time) and more than ``catch_up_ms`` after it.
    Raises ValueError for a bad day/hour."""
    if day.lower() not in DAYS:
        raise ValueError(f"reports.weekly_day {day!r}: use one of {', '.join(DAYS)} or \"\"")
    if not 0 <= hour <= 23:
        raise ValueError(f"reports.weekly_hour {hour}: use 0 to 23")
    tz = _zone(timezone)
    now = dt.datetime.fromtimestamp(now_ms / 1000, tz)
    monday = (now - dt.timedelta(days=now.weekday())).date()
    due_date = monday + dt.timedelta(days=DAYS.index(day.lower()))
    due = dt.datetime(due_date.year, due_date.month, due_date.day, hour, tzinfo=tz)
    if now < due or now - due > dt.timedelta(milliseconds=catch_up_ms):
        return None
    year, week, _ = due_date.isocalendar()
    return f"{year}-W{week:02d}"


class WeeklySchedule:
    """``tick()`` sends what is due now; ``run_forever()`` ticks every ``check_seconds``.

    ``store`` has the console repositories; ``leader`` is ``store.is_leader``; ``run`` runs
    a blocking store call off the event loop; ``smtp`` is a collector.config.SmtpConfig."""

    def __init__(self, store: ConsoleRepos, leader: Callable[[str], bool], run: Run,
                 smtp: Any, *, day: str, hour: int, timezone: str, check_seconds: float,
                 public_url: str = "", clock: Callable[[], float] = time.time) -> None:
        if day:
            due_week(0, day, hour, timezone)  # a bad day or hour fails at start, not Monday
        self.store, self.leader, self.run, self.smtp = store, leader, run, smtp
        self.day, self.hour, self.timezone = day, hour, timezone
        self.check_seconds = check_seconds
        self.public_url = public_url
        self.clock = clock
        self.who = f"{socket.gethostname()}:{os.getpid()}"
        self.reports = ReportsService(store, clock, AccountsService(store, clock),
                                      AuditLog(store, clock))
        self.sent = 0
        self._warned = False

    def _now(self) -> int:
        return int(self.clock() * 1000)

    async def tick(self) -> int:
        """Send every site's summary that is due and not yet sent this week; returns how
        many were sent now."""
        if not self.day:
            return 0
        if not self.smtp.host:
            if not self._warned:
                log.warning("weekly summary: no SMTP server ([smtp] host), not emailed")
                self._warned = True
            return 0
        now = self._now()
        week = due_week(now, self.day, self.hour, self.timezone)
        if week is None or not await self.run(self.leader, "weekly"):
            return 0
        sent = 0
        for site_id in await self.run(self.store.sites_with_contacts):
            if not await self.run(self.store.claim_weekly, site_id, week, now, self.who):
                continue  # sent this week already (by this or another collector)
            try:
                sent += await self._send(site_id, week)
            except Exception as exc:
                await self.run(self.store.release_weekly, site_id, week)
                log.error("weekly summary for %s failed (%s); retrying in %.0f s", site_id,
                          exc, self.check_seconds)
                await self.run(partial(self.reports.audit.record, "system",
                                       "report.weekly_failed", "", site_id,
                                       error=f"{type(exc).__name__}: {exc}"[:300], week=week))
        self.sent += sent
        return sent

    async def _send(self, site_id: str, week: str) -> int:
        profile = await self.run(self.store.site_profile, site_id)
        if profile is None or not profile["dsl_contacts"]:
            return 0
        summary = await self.run(self.reports.weekly_summary, site_id)
        text = weekly_text(summary, self.public_url)
        s = self.smtp
        to = list(profile["dsl_contacts"])
        await asyncio.to_thread(send_email, text, f"Vigil weekly summary: {summary.site_name}",
                                s.sender, to, s.host, s.port, starttls=s.starttls,
                                username=s.username, password=s.password)
        now = self._now()
        await self.run(self.store.weekly_sent, site_id, week, now, len(to))
        await self.run(partial(self.reports.audit.record, "system", "report.weekly", "",
                               site_id, emailed_to=len(to), week=week, scheduled=True))
        return 1

    async def run_forever(self) -> None:
        """Tick every ``check_seconds`` until cancelled; a failed check is retried at the
        next one (logged), never ends the loop."""
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("weekly summary check failed; will retry")
            await asyncio.sleep(self.check_seconds)
