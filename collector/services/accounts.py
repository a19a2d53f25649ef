"""Accounts and authorisation: who a console user is, what their role may do, which sites
they reach, and how they log in (argon2 passwords, server-side sessions, throttling).

Log-in throttling never lets a stranger deny service to a named user. Failures are counted
per (account, address) pair, or per (account, device) for a browser that has logged in to the
account before (its device cookie), with a growing delay after a few free attempts; so
guessing from one address neither locks out the other accounts behind the same proxy nor the
DSL at their own browser, who is never refused the right password because of someone else.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from collector.domain.vocabulary import LANGUAGES
from collector.services.audit import AuditLog
from collector.store.repos.console import ConsoleRepos

__all__ = [
    "CONTENT_ROLES",
    "PERMISSIONS",
    "ROLES",
    "SECOND_APPROVER_ROLES",
    "AccountsService",
    "AuthError",
    "BadInput",
    "LoginThrottled",
    "Refused",
    "Session",
    "User",
    "hash_password",
    "login_delay_ms",
]

ROLES = ("dsl", "deputy_dsl", "technician", "governor", "trust_admin", "dpo")
CONTENT_ROLES = frozenset({"dsl", "deputy_dsl"})  # the only roles that ever see capture content
#: Roles an account may have and still be named a four-eyes second approver (``user approver
#: --on``): a school with one DSL names its headteacher (a governor account) or the trust DSL
#: (a trust_admin account). Approving opens nothing to the approver: it lets the requesting
#: DSL see an illegal-imagery item's metadata for an hour.
SECOND_APPROVER_ROLES = frozenset({"governor", "trust_admin"})
#: One table decides who may do what; services and views ask ``user.can(permission)``.
PERMISSIONS: dict[str, frozenset[str]] = {
    "queue": CONTENT_ROLES,
    "capture": CONTENT_ROLES,
    "screenshot": CONTENT_ROLES,
    "approve": CONTENT_ROLES,
    "export": CONTENT_ROLES,
    "weekly": CONTENT_ROLES | {"trust_admin", "dpo"},
    "annual": CONTENT_ROLES | {"governor", "trust_admin", "dpo"},
    # who viewed, exported or changed what: the DSL and the data-protection officer
    "audit": frozenset({"dsl", "dpo"}),
    "devices": frozenset({"technician"}),
    "rule_stats": frozenset({"technician"}),
    "dashboard": CONTENT_ROLES | {"trust_admin"},   # counts and charts, never content
    "trust": frozenset({"trust_admin"}),            # schools side by side
    "tokens": frozenset({"technician"}),            # create and revoke enrolment tokens
}
SESSION_IDLE_MS = 30 * 60 * 1000
SESSION_MAX_MS = 12 * 3600 * 1000
DEVICE_COOKIE_MS = 180 * 24 * 3600 * 1000
#: Failures allowed per (account, address or device) before delays start.
FREE_FAILURES = 5
FIRST_DELAY_MS = 60 * 1000                # doubles with every further failure ...
MAX_DELAY_MS = 15 * 60 * 1000             # ... up to this
LOGIN_MEMORY_MS = 24 * 3600 * 1000        # failures older than this no longer count
MIN_PASSWORD_LEN = 12

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not-a-real-password-used-for-timing")


class AuthError(Exception):
    """A login or account problem, with a message fit to show (it never says which part failed)."""


class LoginThrottled(AuthError):
    """Too many failed log-ins for this account from this address or browser; wait."""


class Refused(Exception):
    """The user may not do this. ``status`` is the HTTP status to answer with (403 or 404:
    another site's things are "not found", never "forbidden", so their existence is not told)."""

    def __init__(self, status: int, reason: str, site_id: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.site_id = site_id


class BadInput(ValueError):
    """A value the service does not accept; the message names the field and what to do."""


@dataclass(frozen=True)
class User:
    username: str
    display_name: str
    email: str
    role: str
    sites: tuple[str, ...]
    second_approver: bool = False   # named four-eyes second person (SECOND_APPROVER_ROLES)
    language: str = "en"            # the console's language for this account (LANGUAGES)

    def can(self, permission: str) -> bool:
        if permission == "approve" and self.second_approver:
            return True
        return self.role in PERMISSIONS.get(permission, frozenset())

    @property
    def all_sites(self) -> bool:
        return "*" in self.sites

    def has_site(self, site_id: str) -> bool:
        return self.all_sites or site_id in self.sites


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    expires_at: int


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _user(row: dict[str, Any]) -> User:
    sites = json.loads(row["sites"] or "[]")
    return User(row["username"], row["display_name"], row["email"], row["role"],
                tuple(str(s) for s in sites),
                second_approver=bool(row.get("second_approver")) and
                row["role"] in SECOND_APPROVER_ROLES,
                language=str(row.get("language") or "en"))


def login_delay_ms(failures: int) -> int:
    """How long after the latest failure the next attempt must wait."""
    if failures < FREE_FAILURES:
        return 0
    return int(min(FIRST_DELAY_MS * 2 ** (failures - FREE_FAILURES), MAX_DELAY_MS))


def _wait_text(ms: int) -> str:
    minutes = -(-ms // 60_000)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


class AccountsService:
    """Accounts over a store with the console repositories; ``clock`` returns seconds."""

    def __init__(self, store: ConsoleRepos, clock: Callable[[], float],
                 audit: AuditLog | None = None) -> None:
        self.store = store
        self.clock = clock
        self.audit = audit or AuditLog(store, clock)

    def _now(self) -> int:
        return int(self.clock() * 1000)

    # -- authorisation --------------------------------------------------------------------
    def sites_of(self, user: User) -> list[str]:
        """The site ids a user reaches ('*' = every site)."""
        return self.store.site_ids() if user.all_sites else list(user.sites)

    def wales_sites(self) -> list[str]:
        """The ids of the sites in Wales (their lead is the Designated Safeguarding Person)."""
        return self.store.wales_site_ids()

    def require(self, user: User, permission: str, site_id: str | None = None) -> None:
        """Raise Refused unless the user's role has ``permission`` (and reaches ``site_id``)."""
        if site_id is not None and not user.has_site(site_id):
            raise Refused(404, "belongs to another site", site_id)
        if not user.can(permission):
            raise Refused(403, f"role {user.role} may not {permission}", site_id)

    def scope(self, user: User, site: str = "") -> list[str]:
        """The user's sites, or just ``site`` when given (Refused 404 if it is not theirs)."""
        sites = self.sites_of(user)
        if site:
            if site not in sites:
                raise Refused(404, "site not yours", site)
            return [site]
        return sites

    # -- log-in ---------------------------------------------------------------------------
    def authenticate(self, username: str, password: str, ip: str,
                     device_token: str | None = None) -> User:
        """Check a password under throttling; records the attempt.

        ``device_token`` is the browser's device cookie: when it has logged in to this account
        before, failures are counted for that browser alone, so nobody else's guessing can
        delay it. Raises LoginThrottled (nothing checked, nothing recorded) or AuthError."""
        now = self._now()
        device = _digest(device_token) if device_token else ""
        known = bool(device) and self.store.known_device(device, username,
                                                         now - DEVICE_COOKIE_MS)
        key = f"device:{device}" if known else f"ip:{ip}"
        failures, latest = self.store.login_failures(username, key, now - LOGIN_MEMORY_MS)
        wait = login_delay_ms(failures)
        if wait and latest is not None and now < latest + wait:
            raise LoginThrottled("Too many failed log-in attempts. Wait "
                                 f"{_wait_text(latest + wait - now)} and try again.")
        row = self.store.account_row(username)
        ok = False
        try:
            ok = _hasher.verify(row["password_hash"] if row else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            ok = False
        ok = ok and row is not None
        self.store.record_login_attempt(at=now, username=username, ip=ip, throttle_key=key,
                                        ok=ok)
        if not ok or row is None:
            raise AuthError("Wrong username or password.")
        return _user(row)

    def start_session(self, user: User, ip: str,
                      device_token: str | None = None) -> tuple[str, str]:
        """Start a session after a successful log-in and remember the browser.

        Returns (session cookie value, device cookie value); only their hashes are stored."""
        now = self._now()
        token = secrets.token_urlsafe(32)
        device_token = device_token or secrets.token_urlsafe(32)
        with self.store.atomic():
            # housekeeping keeps the tables small
            self.store.prune_sessions(now, now - SESSION_IDLE_MS)
            self.store.prune_login_attempts(now - LOGIN_MEMORY_MS)
            self.store.prune_known_devices(now - DEVICE_COOKIE_MS)
            self.store.add_session(token_hash=_digest(token), username=user.username,
                                   csrf=secrets.token_urlsafe(32), ip=ip, now_ms=now,
                                   expires_at=now + SESSION_MAX_MS)
            self.store.add_known_device(_digest(device_token), user.username, now)
        return token, device_token

    def session(self, token: str | None) -> Session | None:
        """The live session for a cookie value, sliding its idle timer; None if absent or
        expired (or its account was disabled)."""
        if not token:
            return None
        now = self._now()
        th = _digest(token)
        row = self.store.session_row(th)
        if row is None:
            return None
        if now >= row["expires_at"] or now - row["last_seen_at"] > SESSION_IDLE_MS:
            self.store.delete_session(th)
            return None
        account = self.store.account_row(row["username"])
        if account is None:
            return None
        if now - row["last_seen_at"] > 60_000:
            self.store.touch_session(th, now)
        return Session(_user(account), row["csrf"], row["expires_at"])

    def end_session(self, token: str | None) -> None:
        """Log out: forget the session behind this cookie value."""
        if token:
            self.store.delete_session(_digest(token))

    # -- account administration (CLI) -----------------------------------------------------
    def _check_password(self, password: str) -> None:
        if len(password) < MIN_PASSWORD_LEN:
            raise AuthError(f"password: at least {MIN_PASSWORD_LEN} characters, please")

    def create_user(self, *, actor: str, username: str, role: str, sites: list[str],
                    password: str, display_name: str = "", email: str = "") -> User:
        """Create an account; raises AuthError naming the bad field. Audited."""
        if role not in ROLES:
            raise AuthError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if not username or not username.replace(".", "").replace("-", "").replace(
                "_", "").isalnum():
            raise AuthError(f"username {username!r}: use letters, digits, '.', '-' or '_'")
        self._check_password(password)
        if not sites:
            raise AuthError("--site: give at least one site (or '*' for a trust admin)")
        if "*" in sites and role != "trust_admin":
            raise AuthError("--site '*' (every site) is only for the trust_admin role")
        if role not in ("trust_admin", "dpo") and len(sites) > 1:
            raise AuthError(f"role {role} belongs to one site; only trust_admin and dpo "
                            "have several")
        known = set(self.store.site_ids())
        for site in sites:
            if site != "*" and site not in known:
                raise AuthError(
                    f"--site {site!r} does not exist; known sites: "
                    f"{', '.join(sorted(known)) or '(none: run vigil-collector init)'}")
        now = self._now()
        user = User(username, display_name or username, email, role, tuple(sites))
        with self.store.atomic():
            if self.store.account_taken(username):
                raise AuthError(f"user {username!r} already exists")
            self.store.add_account(username=username, display_name=user.display_name,
                                   email=email, password_hash=hash_password(password),
                                   role=role, sites=sites, now_ms=now)
            self.audit.record(actor, "user.create", f"user:{username}",
                              sites[0] if len(sites) == 1 and sites[0] != "*" else None,
                              now_ms=now, role=role, sites=sites)
        return user

    def list_users(self, *, actor: str) -> list[dict[str, Any]]:
        """Every account (never a password hash), by username. Audited."""
        rows = []
        for r in self.store.account_list():
            sites = json.loads(r["sites"] or "[]")
            rows.append({**r, "sites": [str(s) for s in sites],
                         "disabled": r["disabled_at"] is not None})
        self.audit.record(actor, "user.list", "", None, shown=len(rows))
        return rows

    def set_second_approver(self, *, actor: str, username: str, on: bool) -> None:
        """Name (or stop naming) an account as a four-eyes second approver for its sites.
        Only SECOND_APPROVER_ROLES accounts take the flag (DSLs and deputies approve anyway).
        Audited."""
        row = self.store.account_row(username)
        if row is None:
            raise AuthError(f"user {username!r} does not exist or is disabled; "
                            "see 'vigil-collector user list'")
        if on and row["role"] not in SECOND_APPROVER_ROLES:
            allowed = ", ".join(sorted(SECOND_APPROVER_ROLES))
            raise AuthError(
                f"user {username!r} is a {row['role']}: only {allowed} accounts are named "
                "second approvers (DSLs and deputy DSLs approve already)")
        now = self._now()
        with self.store.atomic():
            self.store.set_second_approver_flag(username, on)
            self.audit.record(actor, "user.second_approver", f"user:{username}", None,
                              now_ms=now, on=on)

    def set_language(self, *, actor: str, username: str, language: str) -> None:
        """Set the language an account reads the console in ('en' or 'cy'). Audited."""
        if language not in LANGUAGES:
            raise AuthError(f"language {language!r} is not one of {', '.join(LANGUAGES)}")
        now = self._now()
        with self.store.atomic():
            if not self.store.set_language(username, language):
                raise AuthError(f"user {username!r} does not exist or is disabled; "
                                "see 'vigil-collector user list'")
            self.audit.record(actor, "user.language", f"user:{username}", None,
                              now_ms=now, language=language)

    def reset_password(self, *, actor: str, username: str, password: str) -> int:
        """Give an enabled account a new password and end its sessions (a lost or leaked
        password must not keep a browser logged in). Returns the sessions ended. Audited."""
        self._check_password(password)
        now = self._now()
        with self.store.atomic():
            if not self.store.set_password_hash(username, hash_password(password)):
                raise AuthError(f"user {username!r} does not exist or is disabled; "
                                "see 'vigil-collector user list'")
            ended = self.store.delete_sessions_of(username)
            self.audit.record(actor, "user.reset_password", f"user:{username}", None,
                              now_ms=now, sessions_ended=ended)
        return ended
