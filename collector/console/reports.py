"""Weekly DSL summary and the governors' annual report (counts only, never names)."""

from __future__ import annotations

import datetime as dt
import smtplib
import sqlite3
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from .labels import STATUSES, category_label, fmt_time

__all__ = ["AnnualReport", "WeeklySummary", "annual_report", "email_weekly", "send_email",
           "weekly_summary", "weekly_text"]

WEEK_MS = 7 * 24 * 3600 * 1000
SILENT_MS = 3 * 24 * 3600 * 1000


@dataclass
class WeeklySummary:
    site_id: str
    site_name: str
    start: str
    end: str
    by_category: list[tuple[str, int]] = field(default_factory=list)
    by_severity: list[tuple[int, int]] = field(default_factory=list)
    by_status: list[tuple[str, int]] = field(default_factory=list)
    new_items: int = 0
    open_items: int = 0
    pinned_open: int = 0
    silent_devices: list[dict[str, Any]] = field(default_factory=list)


def _site_name(conn: sqlite3.Connection, site_id: str) -> str:
    row = conn.execute("SELECT name FROM sites WHERE id = ?", (site_id,)).fetchone()
    return str(row[0]) if row else site_id


def weekly_summary(conn: sqlite3.Connection, site_id: str, now_ms: int) -> WeeklySummary:
    start = now_ms - WEEK_MS
    s = WeeklySummary(site_id, _site_name(conn, site_id), fmt_time(start), fmt_time(now_ms))
    q = "FROM queue_items WHERE site_id = ? AND first_time_ms >= ? AND first_time_ms < ?"
    args = (site_id, start, now_ms)
    s.by_category = [(category_label(r[0]), r[1]) for r in conn.execute(
        f"SELECT category, count(*) {q} GROUP BY category ORDER BY 2 DESC, 1", args)]
    s.by_severity = [(r[0], r[1]) for r in conn.execute(
        f"SELECT severity, count(*) {q} GROUP BY severity ORDER BY 1 DESC", args)]
    s.by_status = [(STATUSES.get(r[0], r[0]), r[1]) for r in conn.execute(
        f"SELECT status, count(*) {q} GROUP BY status ORDER BY 2 DESC", args)]
    s.new_items = sum(n for _, n in s.by_category)
    s.open_items, s.pinned_open = conn.execute(
        "SELECT count(*), coalesce(sum(pinned), 0) FROM queue_items WHERE site_id = ? "
        "AND status IN ('new', 'in_review')", (site_id,)).fetchone()
    for r in conn.execute(
            "SELECT id, hostname, room, last_seen_at FROM devices WHERE site_id = ? "
            "AND revoked_at IS NULL AND (last_seen_at IS NULL OR last_seen_at < ?) "
            "ORDER BY last_seen_at", (site_id, now_ms - SILENT_MS)):
        s.silent_devices.append({"hostname": r["hostname"], "room": r["room"] or "",
                                 "last_seen": fmt_time(r["last_seen_at"]) or "never"})
    return s


def weekly_text(s: WeeklySummary, public_url: str = "") -> str:
    """Plain-text body for the emailed summary (counts only; no pupil names)."""
    lines = [f"Vigil weekly safeguarding summary: {s.site_name}", f"{s.start} to {s.end}", "",
             f"New items this week: {s.new_items}",
             f"Open items (new or in review): {s.open_items}, pinned severity 5: {s.pinned_open}",
             "", "By category:"]
    lines += [f"  {c}: {n}" for c, n in s.by_category] or ["  none"]
    lines += ["", "By severity:"] + ([f"  {sev}: {n}" for sev, n in s.by_severity] or ["  none"])
    lines += ["", f"Silent devices (no contact for 3 days): {len(s.silent_devices)}"]
    lines += [f"  {d['hostname']} {d['room']} last seen {d['last_seen']}"
              for d in s.silent_devices[:50]]
    where = f": {public_url.rstrip('/')}/queue" if public_url else "."
    lines += ["", f"Open the console to review items{where}"]
    return "\n".join(lines) + "\n"


