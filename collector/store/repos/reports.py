"""Counts for the weekly DSL summary and the governors' annual report, and the rows of the
incident log / CPOMS exports. Every query is scoped to the sites the caller passes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from collector.domain.vocabulary import OPEN_STATUSES
from collector.store.sql import Db, in_list

__all__ = ["ReportsRepo"]

_GROUPABLE = frozenset({"category", "severity", "status"})
_CHUNK = 500


def _period(sites: list[str], start_ms: int | None,
            end_ms: int | None) -> tuple[str, list[Any]]:
    where, args = in_list("q.site_id", sites)
    parts = [where]
    if start_ms is not None:
        parts.append("q.first_time_ms >= ?")
        args.append(start_ms)
    if end_ms is not None:
        parts.append("q.first_time_ms < ?")
        args.append(end_ms)
    return " AND ".join(parts), args


def _restricted(categories: Sequence[str], only: bool) -> tuple[str, list[Any]]:
    """Items of the restricted (illegal-imagery) categories or marked refer-to-police: the
    condition that leaves them out, or with ``only`` keeps only them."""
    if not categories:
        return ("q.refer_police = 1", []) if only else ("q.refer_police = 0", [])
    where, args = in_list("q.category", list(categories))
    if only:
        return f"(q.refer_police = 1 OR {where})", args
    return f"(q.refer_police = 0 AND NOT {where})", args


class ReportsRepo:
    db: Db

    def site_profile(self, site_id: str) -> dict[str, Any] | None:
        """A site's id, name and DSL contact emails (a list), or None."""
        row = self.db.one("SELECT id, name, dsl_contacts FROM sites WHERE id = ?", (site_id,))
        if row is None:
            return None
        contacts = json.loads(row["dsl_contacts"] or "[]")
        return {"id": row["id"], "name": row["name"],
                "dsl_contacts": [str(c) for c in contacts] if isinstance(contacts, list) else []}

    def site_names(self, sites: list[str]) -> list[str]:
        """Names of these sites, sorted."""
        where, args = in_list("id", sites)
        return [str(r["name"]) for r in
                self.db.rows(f"SELECT name FROM sites WHERE {where} ORDER BY name", args)]

    def items_count(self, sites: list[str], start_ms: int, end_ms: int) -> int:
        """Items of these sites first seen in [start, end)."""
        where, args = _period(sites, start_ms, end_ms)
        return int(self.db.scalar(f"SELECT COUNT(*) FROM queue_items q WHERE {where}", args))

    def items_by(self, column: str, sites: list[str], start_ms: int,
                 end_ms: int) -> list[tuple[Any, int]]:
        """(value, items) of ``column`` (category, severity or status) for items first seen
        in [start, end), most items first."""
        if column not in _GROUPABLE:
            raise ValueError(f"cannot group items by {column!r}")
        where, args = _period(sites, start_ms, end_ms)
        return [(r["v"], int(r["n"])) for r in self.db.rows(
            f"SELECT q.{column} AS v, COUNT(*) AS n FROM queue_items q WHERE {where} "
            f"GROUP BY q.{column} ORDER BY n DESC, v", args)]

    def items_per_period(self, sites: list[str], bounds: Sequence[tuple[int, int]]) -> list[int]:
        """Items first seen in each [start, end) of ``bounds`` (one scan)."""
        if not bounds:
            return []
        lo, hi = min(b[0] for b in bounds), max(b[1] for b in bounds)
        where, args = _period(sites, lo, hi)
        cols = ", ".join(f"COUNT(CASE WHEN q.first_time_ms >= ? AND q.first_time_ms < ? "
                         f"THEN 1 END) AS p{i}" for i in range(len(bounds)))
        row = self.db.one(f"SELECT {cols} FROM queue_items q WHERE {where}",
                          [*(v for b in bounds for v in b), *args])
        return [int(row[f"p{i}"]) if row else 0 for i in range(len(bounds))]

    def open_items(self, site_id: str) -> tuple[int, int]:
        """(open items, pinned open items) of one site."""
        where, args = in_list("status", sorted(OPEN_STATUSES))
        row = self.db.one(f"SELECT COUNT(*) AS n, COUNT(CASE WHEN pinned = 1 THEN 1 END) AS p "
                          f"FROM queue_items WHERE site_id = ? AND {where}", [site_id, *args])
        return (int(row["n"]), int(row["p"])) if row else (0, 0)

    def silent_devices(self, site_id: str, seen_before_ms: int) -> list[dict[str, Any]]:
        """Enrolled devices of one site not seen since ``seen_before_ms`` (or never)."""
        return self.db.rows(
            "SELECT id, hostname, room, last_seen_at FROM devices WHERE site_id = ? "
            "AND revoked_at IS NULL AND (last_seen_at IS NULL OR last_seen_at < ?) "
            "ORDER BY last_seen_at NULLS FIRST", (site_id, seen_before_ms))

    def active_devices(self, sites: list[str]) -> int:
        """Enrolled, unrevoked devices of these sites."""
        where, args = in_list("site_id", sites)
        return int(self.db.scalar(
            f"SELECT COUNT(*) FROM devices WHERE {where} AND revoked_at IS NULL", args))

    # -- dashboard ------------------------------------------------------------------------
    def items_per_week(self, column: str, sites: list[str], start_ms: int, week_ms: int,
                       weeks: int, restricted: Sequence[str] = (),
                       only_restricted: bool = False) -> list[tuple[int, Any, int]]:
        """(week index from ``start_ms``, value of ``column``, items) for items first seen in
        those weeks. Items of the ``restricted`` categories (or marked refer-to-police) are
        left out, or, with ``only_restricted``, are the only ones counted."""
        if column not in _GROUPABLE:
            raise ValueError(f"cannot group items by {column!r}")
        where, args = _period(sites, start_ms, start_ms + week_ms * weeks)
        rwhere, rargs = _restricted(restricted, only_restricted)
        return [(int(r["w"]), r["v"], int(r["n"])) for r in self.db.rows(
            f"SELECT w, v, COUNT(*) AS n FROM (SELECT (q.first_time_ms - ?) / ? AS w, "
            f"q.{column} AS v FROM queue_items q WHERE {where} AND {rwhere}) t GROUP BY w, v",
            [start_ms, week_ms, *args, *rargs])]

    def first_actions(self, sites: list[str], start_ms: int, end_ms: int,
                      restricted: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Per item first seen in [start, end) (restricted ones left out): site_id,
        first_time_ms and first_action_at (the earliest recorded action, note or status
        change; None when nothing has been recorded yet)."""
        where, args = _period(sites, start_ms, end_ms)
        rwhere, rargs = _restricted(restricted, False)
        return self.db.rows(
            f"SELECT q.site_id AS site_id, q.first_time_ms AS first_time_ms, "
            f"MIN(a.at) AS first_action_at FROM queue_items q "
            f"LEFT JOIN queue_actions a ON a.queue_item_id = q.id "
            f"WHERE {where} AND {rwhere} GROUP BY q.id, q.site_id, q.first_time_ms",
            [*args, *rargs])

    def open_items_by(self, column: str, sites: list[str], restricted: Sequence[str] = (),
                      only_restricted: bool = False) -> list[tuple[str, Any, int]]:
        """(site id, value of ``column``, open items) of these sites (restricted items left
        out, or with ``only_restricted`` the only ones counted)."""
        if column not in _GROUPABLE:
            raise ValueError(f"cannot group items by {column!r}")
        where, args = in_list("q.site_id", sites)
        swhere, sargs = in_list("q.status", sorted(OPEN_STATUSES))
        rwhere, rargs = _restricted(restricted, only_restricted)
        return [(str(r["s"]), r["v"], int(r["n"])) for r in self.db.rows(
            f"SELECT q.site_id AS s, q.{column} AS v, COUNT(*) AS n FROM queue_items q "
            f"WHERE {where} AND {swhere} AND {rwhere} GROUP BY q.site_id, q.{column}",
            [*args, *sargs, *rargs])]

    def misfire_rows(self, sites: list[str], restricted: Sequence[str],
                     limit: int = 2000) -> list[dict[str, Any]]:
        """The newest false-positive items of these sites (never restricted ones) with their
        latest capture's match, context, source and match kind, and the pupil's OS login so
        the caller can count distinct pupils. For anonymising in the service: never shown."""
        where, args = in_list("q.site_id", sites)
        rwhere, rargs = _restricted(restricted, False)
        return self.db.rows(
            f"SELECT q.rule_id, q.category, q.os_user, c.match, c.context, c.source, "
            f"c.match_kind FROM queue_items q JOIN captures c ON c.id = q.latest_capture_id "
            f"WHERE {where} AND {rwhere} AND q.status = 'false_positive' "
            f"ORDER BY q.id DESC LIMIT ?", [*args, *rargs, limit])

    def devices_per_rules_version(self, sites: list[str]) -> dict[int, int]:
        """Enrolled, unrevoked devices of these sites per rules version they last reported."""
        where, args = in_list("site_id", sites)
        return {int(r["v"]): int(r["n"]) for r in self.db.rows(
            f"SELECT rules_version AS v, COUNT(*) AS n FROM devices WHERE {where} "
            f"AND revoked_at IS NULL GROUP BY rules_version", args)}

    # -- exports --------------------------------------------------------------------------
    def export_items(self, sites: list[str], start_ms: int | None,
                     end_ms: int | None) -> list[dict[str, Any]]:
        """Items (not false positives) of these sites first seen in the range, oldest first,
        with the latest capture's match, title, process and source, the pupil and device."""
        where, args = _period(sites, start_ms, end_ms)
        return self.db.rows(
            f"""SELECT q.*, c.match, c.window_title, c.process, c.source, p.display_name,
                       p.year_group, d.room, d.hostname
                FROM queue_items q
                LEFT JOIN captures c ON c.id = q.latest_capture_id
                LEFT JOIN pupils p ON p.site_id = q.site_id AND p.username = q.os_user
                LEFT JOIN devices d ON d.id = q.device_id
                WHERE {where} AND q.status <> 'false_positive'
                ORDER BY q.first_time_ms, q.id""", args)

    def actions_of_items(self, qids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
        """Recorded actions per item id, oldest first (items without any are absent)."""
        out: dict[int, list[dict[str, Any]]] = {}
        ids = list(qids)
        for i in range(0, len(ids), _CHUNK):
            where, args = in_list("queue_item_id", ids[i:i + _CHUNK])
            for r in self.db.rows(f"SELECT queue_item_id, actor, action, note, at "
                                  f"FROM queue_actions WHERE {where} "
                                  f"ORDER BY queue_item_id, at, id", args):
                out.setdefault(int(r["queue_item_id"]), []).append(r)
        return out
