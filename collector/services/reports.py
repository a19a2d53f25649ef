"""The weekly DSL summary and the governors' annual report (counts only, never names).

The annual report is seen by governors, so small numbers are withheld and cannot be worked
out from what is shown. Each table (by month, category, severity, outcome) adds up to the
year's total, so withholding only the 1s and 2s would let anyone subtract: complementary
suppression (:func:`suppress`) withholds more cells until no withheld count can be recovered
exactly from the total and the shown cells.
"""

from __future__ import annotations

import datetime as dt
import itertools
import smtplib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from collector.domain.vocabulary import (
    CLOSED_STATUSES,
    STATUS_LABELS,
    STATUSES,
    category_label,
    known_categories,
)
from collector.services._text import fmt_time, show_bidi
from collector.services.accounts import CONTENT_ROLES, AccountsService, BadInput, Refused, User
from collector.services.audit import AuditLog
from collector.store.repos.console import ConsoleRepos

__all__ = ["MIN_SHOWN", "SILENT_MS", "AnnualReport", "Cell", "ReportsService", "WeeklySummary",
           "send_email", "suppress", "suppress_grid", "weekly_text", "withheld"]

WEEK_MS = 7 * 24 * 3600 * 1000
SILENT_MS = 3 * 24 * 3600 * 1000
#: Counts from 1 to MIN_SHOWN - 1 are withheld in the annual report.
MIN_SHOWN = 3
YEARS = range(2000, 9999)

#: A count as shown: an int, or None for "withheld".
Cell = int | None


@dataclass
class WeeklySummary:
    site_id: str
    site_name: str
    start: str
    end: str
    by_category: list[tuple[str, Cell]] = field(default_factory=list)
    by_severity: list[tuple[int, Cell]] = field(default_factory=list)
    by_status: list[tuple[str, Cell]] = field(default_factory=list)
    new_items: Cell = 0
    open_items: Cell = 0
    pinned_open: Cell = 0
    silent_devices: list[dict[str, Any]] = field(default_factory=list)
    #: False: small counts are withheld (None), as on the trust and governors' pages
    exact: bool = True


@dataclass
class AnnualReport:
    site_names: list[str]
    year: int
    total: Cell
    months: list[tuple[str, Cell]]
    by_category: list[tuple[str, Cell]]
    by_severity: list[tuple[int, Cell]]
    by_status: list[tuple[str, Cell]]
    previous_total: Cell
    false_positive_rate: float | None
    devices: int


def suppress(values: Sequence[int]) -> list[Cell]:
    """Withhold small counts so none can be worked out from the table's total.

    Primary: every count from 1 to MIN_SHOWN - 1. Complementary: while exactly one cell is
    withheld, or the withheld cells add up to no more than their number (each would then be
    known to be 1), the smallest shown non-zero count is withheld too. When none is left,
    the zeros are withheld as well, so a withheld cell may be anything from 0 to the sum.
    """
    hidden = {i for i, v in enumerate(values) if 0 < v < MIN_SHOWN}

    def exposed() -> bool:
        return len(hidden) == 1 or sum(values[i] for i in hidden) <= len(hidden)

    while hidden and exposed():
        shown = [i for i, v in enumerate(values) if i not in hidden and v > 0]
        if not shown:
            hidden |= {i for i, v in enumerate(values) if v == 0}
            break
        hidden.add(min(shown, key=lambda i: (values[i], i)))
    return [None if i in hidden else v for i, v in enumerate(values)]


def _protect(values: Sequence[int], hidden: set[int]) -> set[int]:
    """One row or column of :func:`suppress_grid`: :func:`suppress`'s rule, starting from
    the cells other lines withheld. A withheld zero may be a zero: the line is exposed only
    when one withheld cell holds the whole withheld sum (one cell withheld, and it is not 0),
    or when no zero is withheld and the sum is no more than the withheld cells (all 1s)."""
    hidden = set(hidden) | {i for i, v in enumerate(values) if 0 < v < MIN_SHOWN}

    def exposed() -> bool:
        total = sum(values[i] for i in hidden)
        if total == 0:
            return False  # only zeros withheld: nothing about a pupil can be learnt
        zeros = any(values[i] == 0 for i in hidden)
        return len(hidden) == 1 or (not zeros and total <= len(hidden))

    while hidden and exposed():
        shown = [i for i, v in enumerate(values) if i not in hidden and v > 0]
        if not shown:
            hidden |= {i for i, v in enumerate(values) if v == 0}
            break
        hidden.add(min(shown, key=lambda i: (values[i], i)))
    return hidden


