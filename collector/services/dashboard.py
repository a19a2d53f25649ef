"""The DSL's and the trust lead's dashboard, and the trust lead's schools side by side.

Counts only, never names. Who sees exact numbers: a DSL or deputy at their own school (they
see every item in the queue anyway). Everyone else (a trust lead) gets the governors'
small-number rule (collector.services.reports.suppress): counts from 1 to MIN_SHOWN - 1 are
withheld, with complementary cells, so that no withheld count can be worked out from a total,
a week's column or a category's row (:func:`~collector.services.reports.suppress_grid`), and
a median time is shown only over at least MIN_SHOWN items.

Restricted items (illegal-imagery categories, or marked refer-to-police) are counted by
category only: they appear in the category chart and in a per-school "restricted open" count,
never by severity, rule, time to first action or false-positive rate.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from collector.domain.vocabulary import ILLEGAL_CATEGORIES, category_label
from collector.services._text import fmt_time
from collector.services.accounts import CONTENT_ROLES, AccountsService, Refused, User
from collector.services.reports import (
    MIN_SHOWN,
    SILENT_MS,
    WEEK_MS,
    Cell,
    suppress,
    suppress_grid,
)
from collector.store.repos.console import ConsoleRepos

__all__ = ["WEEKS", "Dashboard", "DashboardService", "Grid", "RuleRate", "SchoolRow",
           "TrustOverview", "TrustWeekly", "WeekTime"]

WEEKS = 12
SEVERITIES = (5, 4, 3, 2, 1)
#: The trust comparison's time to first action looks at this many recent days.
RECENT_MS = 28 * 24 * 3600 * 1000
_RESTRICTED = sorted(ILLEGAL_CATEGORIES)


@dataclass(frozen=True)
class Grid:
    """Counts per key (rows: a category or a severity) and week (columns); None = withheld."""

    weeks: list[str]                 # column labels, oldest first ("16 Nov")
    keys: list[tuple[str, str]]      # (id, label) of each row
    cells: list[list[Cell]]          # cells[row][week]

    def column(self, week: int) -> list[Cell]:
        return [row[week] for row in self.cells]

    @property
    def empty(self) -> bool:
        return not any(c for row in self.cells for c in row)


@dataclass(frozen=True)
class WeekTime:
    """Time to first action for the items first seen in one week."""

    week: str
    median_hours: float | None       # None: nothing acted on yet, or withheld (too few)
    acted: Cell                      # items with a recorded action
    waiting: Cell                    # items with none yet


@dataclass(frozen=True)
class RuleRate:
    rule: str                        # rule id, or "<category label> (all rules)" if restricted
    category: str
    reviewed: Cell
    false_positives: Cell
    rate: float | None               # FP / reviewed; None when nothing reviewed or withheld


@dataclass(frozen=True)
class Dashboard:
    sites: list[tuple[str, str]]     # (id, name) the chosen scope covers
    choices: list[tuple[str, str]]   # (id, name) the user may pick from
    site: str                        # the chosen site, '' for all of the user's sites
    exact: bool                      # False: the small-number rule applies
    by_category: Grid
    by_severity: Grid
    first_action: list[WeekTime]
    open_sev5: list[tuple[str, Cell]]   # (school name, open severity-5 items)
    fp_rates: list[RuleRate]


@dataclass(frozen=True)
class SchoolRow:
    site_id: str
    name: str
    open_by_severity: list[Cell]     # SEVERITIES order
    restricted_open: Cell            # open restricted items (counted by category only)
    median_first_action_hours: float | None
    silent_devices: int
    never_seen: int
    dsl_contacts: bool
    content: bool                    # the user may open this school's queue (a DSL role)


@dataclass(frozen=True)
class TrustWeekly:
    """The last 7 days across the trust's schools: new items per school and category."""

    start: str
    end: str
    exact: bool
    schools: list[tuple[str, str]]         # (id, name), rows of ``cells``
    categories: list[tuple[str, str]]      # (id, label), columns of ``cells``
    cells: list[list[Cell]]
    new_items: list[Cell]                  # per school
    overview: TrustOverview


@dataclass(frozen=True)
class TrustOverview:
    schools: list[SchoolRow]
    exact: bool
    severities: tuple[int, ...] = SEVERITIES


def _median_hours(delays_ms: Sequence[int]) -> float:
    return round(statistics.median(delays_ms) / 3_600_000, 1)


