"""What a technician works with in the console: devices (silent and never-seen ones first,
per-source health), enrolment tokens (create, list, revoke: on EstateService, so the estate's
own audit rows are written), rule versions, and anonymised examples of what misfired.

A technician never sees capture content or who a pupil is. The misfire examples
(:meth:`TechnicianService.misfires`) are built so that none can be tied to a pupil:

* only the matched phrase is shown, never the context, window title, process, device, room,
  pupil, time or school; the words around it are masked ("…"), digits become "#", and
  addresses, links and @handles are blanked;
* what is shown is an aggregate: a phrase appears only once it misfired for at least
  MIN_SHOWN different pupils (the governors' small-number threshold), with the number of
  items; rarer ones are only counted per rule as "withheld";
* restricted (illegal-imagery) items are never used.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from collector.domain.vocabulary import ILLEGAL_CATEGORIES, category_label
from collector.services import rules as rules_admin
from collector.services._text import fmt_time
from collector.services.accounts import AccountsService, BadInput, Refused, User
from collector.services.estate import AGE_BANDS, EstateError, EstateService
from collector.services.reports import MIN_SHOWN, SILENT_MS
from collector.store.base import TokenInfo
from collector.store.repos.console import ConsoleRepos

__all__ = ["DEVICE_SORTS", "DeviceView", "Misfire", "RuleMisfires", "SourceView",
           "TechnicianService", "TokenView", "mask_phrase"]

#: Sort keys of the device list (the query string's ``sort``).
DEVICE_SORTS = ("state", "hostname", "site", "room", "last_seen", "rules", "spool", "os")
_STATE_ORDER = {"never": 0, "silent": 1, "attention": 2, "ok": 3, "revoked": 4}
MAX_TOKEN_USES = 5000
MAX_TOKEN_DAYS = 90
_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
_HOME = re.compile(r"(/home/|/Users/|\\Users\\|/var/home/)[^/\\\s]+", re.IGNORECASE)
_EMAIL = re.compile(r"\S+@\S+|https?://\S+|www\.\S+|@\w+")


def mask_phrase(text: str) -> str:
    """A matched phrase as a technician may see it: at most 60 characters, digits as '#',
    addresses, links and @handles blanked."""
    text = _EMAIL.sub("▒", " ".join(text.split()))[:60]
    return re.sub(r"\d", "#", text)


def _clean_error(text: str) -> str:
    """An agent's error message without the home folder (it names the logged-in pupil)."""
    return _HOME.sub(lambda m: m.group(1) + "…", text)[:200]


@dataclass(frozen=True)
class SourceView:
    name: str
    state: str
    restarts: int
    last_event: str          # '' = no event yet
    error: str


@dataclass(frozen=True)
class DeviceView:
    id: str
    site_id: str
    hostname: str
    group_name: str
    os: str
    agent_version: str
    rules_version: int
    room: str
    last_seen_at: int | None
    spool_depth: int
    drops: str
    sources: list[SourceView]
    state: str               # never | silent | attention | ok | revoked


@dataclass(frozen=True)
class TokenView:
    id: str
    site_id: str
    group_name: str
    uses: int
    max_uses: int
    expires_at: int
    created_by: str
    state: str               # active | revoked | expired | used up


@dataclass(frozen=True)
class Misfire:
    phrase: str              # masked matched phrase
    in_word: bool            # it matched inside a longer word (e.g. "skill" for "kill")
    source: str              # keys | window | media
    match_kind: str          # exact | normalised
    items: int


@dataclass
class RuleMisfires:
    rule_id: str
    category: str
    examples: list[Misfire] = field(default_factory=list)
    withheld: int = 0        # false-positive items in groups too small to show


def _drops(raw: Any) -> str:
    import json

    try:
        counts = json.loads(raw or "{}")
    except ValueError:
        return "unreadable"
    if not isinstance(counts, dict):
        return "unreadable"
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v)


