"""One pupil's page: everything Vigil keeps about a pupil of one site, across devices and
time (items, their newest captures, actions, notes and status history), paginated by key.

Authorised as the capture page is: only roles that see content, only the user's own sites
(another site's pupil is "not found"), and an illegal-imagery item shows its category only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from collector.domain.vocabulary import STATUS_LABELS, category_label, is_illegal
from collector.services._text import fmt_time
from collector.services.accounts import AccountsService, Refused, User
from collector.services.casework import action_label, media_facts
from collector.services.queue import decode_key, encode_key
from collector.store.repos.console import ConsoleRepos

__all__ = ["CAPTURES_PER_ITEM", "PUPIL_PAGE_SIZE", "PupilService", "PupilView"]

PUPIL_PAGE_SIZE = 25
CAPTURES_PER_ITEM = 5
MAX_USERNAME = 200


@dataclass
class PupilView:
    site_id: str
    username: str
    display_name: str
    year_group: str
    devices: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    total_items: int = 0
    next_key: str = ""
    prev_key: str = ""

    @property
    def name(self) -> str:
        return self.display_name or self.username


class PupilService:
    def __init__(self, store: ConsoleRepos, clock: Callable[[], float],
                 accounts: AccountsService) -> None:
        self.store = store
        self.clock = clock
        self.accounts = accounts

    def page(self, user: User, site_id: str, username: str, *, after: str = "",
             before: str = "") -> PupilView:
        """One page of the pupil's items (newest last seen first), after or before a page
        key; raises Refused (404: another site's pupil, or one Vigil knows nothing about)."""
        self.accounts.require(user, "capture", site_id)
        if not username or len(username) > MAX_USERNAME:
            raise Refused(404, "no such pupil", site_id)
        roster = self.store.pupil_brief(site_id, username)
        summary = self.store.pupil_summary(site_id, username)
        if roster is None and not summary:
            raise Refused(404, "no such pupil", site_id)
        view = PupilView(site_id=site_id, username=username,
                         display_name=str(roster["display_name"]) if roster else "",
                         year_group=str(roster["year_group"] or "") if roster else "")
        for s in summary:
            restricted = is_illegal(s["category"], s["refer_police"])
            view.total_items += int(s["items"])
            view.summary.append({"category_label": category_label(s["category"]),
                                 "restricted": restricted,
                                 "items": None if restricted else s["items"],
                                 "captures": None if restricted else s["captures"],
                                 "open_items": None if restricted else s["open_items"],
                                 "max_severity": None if restricted else s["max_severity"]})
        for d in self.store.pupil_devices(site_id, username):
            view.devices.append({"name": d["hostname"] or d["device_id"][:12],
                                 "room": d["room"] or "",
                                 "last_time": fmt_time(d["last_time_ms"])})
        after_key = decode_key(after, 2)
        before_key = decode_key(before, 2) if after_key is None else None
        raw = self.store.pupil_items(site_id, username, PUPIL_PAGE_SIZE + 1,
                                     after=after_key, before=before_key)
        more = len(raw) > PUPIL_PAGE_SIZE
        raw = (raw[1:] if more else raw) if before_key is not None else raw[:PUPIL_PAGE_SIZE]
        if raw:
            if (more if before_key is None else True):
                view.next_key = encode_key([raw[-1]["last_time_ms"], raw[-1]["id"]])
            if (more if before_key is not None else after_key is not None):
                view.prev_key = encode_key([raw[0]["last_time_ms"], raw[0]["id"]])
        open_ids = [int(r["id"]) for r in raw if not r["restricted"]]
        captures: dict[int, list[dict[str, Any]]] = {}
        for c in self.store.pupil_item_captures(open_ids, CAPTURES_PER_ITEM):
            c["time"] = fmt_time(c["time_ms"], seconds=True)
            c["media"] = media_facts(c.get("media"))
            captures.setdefault(int(c["queue_item_id"]), []).append(c)
        actions: dict[int, list[dict[str, Any]]] = {}
        acts = self.store.pupil_item_actions(open_ids)
        names = self.store.staff_names({a["actor"] for a in acts}
                                       | {r["assignee"] for r in raw if r["assignee"]}
                                       | {a["action"][7:] for a in acts
                                          if a["action"].startswith("assign:")})
        for a in acts:
            a["time"] = fmt_time(a["at"])
            a["actor_name"] = names.get(a["actor"], a["actor"])
            a["label"] = ("Assigned to " + names[a["action"][7:]]
                          if a["action"][7:] in names and a["action"].startswith("assign:")
                          else action_label(a["action"]))
            actions.setdefault(int(a["queue_item_id"]), []).append(a)
        for r in raw:
            qid = int(r["id"])
            entry: dict[str, Any] = {"id": qid, "restricted": bool(r["restricted"]),
                                     "category_label": category_label(r["category"])}
            if not r["restricted"]:
                host = r["hostname"] or r["device_id"][:12]
                entry |= {
                    "severity": r["severity"], "pinned": bool(r["pinned"]),
                    "status_label": STATUS_LABELS.get(r["status"], r["status"]),
                    "count": r["count"], "first_time": fmt_time(r["first_time_ms"]),
                    "last_time": fmt_time(r["last_time_ms"]), "rule_id": r["rule_id"],
                    "device": f"{r['room']} · {host}" if r["room"] else host,
                    "assignee": names.get(r["assignee"], r["assignee"]) if r["assignee"]
                    else "",
                    "captures": captures.get(qid, []), "actions": actions.get(qid, [])}
            view.items.append(entry)
        return view
