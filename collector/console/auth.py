"""Accounts, roles, server-side sessions and login rate limiting (plain functions)."""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "CONTENT_ROLES",
    "PERMISSIONS",
    "ROLES",
    "AuthError",
    "LoginThrottled",
    "Session",
    "User",
    "authenticate",
    "create_session",
    "create_user",
    "destroy_session",
    "hash_password",
    "load_session",
    "load_user",
]

ROLES = ("dsl", "deputy_dsl", "technician", "governor", "trust_admin")
CONTENT_ROLES = frozenset({"dsl", "deputy_dsl"})  # the only roles that ever see capture content
# One table decides who may do what; views ask ``user.can(permission)``.
PERMISSIONS: dict[str, frozenset[str]] = {
    "queue": CONTENT_ROLES,
    "capture": CONTENT_ROLES,
    "screenshot": CONTENT_ROLES,
    "approve": CONTENT_ROLES,
    "export": CONTENT_ROLES,
    "weekly": CONTENT_ROLES | {"trust_admin"},
    "annual": CONTENT_ROLES | {"governor", "trust_admin"},
    "devices": frozenset({"technician"}),
    "rule_stats": frozenset({"technician"}),
}
SESSION_IDLE_MS = 30 * 60 * 1000
SESSION_MAX_MS = 12 * 3600 * 1000
LOGIN_WINDOW_MS = 15 * 60 * 1000
MAX_FAILS_PER_USER = 5
MAX_FAILS_PER_IP = 20
MIN_PASSWORD_LEN = 12

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not-a-real-password-used-for-timing")


class AuthError(Exception):
    """A login or account problem, with a message fit to show (it never says which part failed)."""


class LoginThrottled(AuthError):
    """Too many failed log-ins for this account or address; try again later."""


@dataclass(frozen=True)
class User:
    username: str
    display_name: str
    email: str
    role: str
    sites: tuple[str, ...]

    def can(self, permission: str) -> bool:
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


def _row_to_user(row: sqlite3.Row) -> User:
    sites = json.loads(row["sites"] or "[]")
    return User(row["username"], row["display_name"], row["email"], row["role"],
                tuple(str(s) for s in sites))


def load_user(conn: sqlite3.Connection, username: str) -> User | None:
    row = conn.execute(
        "SELECT * FROM users WHERE username = ? AND disabled_at IS NULL", (username,)
    ).fetchone()
    return _row_to_user(row) if row else None


def create_user(conn: sqlite3.Connection, *, username: str, role: str, sites: list[str],
                password: str, now_ms: int, display_name: str = "", email: str = "") -> User:
    """Create an account; raises AuthError naming the bad field."""
    if role not in ROLES:
        raise AuthError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if not username or not username.replace(".", "").replace("-", "").replace("_", "").isalnum():
        raise AuthError(f"username {username!r}: use letters, digits, '.', '-' or '_'")
    if len(password) < MIN_PASSWORD_LEN:
        raise AuthError(f"password: at least {MIN_PASSWORD_LEN} characters, please")
    if not sites:
        raise AuthError("--site: give at least one site (or '*' for a trust admin)")
    if "*" in sites and role != "trust_admin":
        raise AuthError("--site '*' (every site) is only for the trust_admin role")
    if role != "trust_admin" and len(sites) > 1:
        raise AuthError(f"role {role} belongs to one site; only trust_admin has several")
    known = {r[0] for r in conn.execute("SELECT id FROM sites")}
    for site in sites:
        if site != "*" and site not in known:
            raise AuthError(f"--site {site!r} does not exist; known sites: "
                            f"{', '.join(sorted(known)) or '(none: run vigil-collector init)'}")
    if conn.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
        raise AuthError(f"user {username!r} already exists")
    conn.execute(
        "INSERT INTO users (username, display_name, email, password_hash, role, sites, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (username, display_name or username, email, hash_password(password), role,
         json.dumps(sites), now_ms),
    )
    return User(username, display_name or username, email, role, tuple(sites))


def _recent_failures(conn: sqlite3.Connection, column: str, value: str, now_ms: int) -> int:
    row = conn.execute(
        f"SELECT count(*) FROM console_login_attempts WHERE {column} = ? AND at > ? AND ok = 0",
        (value, now_ms - LOGIN_WINDOW_MS),
    ).fetchone()
    return int(row[0])


def authenticate(conn: sqlite3.Connection, username: str, password: str, ip: str,
                 now_ms: int) -> User:
    """Check a password with rate limiting; records the attempt. Raises AuthError/LoginThrottled."""
    if (_recent_failures(conn, "username", username, now_ms) >= MAX_FAILS_PER_USER
            or _recent_failures(conn, "ip", ip, now_ms) >= MAX_FAILS_PER_IP):
        raise LoginThrottled("Too many failed log-in attempts. Wait 15 minutes and try again.")
    row = conn.execute(
        "SELECT * FROM users WHERE username = ? AND disabled_at IS NULL", (username,)
    ).fetchone()
    ok = False
    try:
        ok = _hasher.verify(row["password_hash"] if row else _DUMMY_HASH, password) and bool(row)
    except (VerificationError, InvalidHashError):
        ok = False
    conn.execute(
        "INSERT INTO console_login_attempts (at, username, ip, ok) VALUES (?, ?, ?, ?)",
        (now_ms, username, ip, int(ok)),
    )
    if not ok or row is None:
        raise AuthError("Wrong username or password.")
    return _row_to_user(row)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_session(conn: sqlite3.Connection, user: User, ip: str, now_ms: int) -> str:
    """Start a session; returns the secret cookie value (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    # housekeeping: forget lapsed sessions and old attempts (keeps both tables small)
    conn.execute("DELETE FROM console_sessions WHERE expires_at <= ? OR last_seen_at < ?",
                 (now_ms, now_ms - SESSION_IDLE_MS))
    conn.execute("DELETE FROM console_login_attempts WHERE at < ?", (now_ms - 24 * 3600_000,))
    conn.execute(
        "INSERT INTO console_sessions (token_hash, username, csrf, ip, created_at, last_seen_at, "
        "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (_token_hash(token), user.username, secrets.token_urlsafe(32), ip, now_ms, now_ms,
         now_ms + SESSION_MAX_MS),
    )
    return token


def load_session(conn: sqlite3.Connection, token: str | None, now_ms: int) -> Session | None:
    """The live session for a cookie value, sliding its idle timer; None if absent/expired."""
    if not token:
        return None
    th = _token_hash(token)
    row = conn.execute("SELECT * FROM console_sessions WHERE token_hash = ?", (th,)).fetchone()
    if row is None:
        return None
    if now_ms >= row["expires_at"] or now_ms - row["last_seen_at"] > SESSION_IDLE_MS:
        conn.execute("DELETE FROM console_sessions WHERE token_hash = ?", (th,))
        return None
    user = load_user(conn, row["username"])
    if user is None:
        return None
    if now_ms - row["last_seen_at"] > 60_000:
        conn.execute("UPDATE console_sessions SET last_seen_at = ? WHERE token_hash = ?",
                     (now_ms, th))
    return Session(user, row["csrf"], row["expires_at"])


def destroy_session(conn: sqlite3.Connection, token: str | None) -> None:
    if token:
        conn.execute("DELETE FROM console_sessions WHERE token_hash = ?", (_token_hash(token),))