def _sources(raw: Any) -> list[SourceView]:
    import json

    try:
        items = json.loads(raw or "[]")
    except ValueError:
        return []
    out = []
    for x in items if isinstance(items, list) else []:
        if isinstance(x, dict):
            last = int(x.get("last_event_ms") or 0)
            out.append(SourceView(str(x.get("name", ""))[:32], str(x.get("state", ""))[:32],
                                  int(x.get("restarts") or 0), fmt_time(last) if last else "",
                                  _clean_error(str(x.get("error") or ""))))
    return sorted(out, key=lambda s: s.name)


def _in_word(match: str, context: str) -> tuple[bool, bool, bool]:
    """(text before, text after, the match is inside a longer word), from the context."""
    i = context.lower().find(match.lower())
    if i < 0:
        return bool(context.strip()), False, False
    before, after = context[:i], context[i + len(match):]
    inside = bool(before[-1:].isalnum() or after[:1].isalnum())
    return bool(before.strip()), bool(after.strip()), inside


class TechnicianService:
    def __init__(self, store: ConsoleRepos, estate: EstateService,
                 clock: Callable[[], float], accounts: AccountsService) -> None:
        self.store = store
        self.estate = estate
        self.clock = clock
        self.accounts = accounts

    def _now(self) -> int:
        return int(self.clock() * 1000)

    # -- devices ---------------------------------------------------------------------
    def devices(self, user: User, sort: str = "state", desc: bool = False) -> list[DeviceView]:
        """The technician's devices: never-seen and silent (3 days) ones, and those with a
        source not running, are marked; sorted by ``sort`` (one of DEVICE_SORTS)."""
        self.accounts.require(user, "devices")
        if sort not in DEVICE_SORTS:
            raise BadInput(f"sort: use one of {', '.join(DEVICE_SORTS)}")
        now = self._now()
        out = []
        for r in self.store.site_devices(self.accounts.sites_of(user)):
            sources = _sources(r.get("sources"))
            seen = r["last_seen_at"]
            state = ("revoked" if r["revoked_at"] else "never" if seen is None
                     else "silent" if seen < now - SILENT_MS
                     else "attention" if any(s.state != "running" for s in sources) else "ok")
            out.append(DeviceView(
                id=str(r["id"]), site_id=str(r["site_id"]), hostname=str(r["hostname"]),
                group_name=str(r["group_name"]), os=str(r["os"]),
                agent_version=str(r["agent_version"]), rules_version=int(r["rules_version"]),
                room=str(r["room"] or ""), last_seen_at=seen,
                spool_depth=int(r["spool_depth"]), drops=_drops(r["drops"]), sources=sources,
                state=state))
        keys: dict[str, Callable[[DeviceView], Any]] = {
            "state": lambda d: (_STATE_ORDER[d.state], d.last_seen_at or 0, d.hostname),
            "hostname": lambda d: d.hostname.lower(),
            "site": lambda d: (d.site_id, d.hostname.lower()),
            "room": lambda d: (d.room.lower(), d.hostname.lower()),
            "last_seen": lambda d: (d.last_seen_at is not None, d.last_seen_at or 0),
            "rules": lambda d: (d.rules_version, d.hostname.lower()),
            "spool": lambda d: (d.spool_depth, d.hostname.lower()),
            "os": lambda d: (d.os, d.hostname.lower()),
        }
        return sorted(out, key=keys[sort], reverse=desc)

    # -- enrolment tokens --------------------------------------------------------------
    def tokens(self, user: User) -> list[TokenView]:
        """Enrolment tokens of the technician's sites (never a secret or its hash)."""
        self.accounts.require(user, "tokens")
        now = self._now()
        return [TokenView(
            id=str(t["id"]), site_id=str(t["site_id"]), group_name=str(t["group_name"]),
            uses=int(t["uses"]), max_uses=int(t["max_uses"]), expires_at=int(t["expires_at"]),
            created_by=str(t["created_by"]),
            state=("revoked" if t["revoked_at"] else "expired" if t["expires_at"] <= now
                   else "used up" if t["uses"] >= t["max_uses"] else "active"))
            for t in self.store.site_tokens(self.accounts.sites_of(user))]

    def create_token(self, user: User, site: str, group: str, uses: str, days: str,
                     age_band: str = "") -> tuple[TokenInfo, str]:
        """A token for one of the technician's sites; returns it and its secret, which is
        shown once and never stored. BadInput names the field. Audited by the estate."""
        self.accounts.require(user, "tokens")
        if not site:
            raise BadInput("site: choose the school the devices belong to")
        self.accounts.scope(user, site)
        group = group.strip()
        if not _GROUP.match(group):
            raise BadInput("group: 1 to 64 letters, digits, spaces, '.', '-' or '_', "
                           "such as year-9 or trolley-2")
        n = _int_field("uses", uses, 1, MAX_TOKEN_USES)
        d = _int_field("days", days, 1, MAX_TOKEN_DAYS)
        if age_band and age_band not in AGE_BANDS:
            raise BadInput(f"age band: one of {', '.join(AGE_BANDS)}")
        try:
            return self.estate.create_token(user.username, site, group, n, d * 86_400_000,
                                            age_band or None)
        except EstateError as e:
            raise BadInput(str(e)) from None

    def revoke_token(self, user: User, token_id: str) -> None:
        """Revoke one of the technician's sites' tokens (Refused 404 for any other)."""
        self.accounts.require(user, "tokens")
        site = self.store.token_site(token_id[:100])
        if site is None or not user.has_site(site):
            raise Refused(404, "no such token", site)
        try:
            self.estate.revoke_token(user.username, token_id)
        except EstateError:
            raise BadInput("this token was already revoked") from None

    # -- rules -------------------------------------------------------------------------
    def rule_history(self, user: User) -> list[dict[str, Any]]:
        """Every published version, newest first, with how many of the technician's devices
        last reported running it (the listing is audited by services.rules)."""
        self.accounts.require(user, "rule_stats")
        running = self.store.devices_per_rules_version(self.accounts.sites_of(user))
        versions = rules_admin.versions(self.estate.store, user.username, self._now())
        return [{"version": v.version, "created_at": v.created_at,
                 "published_by": v.published_by, "note": v.note, "active": v.active,
                 "content_hash": v.content_hash, "devices": running.get(v.version, 0)}
                for v in reversed(versions)]

    def misfires(self, user: User) -> list[RuleMisfires]:
        """Anonymised examples of what each rule matched in items the DSL marked false
        positive (see the module docstring for why none can be tied to a pupil)."""
        self.accounts.require(user, "rule_stats")
        sites = self.accounts.sites_of(user)
        groups: dict[tuple[str, str, bool, str, str], tuple[int, set[str]]] = {}
        cats: dict[str, str] = {}
        for r in self.store.misfire_rows(sites, sorted(ILLEGAL_CATEGORIES)) if sites else []:
            match, context = str(r["match"] or ""), str(r["context"] or "")
            _before, _after, inside = _in_word(match, context)
            key = (str(r["rule_id"]), mask_phrase(match).lower(), inside, str(r["source"]),
                   str(r["match_kind"]))
            n, pupils = groups.get(key, (0, set()))
            pupils.add(str(r["os_user"]))
            groups[key] = (n + 1, pupils)
            cats[key[0]] = str(r["category"])
        out: dict[str, RuleMisfires] = {}
        for (rule, phrase, inside, source, kind), (n, pupils) in groups.items():
            rm = out.setdefault(rule, RuleMisfires(rule, category_label(cats[rule])))
            if len(pupils) >= MIN_SHOWN:
                rm.examples.append(Misfire(phrase, inside, source, kind, n))
            else:
                rm.withheld += n
        for rm in out.values():
            rm.examples.sort(key=lambda m: (-m.items, m.phrase))
        return sorted(out.values(), key=lambda m: (-sum(x.items for x in m.examples)
                                                   - m.withheld, m.rule_id))


def _int_field(name: str, text: str, lo: int, hi: int) -> int:
    text = (text or "").strip()
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise BadInput(f"{name}: a whole number from {lo} to {hi}")
    return int(text)
