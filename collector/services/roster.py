"""The pupil roster (CSV from the school's MIS, year group -> age band) and the technicians'
device view: device health, enrolment tokens (never their secrets) and rooms."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from collector.services.accounts import AccountsService, Refused, User
from collector.services.audit import AuditLog
from collector.store.repos.console import ConsoleRepos

__all__ = ["RosterError", "RosterResult", "RosterService", "age_band", "parse_roster"]

_PRIMARY_WORDS = ("reception", "nursery", "rec", "r", "n", "ks1", "ks2", "eyfs")
_STAFF_WORDS = ("staff", "teacher", "adult")
MAX_ROOM = 100


class RosterError(ValueError):
    """A roster row that cannot be imported (``line`` is 1-based, as a spreadsheet shows it)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


def age_band(year_group: str) -> str:
    """'Year 9', 'Y9', '9B', '12', 'Reception', 'Staff' -> primary/secondary/sixth_form/staff."""
    text = year_group.strip().lower()
    if text in _STAFF_WORDS:
        return "staff"
    if text in _PRIMARY_WORDS:
        return "primary"
    m = re.fullmatch(r"(?:year|yr|y)?\s*(\d{1,2})\s*[a-z]{0,3}\d?", text)
    if m is None:
        raise ValueError(f"year group {year_group!r}: use e.g. 'Year 9', 'Y9', '9B', "
                         "'Reception' or 'Staff'")
    n = int(m.group(1))
    if 0 <= n <= 6:
        return "primary"
    if 7 <= n <= 11:
        return "secondary"
    if n in (12, 13):
        return "sixth_form"
    raise ValueError(f"year group {year_group!r}: year {n} is outside Reception to Year 13")


@dataclass
class RosterResult:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)  # user, name, year, band
    errors: list[RosterError] = field(default_factory=list)


def parse_roster(text: str, site_id: str) -> RosterResult:
    """Columns: username, display name, year group or form, site. A header row is optional."""
    result = RosterResult()
    seen: set[str] = set()
    for i, row in enumerate(csv.reader(io.StringIO(text.lstrip("\ufeff"))), start=1):
        if not row or all(not c.strip() for c in row):
            continue
        if i == 1 and row[0].strip().lower() in ("username", "user", "login"):
            continue
        cells = [c.strip() for c in row]
        if len(cells) not in (3, 4):
            result.errors.append(RosterError(
                i, "expected 4 columns (username, display name, year group, site), "
                f"got {len(cells)}"))
            continue
        username, name, year = cells[:3]
        site = cells[3] if len(cells) == 4 and cells[3] else site_id
        if not username:
            result.errors.append(RosterError(i, "username is empty"))
        elif not name:
            result.errors.append(RosterError(i, f"display name for {username!r} is empty"))
        elif site != site_id:
            result.errors.append(RosterError(
                i, f"site {site!r} is not {site_id!r}; import each site with its own --site"))
        elif username.lower() in seen:
            result.errors.append(RosterError(i, f"username {username!r} appears twice"))
        else:
            try:
                band = age_band(year)
            except ValueError as e:
                result.errors.append(RosterError(i, str(e)))
                continue
            seen.add(username.lower())
            result.rows.append((username, name, year, band))
    return result


class RosterService:
    def __init__(self, store: ConsoleRepos, clock: Callable[[], float],
                 accounts: AccountsService, audit: AuditLog) -> None:
        self.store = store
        self.clock = clock
        self.accounts = accounts
        self.audit = audit

    def import_roster(self, text: str, site_id: str, *, actor: str,
                      source: str = "") -> RosterResult:
        """Upsert the good rows in one transaction; bad rows are returned, not raised.
        Audited (line numbers only, never names)."""
        if not self.store.site_known(site_id):
            raise RosterError(0, f"site {site_id!r} does not exist")
        result = parse_roster(text, site_id)
        with self.store.atomic():
            self.store.upsert_pupils(site_id, result.rows)
            self.audit.record(actor, "roster.import", source, site_id,
                              imported=len(result.rows), rejected=len(result.errors),
                              bad_lines=[e.line for e in result.errors][:200])
        return result

    def devices(self, user: User) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(device health rows, enrolment tokens) of the technician's sites."""
        self.accounts.require(user, "devices")
        sites = self.accounts.sites_of(user)
        return self.store.site_devices(sites), self.store.site_tokens(sites)

    def set_room(self, device_id: str, room: str, *, actor: str,
                 user: User | None = None) -> str:
        """Put a device in a room ('' clears it); returns its hostname. With ``user`` (the
        console) the device must be one of their sites'. Raises Refused 404. Audited."""
        if user is not None:
            self.accounts.require(user, "devices")
        row = self.store.device_site(device_id[:200])
        if row is None or (user is not None and not user.has_site(row["site_id"])):
            raise Refused(404, "no such device", row["site_id"] if row else None)
        room = room.strip()[:MAX_ROOM]
        with self.store.atomic():
            self.store.set_device_room(device_id, room or None)
            self.audit.record(actor, "device.room", f"device:{device_id}", row["site_id"],
                              room=room)
        return str(row["hostname"])