class DashboardService:
    def __init__(self, store: ConsoleRepos, clock: Callable[[], float],
                 accounts: AccountsService) -> None:
        self.store = store
        self.clock = clock
        self.accounts = accounts

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def exact_for(self, user: User) -> bool:
        """Whether this user sees exact counts (a DSL role at every site in their scope)."""
        return user.role in CONTENT_ROLES and not user.all_sites

    def _week_start(self, now: int) -> int:
        """Monday 00:00 UTC of the week WEEKS - 1 weeks before this one."""
        today = dt.datetime.fromtimestamp(now / 1000, dt.UTC).date()
        monday = today - dt.timedelta(days=today.weekday())
        first = dt.datetime.combine(monday, dt.time(), dt.UTC) - dt.timedelta(weeks=WEEKS - 1)
        return int(first.timestamp() * 1000)

    # -- the dashboard -----------------------------------------------------------------
    def dashboard(self, user: User, site: str = "") -> Dashboard:
        """Charts over the last WEEKS weeks for the user's sites (or one of them)."""
        self.accounts.require(user, "dashboard")
        choices = self.accounts.sites_of(user)
        sites = self.accounts.scope(user, site)
        exact = self.exact_for(user)
        start = self._week_start(self._now())
        labels = [dt.datetime.fromtimestamp((start + i * WEEK_MS) / 1000, dt.UTC)
                  .strftime("%d %b") for i in range(WEEKS)]
        names = self._names(choices)

        def grid(column: str, keys: list[Any], label: Callable[[Any], str],
                 restricted_too: bool) -> Grid:
            counts: dict[tuple[Any, int], int] = {}
            rows: list[tuple[int, Any, int]] = list(self.store.items_per_week(
                column, sites, start, WEEK_MS, WEEKS, _RESTRICTED) if sites else [])
            if restricted_too and sites:
                rows += self.store.items_per_week(column, sites, start, WEEK_MS, WEEKS,
                                                  _RESTRICTED, only_restricted=True)
            for w, v, n in rows:
                counts[(v, w)] = counts.get((v, w), 0) + n
            seen = [k for k in keys] + sorted({v for v, _w in counts} - set(keys), key=str)
            matrix = [[counts.get((k, w), 0) for w in range(WEEKS)] for k in seen]
            used = [i for i, row in enumerate(matrix) if any(row)]
            matrix = [matrix[i] for i in used]
            ids = [seen[i] for i in used]
            cells: list[list[Cell]] = ([[int(n) for n in row] for row in matrix] if exact
                                       else suppress_grid(matrix))
            return Grid(labels, [(str(k), label(k)) for k in ids], cells)

        return Dashboard(
            sites=[(s, names.get(s, s)) for s in sites],
            choices=[(s, names.get(s, s)) for s in choices],
            site=site, exact=exact,
            by_category=grid("category", [], category_label, True),
            by_severity=grid("severity", list(SEVERITIES), lambda s: str(s), False),
            first_action=self._first_action(sites, start, labels, exact),
            open_sev5=self._open_sev5(sites, names, exact),
            fp_rates=self._fp_rates(sites, exact),
        )

    def _names(self, sites: list[str]) -> dict[str, str]:
        out = {}
        for s in sites:
            profile = self.store.site_profile(s)
            out[s] = str(profile["name"]) if profile else s
        return out

    def _first_action(self, sites: list[str], start: int, labels: list[str],
                      exact: bool) -> list[WeekTime]:
        acted: list[list[int]] = [[] for _ in labels]
        waiting = [0] * len(labels)
        for r in self.store.first_actions(sites, start, start + WEEK_MS * WEEKS,
                                          _RESTRICTED) if sites else []:
            w = (int(r["first_time_ms"]) - start) // WEEK_MS
            if r["first_action_at"] is None:
                waiting[w] += 1
            else:
                acted[w].append(max(0, int(r["first_action_at"]) - int(r["first_time_ms"])))
        if exact:
            return [WeekTime(lab, _median_hours(a) if a else None, len(a), n)
                    for lab, a, n in zip(labels, acted, waiting, strict=True)]
        # the acted / waiting split of a week adds up to that week's total: a grid of two
        # columns, protected like the other charts; a median only over MIN_SHOWN or more
        cells = suppress_grid([[len(a), n] for a, n in zip(acted, waiting, strict=True)])
        return [WeekTime(lab, _median_hours(a) if len(a) >= MIN_SHOWN else None, c[0], c[1])
                for lab, a, c in zip(labels, acted, cells, strict=True)]

    def _open_sev5(self, sites: list[str], names: dict[str, str],
                   exact: bool) -> list[tuple[str, Cell]]:
        got = {s: n for s, v, n in (self.store.open_items_by("severity", sites, _RESTRICTED)
                                     if sites else []) if int(v) == 5}
        counts = [got.get(s, 0) for s in sites]
        cells: list[Cell] = list(counts) if exact else suppress(counts)
        return [(names.get(s, s), c) for s, c in zip(sites, cells, strict=True)]

    def _fp_rates(self, sites: list[str], exact: bool) -> list[RuleRate]:
        merged: dict[tuple[str, str], list[int]] = {}
        for r in self.store.rule_precision_rows(sites) if sites else []:
            cat = str(r["category"])
            rule = (f"{category_label(cat)} (all rules)" if cat in ILLEGAL_CATEGORIES
                    else str(r["rule_id"]))
            acc = merged.setdefault((rule, cat), [0, 0])
            acc[0] += int(r["reviewed"])
            acc[1] += int(r["false_positives"])
        out = []
        for (rule, cat), (reviewed, fps) in merged.items():
            if not reviewed:
                continue
            shown = exact or (reviewed >= MIN_SHOWN and not 0 < fps < MIN_SHOWN
                              and not 0 < reviewed - fps < MIN_SHOWN)
            out.append(RuleRate(rule, category_label(cat), reviewed if shown else None,
                                fps if shown else None, fps / reviewed if shown else None))
        return sorted(out, key=lambda r: (r.rate is None, -(r.rate or 0), r.rule))

    # -- the trust lead's schools side by side -----------------------------------------
    def trust(self, user: User) -> TrustOverview:
        """Every school of the user's trust: open items by severity, time to first action
        (last 28 days), silent and never-seen devices, DSL contacts set or not."""
        self.accounts.require(user, "trust")
        sites = self.accounts.sites_of(user)
        exact = self.exact_for(user)
        now = self._now()
        names = self._names(sites)
        by_sev: dict[tuple[str, int], int] = {
            (s, int(v)): n for s, v, n in self.store.open_items_by("severity", sites,
                                                                    _RESTRICTED)}
        restricted: dict[str, int] = {}
        for s, _v, n in self.store.open_items_by("category", sites, _RESTRICTED,
                                                 only_restricted=True):
            restricted[s] = restricted.get(s, 0) + n
        matrix = [[by_sev.get((s, sev), 0) for sev in SEVERITIES] + [restricted.get(s, 0)]
                  for s in sites]
        cells: list[list[Cell]] = ([[int(n) for n in row] for row in matrix] if exact
                                   else suppress_grid(matrix))
        delays: dict[str, list[int]] = {}
        for r in self.store.first_actions(sites, now - RECENT_MS, now, _RESTRICTED):
            if r["first_action_at"] is not None:
                delays.setdefault(str(r["site_id"]), []).append(
                    max(0, int(r["first_action_at"]) - int(r["first_time_ms"])))
        schools = []
        for s, row in zip(sites, cells, strict=True):
            silent = self.store.silent_devices(s, now - SILENT_MS)
            d = delays.get(s, [])
            profile = self.store.site_profile(s)
            schools.append(SchoolRow(
                site_id=s, name=names[s], open_by_severity=row[:-1], restricted_open=row[-1],
                median_first_action_hours=(_median_hours(d) if d and (exact or
                                                                      len(d) >= MIN_SHOWN)
                                           else None),
                silent_devices=sum(1 for x in silent if x["last_seen_at"] is not None),
                never_seen=sum(1 for x in silent if x["last_seen_at"] is None),
                dsl_contacts=bool(profile and profile["dsl_contacts"]),
                content=user.can("queue") and user.has_site(s)))
        return TrustOverview(schools, exact)

    def trust_weekly(self, user: User) -> TrustWeekly:
        """The weekly summary across the user's schools (counts of the last 7 days)."""
        overview = self.trust(user)
        sites = [x.site_id for x in overview.schools]
        now = self._now()
        counts: dict[tuple[str, str], int] = {}
        for s in sites:
            for cat, n in self.store.items_by("category", [s], now - WEEK_MS, now):
                counts[(s, str(cat))] = n
        cats = sorted({c for _s, c in counts}, key=category_label)
        matrix = [[counts.get((s, c), 0) for c in cats] for s in sites]
        exact = overview.exact
        cells: list[list[Cell]] = ([[int(n) for n in row] for row in matrix] if exact
                                   else suppress_grid(matrix))
        totals = [sum(row) for row in matrix]
        return TrustWeekly(
            start=fmt_time(now - WEEK_MS), end=fmt_time(now), exact=exact,
            schools=[(x.site_id, x.name) for x in overview.schools],
            categories=[(c, category_label(c)) for c in cats], cells=cells,
            new_items=[t if exact or not 0 < t < MIN_SHOWN else None for t in totals],
            overview=overview)

    def drill_site(self, user: User, site: str) -> str:
        """The one school a trust lead drills into (Refused 404 when not theirs)."""
        self.accounts.require(user, "trust")
        if not site:
            raise Refused(404, "no site given")
        return self.accounts.scope(user, site)[0]
