"""Pupil roster import (CSV from the school's MIS) and year group -> age band."""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from dataclasses import dataclass, field

__all__ = ["RosterError", "RosterResult", "age_band", "import_roster", "parse_roster"]

_PRIMARY_WORDS = ("reception", "nursery", "rec", "r", "n", "ks1", "ks2", "eyfs")
_STAFF_WORDS = ("staff", "teacher", "adult")


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


def import_roster(conn: sqlite3.Connection, text: str, site_id: str) -> RosterResult:
    """Upsert the good rows in one transaction; bad rows are returned, not raised."""
    if conn.execute("SELECT 1 FROM sites WHERE id = ?", (site_id,)).fetchone() is None:
        raise RosterError(0, f"site {site_id!r} does not exist")
    result = parse_roster(text, site_id)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            "INSERT INTO pupils (site_id, username, display_name, year_group, age_band) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (site_id, username) DO UPDATE SET "
            "display_name = excluded.display_name, year_group = excluded.year_group, "
            "age_band = excluded.age_band",
            [(site_id, *r) for r in result.rows])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return result