def suppress_grid(rows: Sequence[Sequence[int]]) -> list[list[Cell]]:
    """:func:`suppress` for a table of counts whose row totals AND column totals may both
    be known (a chart of weeks by category: each week's total, each category's total): the
    rule is applied to every row and every column until nothing more is withheld."""
    n_cols = max((len(r) for r in rows), default=0)
    grid = [list(r) + [0] * (n_cols - len(r)) for r in rows]
    hidden: set[tuple[int, int]] = set()
    changed = True
    while changed:
        changed = False
        lines = [[(r, c) for c in range(n_cols)] for r in range(len(grid))]
        lines += [[(r, c) for r in range(len(grid))] for c in range(n_cols)]
        for line in lines:
            values = [grid[r][c] for r, c in line]
            got = _protect(values, {i for i, rc in enumerate(line) if rc in hidden})
            new = {line[i] for i in got} - hidden
            if new:
                hidden |= new
                changed = True
    return [[None if (r, c) in hidden else v for c, v in enumerate(row)]
            for r, row in enumerate(grid)]


def _suppressed_pairs(pairs: Sequence[tuple[Any, int]]) -> list[tuple[Any, Cell]]:
    cells = suppress([n for _, n in pairs])
    return [(label, cell) for (label, _), cell in zip(pairs, cells, strict=True)]


def _full(pairs: Sequence[tuple[Any, int]], rows: Sequence[Any]) -> list[tuple[Any, int]]:
    """Counts for every row in ``rows`` order (missing ones are 0; unknown ones follow)."""
    got = dict(pairs)
    return [(r, int(got.pop(r, 0))) for r in rows] + sorted(got.items(), key=lambda p: str(p[0]))


def withheld(s: WeeklySummary) -> WeeklySummary:
    """*s* with the small-number rule applied: each table by :func:`suppress` (it adds up
    to the new items), the new-items total too when it is small, and the open counts."""
    def ints(pairs: Sequence[tuple[Any, Cell]]) -> list[tuple[Any, int]]:
        return [(k, int(v or 0)) for k, v in pairs]

    return WeeklySummary(
        s.site_id, s.site_name, s.start, s.end,
        by_category=_suppressed_pairs(ints(s.by_category)),
        by_severity=_suppressed_pairs(ints(s.by_severity)),
        by_status=_suppressed_pairs(ints(s.by_status)),
        new_items=_small(int(s.new_items or 0)), open_items=_small(int(s.open_items or 0)),
        pinned_open=_small(int(s.pinned_open or 0)), silent_devices=s.silent_devices,
        exact=False)


def _small(n: int) -> Cell:
    return None if 0 < n < MIN_SHOWN else n


def _year_bounds(y: int) -> tuple[int, int]:
    a = dt.datetime(y, 1, 1, tzinfo=dt.UTC)
    b = dt.datetime(y + 1, 1, 1, tzinfo=dt.UTC)
    return int(a.timestamp() * 1000), int(b.timestamp() * 1000)


def _month_bounds(y: int) -> list[tuple[int, int]]:
    edges = [dt.datetime(y, m, 1, tzinfo=dt.UTC) for m in range(1, 13)]
    edges.append(dt.datetime(y + 1, 1, 1, tzinfo=dt.UTC))
    ms = [int(e.timestamp() * 1000) for e in edges]
    return list(itertools.pairwise(ms))


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
    return show_bidi("\n".join(lines) + "\n")


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