def email_weekly(conn: sqlite3.Connection, site_id: str, now_ms: int, smtp: Any,
                 recipients: list[str] | None = None, public_url: str = "") -> tuple[str, int]:
    """Build the weekly summary and email it (``smtp`` is collector.config.SmtpConfig).

    Recipients default to the site's DSL contacts. Returns (text, number of recipients).
    For a schedule, the collector can call this weekly; the CLI calls it on demand.
    """
    import json
    row = conn.execute("SELECT dsl_contacts FROM sites WHERE id = ?", (site_id,)).fetchone()
    if row is None:
        raise ValueError(f"site {site_id!r} does not exist")
    to = list(recipients or json.loads(row[0] or "[]"))
    if not to:
        raise ValueError(f"site {site_id!r} has no DSL contacts; add some or pass --to")
    if not smtp.host:
        raise ValueError("no SMTP server: set [smtp] host in collector.toml")
    summary = weekly_summary(conn, site_id, now_ms)
    text = weekly_text(summary, public_url)
    send_email(text, f"Vigil weekly summary: {summary.site_name}", smtp.sender, to, smtp.host,
               smtp.port, starttls=smtp.starttls, username=smtp.username,
               password=smtp.password)
    return text, len(to)


def send_email(text: str, subject: str, sender: str, recipients: list[str], host: str,
               port: int, *, starttls: bool = False, username: str = "",
               password: str = "") -> None:
    """Send one plain-text email with smtplib (raises OSError/SMTPException on failure)."""
    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"] = subject, sender, ", ".join(recipients)
    msg.set_content(text)
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        if starttls:
            smtp.starttls()
        if username:
            smtp.login(username, password)
        smtp.send_message(msg)


@dataclass
class AnnualReport:
    site_names: list[str]
    year: int
    total: int
    months: list[tuple[str, int]]
    by_category: list[tuple[str, int]]
    by_severity: list[tuple[int, int]]
    by_status: list[tuple[str, int]]
    previous_total: int
    false_positive_rate: float | None
    devices: int


def annual_report(conn: sqlite3.Connection, sites: list[str], year: int) -> AnnualReport:
    """Anonymised counts and trends for governors: no names, rooms, devices or content."""
    def bounds(y: int) -> tuple[int, int]:
        a = dt.datetime(y, 1, 1, tzinfo=dt.UTC)
        b = dt.datetime(y + 1, 1, 1, tzinfo=dt.UTC)
        return int(a.timestamp() * 1000), int(b.timestamp() * 1000)
    marks = ",".join("?" * len(sites)) or "NULL"
    lo, hi = bounds(year)
    base = (f"FROM queue_items WHERE site_id IN ({marks}) "
            "AND first_time_ms >= ? AND first_time_ms < ?")
    args = [*sites, lo, hi]
    month_counts = dict(conn.execute(
        f"SELECT strftime('%m', first_time_ms / 1000, 'unixepoch'), count(*) {base} GROUP BY 1",
        args).fetchall())
    months = [(dt.date(year, m, 1).strftime("%b"), int(month_counts.get(f"{m:02d}", 0)))
              for m in range(1, 13)]
    by_status = conn.execute(f"SELECT status, count(*) {base} GROUP BY status", args).fetchall()
    reviewed = sum(n for st, n in by_status if st in ("actioned", "closed", "false_positive"))
    fps = sum(n for st, n in by_status if st == "false_positive")
    plo, phi = bounds(year - 1)
    names = [r[0] for r in conn.execute(f"SELECT name FROM sites WHERE id IN ({marks}) "
                                        "ORDER BY name", sites)]
    return AnnualReport(
        site_names=names, year=year, total=sum(n for _, n in months), months=months,
        by_category=[(category_label(r[0]), r[1]) for r in conn.execute(
            f"SELECT category, count(*) {base} GROUP BY category ORDER BY 2 DESC", args)],
        by_severity=[(r[0], r[1]) for r in conn.execute(
            f"SELECT severity, count(*) {base} GROUP BY severity ORDER BY 1 DESC", args)],
        by_status=[(STATUSES.get(st, st), n) for st, n in by_status],
        previous_total=int(conn.execute(base.replace("FROM", "SELECT count(*) FROM", 1),
                                        [*sites, plo, phi]).fetchone()[0]),
        false_positive_rate=(fps / reviewed) if reviewed else None,
        devices=int(conn.execute(f"SELECT count(*) FROM devices WHERE site_id IN ({marks}) "
                                 "AND revoked_at IS NULL", sites).fetchone()[0]),
    )
