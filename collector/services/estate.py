"""The estate a technician runs: sites and their alert contacts, groups, enrolment tokens,
devices and exemptions. Every change and every listing is audited here, with the actor, so a
CLI, the console and any future API cannot forget to.

Enrolment (the gRPC side) and the stream's device lookups are here too, so the gRPC adapters
never call the store directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from collector.store.base import DeviceRow, SiteRow, Store, TokenInfo

__all__ = ["AGE_BANDS", "EstateError", "EstateService", "TokenState", "token_state"]

AGE_BANDS = ("primary", "secondary", "sixth_form", "staff")


class EstateError(ValueError):
    """A request the estate cannot carry out; the message says what to do instead."""


@dataclass(frozen=True)
class TokenState:
    token: TokenInfo
    state: str  # active | revoked | expired | used up


def token_state(t: TokenInfo, now_ms: int) -> str:
    return ("revoked" if t.revoked_at else "expired" if t.expires_at <= now_ms
            else "used up" if t.uses >= t.max_uses else "active")


class EstateService:
    def __init__(self, store: Store, clock_ms: Callable[[], int]) -> None:
        self.store = store
        self.now = clock_ms

    # -- sites -------------------------------------------------------------------------------
    def add_site(self, actor: str, site_id: str, name: str, *, wales: bool = False) -> bool:
        """Create a site (True) or leave an existing one alone (False). ``wales``: a Welsh
        school (its lead is the Designated Safeguarding Person)."""
        if not site_id.strip() or not name.strip():
            raise EstateError("a site needs an id and a name")
        with self.store.transaction():
            created = self.store.ensure_site(site_id, name, self.now())
            if created and wales:
                self.store.set_site_wales(site_id, True)
            self.store.audit(actor, "site.add", site_id, site_id,
                             {"name": name, "wales": wales}, self.now())
        return created

    def set_wales(self, actor: str, site_id: str, wales: bool) -> None:
        """Mark a site a Welsh school or not: the console, exports and emails then name its
        lead the DSP (Keeping Learners Safe) instead of the DSL. Audited."""
        self.site(site_id)
        with self.store.transaction():
            self.store.set_site_wales(site_id, wales)
            self.store.audit(actor, "site.wales", site_id, site_id, {"wales": wales},
                             self.now())

    def site(self, site_id: str) -> SiteRow:
        s = self.store.get_site(site_id)
        if s is None:
            raise EstateError(f"site {site_id!r} does not exist (see `vigil-collector site`)")
        return s

    def set_contacts(self, actor: str, site_id: str, emails: Sequence[str],
                     webhook: str | None) -> None:
        """The site's DSL contacts in escalation order; an empty list turns email off."""
        self.site(site_id)
        with self.store.transaction():
            self.store.set_site_contacts(site_id, list(emails), webhook)
            self.store.audit(actor, "site.contacts", site_id, site_id,
                             {"contacts": len(emails), "webhook": bool(webhook)}, self.now())

    # -- tokens ------------------------------------------------------------------------------
    def create_token(self, actor: str, site_id: str, group: str, uses: int, ttl_ms: int,
                     age_band: str | None = None) -> tuple[TokenInfo, str]:
        """A token for ``uses`` devices of ``group`` at ``site_id``; the secret is returned
        once and only its hash is kept."""
        self.site(site_id)
        if uses < 1:
            raise EstateError("--uses must be at least 1")
        if ttl_ms <= 0:
            raise EstateError("a token must expire in the future")
        band = age_band or (group if group in AGE_BANDS else "secondary")
        if band not in AGE_BANDS:
            raise EstateError(f"age band must be one of {', '.join(AGE_BANDS)}, not {band!r}")
        now = self.now()
        with self.store.transaction():
            self.store.ensure_group(site_id, group, band)
            tok, secret = self.store.create_token(site_id, group, uses, now + ttl_ms, actor, now)
            self.store.audit(actor, "token.create", tok.id, site_id,
                             {"group": group, "uses": uses, "expires_at": now + ttl_ms}, now)
        return tok, secret

    def revoke_token(self, actor: str, token_id: str) -> None:
        with self.store.transaction():
            if not self.store.revoke_token(token_id, self.now()):
                raise EstateError(f"no unrevoked token with id {token_id!r} (see `token list`)")
            self.store.audit(actor, "token.revoke", token_id, None, {}, self.now())

    def tokens(self, actor: str) -> list[TokenState]:
        self.store.audit(actor, "token.list", "", None, {}, self.now())
        now = self.now()
        return [TokenState(t, token_state(t, now)) for t in self.store.list_tokens()]

    # -- devices -----------------------------------------------------------------------------
    def devices(self, actor: str, silent_for_ms: int | None = None) -> list[DeviceRow]:
        """Every device, or the live ones not heard from for ``silent_for_ms``."""
        self.store.audit(actor, "devices.list", "", None,
                         {"silent_ms": silent_for_ms}, self.now())
        since = self.now() - silent_for_ms if silent_for_ms is not None else None
        return self.store.list_devices(since)

    def revoke_device(self, actor: str, device_id: str) -> None:
        """Revoke a device: its certificate is refused and its live stream closed."""
        with self.store.transaction():
            if not self.store.revoke_device(device_id, self.now()):
                raise EstateError(f"no active device {device_id!r}")
            self.store.audit(actor, "device.revoke", device_id, None, {}, self.now())

    # -- exemptions --------------------------------------------------------------------------
    def add_exemption(self, actor: str, site_id: str, reason: str, *, group: str | None = None,
                      rule_id: str | None = None, category: str | None = None,
                      ttl_ms: int | None = None) -> tuple[str, int]:
        """An exclusion (standing) or, with ``ttl_ms``, a time-boxed exemption. Never
        suppresses severity 5 or illegal-imagery categories (triage enforces that)."""
        if not (rule_id or category):
            raise EstateError("name --rule or --category")
        if not reason.strip():
            raise EstateError("--reason is required: write why (it is audited)")
        now = self.now()
        kind = "exemption" if ttl_ms else "exclusion"
        eid = self.store.add_exemption(kind, site_id, reason, actor, now, group_name=group,
                                       rule_id=rule_id, category=category,
                                       expires_at=now + ttl_ms if ttl_ms else None)
        return kind, eid

    def remove_exemption(self, actor: str, exemption_id: int) -> None:
        with self.store.transaction():
            if not self.store.remove_exemption(exemption_id, self.now()):
                raise EstateError(f"no active exemption {exemption_id}")
            self.store.audit(actor, "exemption.remove", str(exemption_id), None, {},
                             self.now())

    # -- what the gRPC adapters need ---------------------------------------------------------
    def check_token(self, secret: str) -> TokenInfo:
        """Raises TokenError(unknown|expired|revoked|used_up)."""
        return self.store.check_token(secret, self.now())

    def enrol(self, secret: str, device_id: str, hostname: str, os: str, agent_version: str,
              cert_serial: str) -> DeviceRow:
        return self.store.enrol_device(secret, device_id, hostname, os, agent_version,
                                       cert_serial, self.now())

    def device(self, device_id: str) -> DeviceRow | None:
        return self.store.get_device(device_id)

    def pupil_age_band(self, site_id: str, username: str) -> str | None:
        return self.store.pupil_age_band(site_id, username)