class ReportsService:
    def __init__(self, store: ConsoleRepos, clock: Callable[[], float],
                 accounts: AccountsService, audit: AuditLog) -> None:
        self.store = store
        self.clock = clock
        self.accounts = accounts
        self.audit = audit

    def _now(self) -> int:
        return int(self.clock() * 1000)

    # -- weekly ---------------------------------------------------------------------------
    def weekly_site(self, user: User, site: str = "") -> str:
        """The site a user's weekly summary is for: ``site`` if theirs, else their first."""
        self.accounts.require(user, "weekly")
        sites = self.accounts.sites_of(user)
        chosen = site or (sites[0] if sites else "")
        if chosen not in sites:
            raise Refused(404, "site not yours", chosen or None)
        return chosen

    def weekly_for(self, user: User, site: str) -> WeeklySummary:
        """The weekly summary of one of the user's sites, as this user may see it: exact
        for the school's DSL and deputies; with small counts withheld for everyone else who
        may read it (a trust lead, the DPO), as on the trust dashboard, so that the weekly
        page does not give away what the dashboards withhold."""
        summary = self.weekly_summary(self.weekly_site(user, site))
        return summary if user.role in CONTENT_ROLES else withheld(summary)

    def weekly_summary(self, site_id: str) -> WeeklySummary:
        """Counts of the last 7 days of one site (for a DSL, or the CLI and schedule)."""
        now = self._now()
        start = now - WEEK_MS
        profile = self.store.site_profile(site_id)
        if profile is None:
            raise BadInput(f"site {site_id!r} does not exist")
        s = WeeklySummary(site_id, str(profile["name"]), fmt_time(start), fmt_time(now))
        sites = [site_id]
        by_category = [(category_label(v), int(n))
                       for v, n in self.store.items_by("category", sites, start, now)]
        s.by_category = list(by_category)
        s.by_severity = sorted(self.store.items_by("severity", sites, start, now),
                               key=lambda p: -int(p[0]))
        s.by_status = [(STATUS_LABELS.get(v, v), n)
                       for v, n in self.store.items_by("status", sites, start, now)]
        s.new_items = sum(n for _, n in by_category)
        s.open_items, s.pinned_open = self.store.open_items(site_id)
        for r in self.store.silent_devices(site_id, now - SILENT_MS):
            s.silent_devices.append({"hostname": r["hostname"], "room": r["room"] or "",
                                     "last_seen": fmt_time(r["last_seen_at"]) or "never"})
        return s

    def email_weekly(self, site_id: str, smtp: Any, *, actor: str,
                     recipients: list[str] | None = None,
                     public_url: str = "") -> tuple[str, int]:
        """Build the weekly summary and email it (``smtp`` is collector.config.SmtpConfig).

        Recipients default to the site's DSL contacts. Returns (text, number of recipients).
        Raises BadInput naming what is missing. Audited."""
        profile = self.store.site_profile(site_id)
        if profile is None:
            raise BadInput(f"site {site_id!r} does not exist")
        to = list(recipients or profile["dsl_contacts"])
        if not to:
            raise BadInput(f"site {site_id!r} has no DSL contacts; add some or pass --to")
        if not smtp.host:
            raise BadInput("no SMTP server: set [smtp] host in collector.toml")
        summary = self.weekly_summary(site_id)
        text = weekly_text(summary, public_url)
        send_email(text, f"Vigil weekly summary: {summary.site_name}", smtp.sender, to,
                   smtp.host, smtp.port, starttls=smtp.starttls, username=smtp.username,
                   password=smtp.password)
        self.audit.record(actor, "report.weekly", "", site_id, emailed_to=len(to))
        return text, len(to)

    # -- annual (governors) ---------------------------------------------------------------
    def parse_year(self, text: str | None) -> int:
        """A year from a query string (default: this year); BadInput names the field."""
        if text is None or text == "":
            return dt.datetime.fromtimestamp(self._now() / 1000, dt.UTC).year
        text = text.strip()
        if not (text.isdigit() and len(text) <= 4) or int(text) not in YEARS:
            raise BadInput(f"year: give a year from {YEARS.start} to {YEARS.stop - 1}, "
                           "such as 2026")
        return int(text)

    def annual(self, user: User, site: str, year: int) -> AnnualReport:
        """The governors' report for the user's sites (or one of them), with small numbers
        withheld so that no pupil can be recognised."""
        self.accounts.require(user, "annual")
        if year not in YEARS:
            raise BadInput(f"year: give a year from {YEARS.start} to {YEARS.stop - 1}")
        sites = self.accounts.scope(user, site)
        lo, hi = _year_bounds(year)
        months = self.store.items_per_period(sites, _month_bounds(year)) if sites else [0] * 12
        # every table lists all its rows, zeros included, so that suppress() can withhold a
        # zero too (otherwise three withheld rows adding up to 3 would each be known to be 1)
        cats = _full(self.store.items_by("category", sites, lo, hi) if sites else [],
                     known_categories())
        sevs = _full(self.store.items_by("severity", sites, lo, hi) if sites else [],
                     list(range(5, 0, -1)))
        status = _full(self.store.items_by("status", sites, lo, hi) if sites else [],
                       list(STATUSES))
        status_cells = _suppressed_pairs(status)
        # the false-positive rate would tell a withheld outcome: shown only if none is withheld
        rate_shown = all(cell is not None for st, cell in status_cells if st in CLOSED_STATUSES)
        n_reviewed = sum(n for st, n in status if st in CLOSED_STATUSES)
        fps = sum(n for st, n in status if st == "false_positive")
        plo, phi = _year_bounds(year - 1)
        return AnnualReport(
            site_names=self.store.site_names(sites) if sites else [], year=year,
            total=_small(sum(months)),
            months=[(dt.date(year, m, 1).strftime("%b"), cell)
                    for m, cell in enumerate(suppress(months), start=1)],
            by_category=[(category_label(c), cell) for c, cell in _suppressed_pairs(cats)],
            by_severity=_suppressed_pairs(sevs),
            by_status=[(STATUS_LABELS.get(st, st), cell) for st, cell in status_cells],
            previous_total=_small(self.store.items_count(sites, plo, phi) if sites else 0),
            false_positive_rate=(fps / n_reviewed) if n_reviewed and rate_shown else None,
            devices=self.store.active_devices(sites) if sites else 0,
        )
