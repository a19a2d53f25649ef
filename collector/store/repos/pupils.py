"""One pupil across devices and time: their queue items (paginated by key), each item's
newest captures and recorded actions, and the captures around one item (the capture page's
timeline). Only what Vigil already keeps, and never the content of an illegal-imagery item:
its content columns come back NULL from here, whoever asks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from collector.domain.vocabulary import ILLEGAL_CATEGORIES, OPEN_STATUSES
from collector.store.sql import Db, in_list

__all__ = ["PupilsRepo"]


def _restricted(alias: str) -> tuple[str, list[Any]]:
    cats, args = in_list(f"{alias}.category", sorted(ILLEGAL_CATEGORIES))
    return f"({alias}.refer_police = 1 OR {cats})", args


def _content(col: str, restricted: str) -> str:
    return f"CASE WHEN {restricted} THEN NULL ELSE {col} END AS {col.split('.')[-1]}"


class PupilsRepo:
    db: Db

    def pupil_items(self, site_id: str, username: str, limit: int, *,
                    after: Sequence[int] | None = None,
                    before: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """One page of the pupil's items, newest last seen first, after (or before) the key
        (last_time_ms, id); with ``restricted`` and the latest capture's match (NULL when
        restricted)."""
        res, res_args = _restricted("q")
        where = "q.site_id = ? AND q.os_user = ?"
        args: list[Any] = [site_id, username]
        if after is not None:
            where += " AND (q.last_time_ms, q.id) < (?, ?)"
            args += list(after)
        elif before is not None:
            where += " AND (q.last_time_ms, q.id) > (?, ?)"
            args += list(before)
        inner = "ASC" if before is not None else "DESC"
        return self.db.rows(
            f"""
            SELECT q.*, CASE WHEN {res} THEN 1 ELSE 0 END AS restricted,
                   {_content('c.match', res)}, {_content('c.window_title', res)},
                   d.hostname, d.room
            FROM (SELECT * FROM queue_items q WHERE {where}
                  ORDER BY q.last_time_ms {inner}, q.id {inner} LIMIT ?) q
            LEFT JOIN captures c ON c.id = q.latest_capture_id
            LEFT JOIN devices d ON d.id = q.device_id
            ORDER BY q.last_time_ms DESC, q.id DESC
            """, [*res_args, *res_args, *res_args, *args, limit])

    def pupil_summary(self, site_id: str, username: str) -> list[dict[str, Any]]:
        """Per category: the pupil's items, open items and captures."""
        open_, open_args = in_list("status", sorted(OPEN_STATUSES))
        return self.db.rows(
            "SELECT category, COUNT(*) AS items, SUM(count) AS captures, "
            f"COUNT(CASE WHEN {open_} THEN 1 END) AS open_items, "
            "MAX(severity) AS max_severity, MAX(refer_police) AS refer_police "
            "FROM queue_items WHERE site_id = ? AND os_user = ? GROUP BY category "
            "ORDER BY category", [*open_args, site_id, username])

    def pupil_devices(self, site_id: str, username: str, limit: int = 20
                      ) -> list[dict[str, Any]]:
        """The devices the pupil's items came from, most recently used first."""
        return self.db.rows(
            "SELECT q.device_id, MAX(q.last_time_ms) AS last_time_ms, d.hostname, d.room "
            "FROM queue_items q LEFT JOIN devices d ON d.id = q.device_id "
            "WHERE q.site_id = ? AND q.os_user = ? GROUP BY q.device_id, d.hostname, d.room "
            "ORDER BY MAX(q.last_time_ms) DESC LIMIT ?", (site_id, username, limit))

    def pupil_item_actions(self, qids: Sequence[int]) -> list[dict[str, Any]]:
        """The recorded actions of these items, oldest first."""
        if not qids:
            return []
        where, args = in_list("queue_item_id", list(qids))
        return self.db.rows("SELECT queue_item_id, actor, action, note, reason, at "
                            f"FROM queue_actions WHERE {where} ORDER BY at, id", args)

    def pupil_item_captures(self, qids: Sequence[int], per_item: int) -> list[dict[str, Any]]:
        """Each item's newest ``per_item`` captures, newest first (content NULL when the
        item is restricted)."""
        if not qids:
            return []
        res, res_args = _restricted("q")
        where, args = in_list("c.queue_item_id", list(qids))
        cols = ", ".join(_content(f"c.{k}", res) for k in
                         ("match", "context", "window_title", "process", "media"))
        return self.db.rows(
            f"""
            SELECT * FROM (
                SELECT c.id, c.queue_item_id, c.time_ms, c.source, c.severity, c.count,
                       c.hostname, {cols},
                       ROW_NUMBER() OVER (PARTITION BY c.queue_item_id
                                          ORDER BY c.time_ms DESC, c.id DESC) AS n
                FROM captures c JOIN queue_items q ON q.id = c.queue_item_id
                WHERE {where}) t
            WHERE t.n <= ? ORDER BY t.queue_item_id, t.time_ms DESC
            """, [*res_args * 5, *args, per_item])

    def pupil_timeline(self, site_id: str, username: str, qid: int, first_ms: int,
                       last_ms: int, n: int) -> tuple[list[dict[str, Any]],
                                                      list[dict[str, Any]]]:
        """The pupil's ``n`` captures (of queued items, this item's excepted) before
        ``first_ms`` and the ``n`` after ``last_ms``, nearest first; content NULL when the
        capture's item is restricted."""
        res, res_args = _restricted("q")
        cols = ", ".join(_content(f"c.{k}", res) for k in ("match", "window_title", "media"))
        base = (f"SELECT c.id, c.queue_item_id, c.time_ms, c.source, c.severity, c.category, "
                f"c.hostname, q.status, CASE WHEN {res} THEN 1 ELSE 0 END AS restricted, "
                f"{cols} FROM captures c JOIN queue_items q ON q.id = c.queue_item_id "
                "WHERE c.site_id = ? AND c.os_user = ? AND c.queue_item_id <> ? AND ")
        head = [*res_args * 4, site_id, username, qid]
        before = self.db.rows(base + "c.time_ms < ? ORDER BY c.time_ms DESC, c.id DESC LIMIT ?",
                              [*head, first_ms, n])
        after = self.db.rows(base + "c.time_ms > ? ORDER BY c.time_ms ASC, c.id ASC LIMIT ?",
                             [*head, last_ms, n])
        return before, after
