"""The store interface every backend implements (SQLite now, PostgreSQL later).

The store is split per aggregate (audit, devices, captures/queue, rules, retention; the
console's accounts and casework in collector/store/repos/console.py). Only the services layer
(collector/services/) calls it; the shared test suite in tests/collector/store_suite.py runs
against every backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from collector.domain.triage import Exemption, Key, OpenItem, PlannedItem, UserHistory

__all__ = [
    "AlertRow",
    "AuditRepository",
    "CaptureRepository",
    "DeviceExists",
    "DeviceRepository",
    "DeviceRow",
    "Heartbeat",
    "IngestResult",
    "NewCapture",
    "PurgePolicy",
    "PurgeReport",
    "QueueItemRow",
    "RetentionRepository",
    "RuleRepository",
    "RuleVersion",
    "RulesAckRow",
    "SiteRow",
    "SourceHealth",
    "Store",
    "StoreBusy",
    "StoreError",
    "TokenError",
    "TokenInfo",
]


class StoreError(Exception):
    """Base class for store errors."""


class StoreBusy(StoreError):
    """The store cannot take writes right now (locked, disk full); retry later."""


class TokenError(StoreError):
    """An enrolment token cannot be used. ``reason``: unknown|expired|revoked|used_up."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"enrolment token {reason.replace('_', ' ')}")
        self.reason = reason


class DeviceExists(StoreError):
    """A device with this key is already enrolled; enrolment never replaces a device."""


@dataclass(frozen=True)
class SiteRow:
    id: str
    name: str
    dsl_contacts: list[str]
    webhook_url: str | None
    wales: bool = False   # a Welsh school: its lead is the Designated Safeguarding Person


@dataclass(frozen=True)
class TokenInfo:
    id: str
    site_id: str
    group_name: str
    max_uses: int
    uses: int
    expires_at: int
    revoked_at: int | None
    created_by: str
    created_at: int


@dataclass(frozen=True)
class DeviceRow:
    id: str
    site_id: str
    group_name: str
    age_band: str
    hostname: str
    os: str
    agent_version: str
    rules_version: int
    spool_depth: int
    spool_bytes: int
    drops: dict[str, int]
    last_user: str
    cert_serial: str
    enrolled_at: int
    last_seen_at: int | None
    revoked_at: int | None


@dataclass(slots=True)
class NewCapture:
    """A validated capture, ready to store (columns of the ``captures`` table)."""

    id: str
    device_id: str
    site_id: str
    group_name: str
    os_user: str
    hostname: str
    time_ms: int
    last_time_ms: int
    count: int
    source: str
    rule_id: str
    category: str
    severity: int
    match: str
    context: str
    window_title: str
    process: str
    match_kind: str
    media: str | None
    rules_version: int
    received_at: int
    screenshot: bytes | None = None  # plaintext PNG; the store encrypts it to a file
    reasons: str = "[]"  # JSON list of strings: why it fired
    score: float | None = None


@dataclass(frozen=True)
class SourceHealth:
    """One agent source's health as its latest heartbeat reported it (proto SourceHealth)."""

    name: str              # window | keys | media
    state: str             # running | restarting | failed | stopped
    last_event_ms: int     # 0: no event yet
    restarts: int
    error: str


@dataclass(frozen=True)
class Heartbeat:
    device_id: str
    at: int
    agent_version: str
    rules_version: int
    spool_depth: int
    spool_bytes: int
    drops: dict[str, int]
    os_user: str
    hostname: str
    os: str
    sources: tuple[SourceHealth, ...] = ()


@dataclass(frozen=True)
class RulesAckRow:
    device_id: str
    version: int
    applied: bool
    error: str
    at: int


@dataclass(frozen=True)
class QueueItemRow:
    id: int
    site_id: str
    device_id: str
    os_user: str
    rule_id: str
    category: str
    severity: int
    priority: int
    pinned: bool
    refer_police: bool
    status: str
    count: int
    first_time_ms: int
    last_time_ms: int
    created: bool = False  # True when this ingest created the item


@dataclass
class IngestResult:
    stored_ids: list[str] = field(default_factory=list)   # newly stored
    existing_ids: list[str] = field(default_factory=list)  # redelivered, already stored
    items: list[QueueItemRow] = field(default_factory=list)  # queue items created or updated
    # (capture id, device id) pairs NOT stored because another device already owns that id
    conflicts: set[tuple[str, str]] = field(default_factory=set)


@dataclass(frozen=True)
class RuleVersion:
    version: int
    content_hash: str
    created_at: int
    published_by: str
    active: bool
    note: str
    bundle: bytes = b""


@dataclass(frozen=True)
class AlertRow:
    id: int
    queue_item_id: int
    contact_index: int
    contact: str
    channel: str
    sent_at: int | None
    error: str | None
    acknowledged_at: int | None


@dataclass(frozen=True)
class PurgePolicy:
    false_positive_days: int = 30
    closed_days: int = 365
    audit_days: int = 7 * 365


@dataclass
class PurgeReport:
    queue_items: int = 0
    captures: int = 0
    screenshots: int = 0
    audit_rows: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue_items": self.queue_items, "captures": self.captures,
            "screenshots": self.screenshots, "audit_rows": self.audit_rows,
            "dry_run": self.dry_run,
        }


class AuditRepository(Protocol):
    """The append-only audit log: one writer, refusing capture content in ``detail``."""

    def audit(self, actor: str, action: str, target: str = "", site_id: str | None = None,
              detail: dict[str, Any] | None = None, now_ms: int | None = None) -> None: ...
    def audit_rows(self, action: str | None = None) -> list[dict[str, Any]]: ...


class DeviceRepository(Protocol):
    """Sites, groups, enrolment tokens and devices."""

    def ensure_site(self, site_id: str, name: str, now_ms: int) -> bool: ...
    def get_site(self, site_id: str) -> SiteRow | None: ...
    def set_site_contacts(
        self, site_id: str, contacts: Sequence[str], webhook_url: str | None
    ) -> None: ...
    def set_site_wales(self, site_id: str, wales: bool) -> int: ...
    def ensure_group(self, site_id: str, name: str, age_band: str) -> str: ...
    def create_token(self, site_id: str, group_name: str, max_uses: int, expires_at: int,
                     created_by: str, now_ms: int) -> tuple[TokenInfo, str]: ...
    def revoke_token(self, token_id: str, now_ms: int) -> bool: ...
    def list_tokens(self) -> list[TokenInfo]: ...
    def enrol_device(self, token_secret: str, device_id: str, hostname: str, os: str,
                     agent_version: str, cert_serial: str, now_ms: int) -> DeviceRow: ...
    def check_token(self, token_secret: str, now_ms: int) -> TokenInfo: ...
    def device_exists(self, device_id: str) -> bool: ...
    def get_device(self, device_id: str) -> DeviceRow | None: ...
    def list_devices(self, silent_since_ms: int | None = None) -> list[DeviceRow]: ...
    def revoke_device(self, device_id: str, now_ms: int) -> bool: ...
    def pupil_age_band(self, site_id: str, username: str) -> str | None: ...
    def revoked_since(self, since_ms: int) -> list[str]: ...


class CaptureRepository(Protocol):
    """Captures, the queue items they join, exemptions and alerts.

    The ``apply_*``/``insert_*``/``update_*`` primitives are one ingest batch's set-wise
    statements; :mod:`collector.services.ingest` calls them inside one ``transaction()``."""

    def apply_heartbeats(self, heartbeats: Sequence[Heartbeat]) -> None: ...
    def apply_rules_acks(self, acks: Sequence[RulesAckRow]) -> None: ...
    def capture_owners(self, capture_ids: Sequence[str]) -> dict[str, str]: ...
    def latest_items(self, keys: Iterable[Key]) -> dict[Key, OpenItem]: ...
    def user_history(self, pupils: Iterable[tuple[str, str]], since_ms: int
                     ) -> dict[tuple[str, str], UserHistory]: ...
    def active_exemptions(self, sites: Iterable[str], now_ms: int) -> list[Exemption]: ...
    def insert_queue_items(self, items: Sequence[PlannedItem], now_ms: int) -> list[int]: ...
    def update_queue_items(self, items: Sequence[PlannedItem], now_ms: int) -> None: ...
    def insert_captures(self, rows: Sequence[tuple[Any, ...]]) -> None: ...
    def capture_row(self, c: NewCapture, screenshot_path: str | None,
                    queue_item_id: int | None, exemption_id: int | None) -> tuple[Any, ...]: ...
    def queue_changed(self, item_ids: Sequence[int]) -> None: ...

    def get_queue_item(self, item_id: int) -> QueueItemRow | None: ...
    def set_queue_status(self, item_id: int, status: str, actor: str, now_ms: int) -> None: ...
    def capture_ids_for_item(self, item_id: int) -> list[str]: ...

    def add_exemption(self, kind: str, site_id: str, reason: str, created_by: str, now_ms: int,
                      group_name: str | None = None, rule_id: str | None = None,
                      category: str | None = None, starts_at: int | None = None,
                      expires_at: int | None = None) -> int: ...
    def remove_exemption(self, exemption_id: int, now_ms: int) -> bool: ...

    def record_alert(self, queue_item_id: int, contact_index: int, contact: str, channel: str,
                     sent_at: int | None, error: str | None) -> int: ...
    def alerts_for_item(self, queue_item_id: int) -> list[AlertRow]: ...
    def acknowledge_alerts(self, queue_item_id: int, by: str, now_ms: int) -> int: ...
    def unacknowledged_alerted_items(self) -> list[int]: ...


class RuleRepository(Protocol):
    """Signed rule bundles, the active version, and each device's acks."""

    def next_rule_version(self) -> int: ...
    def add_rule_version(self, version: int, content_hash: str, bundle: bytes,
                         published_by: str, note: str, now_ms: int) -> None: ...
    def active_rule_version(self) -> RuleVersion | None: ...
    def active_rule_version_number(self) -> int: ...
    def list_rule_versions(self) -> list[RuleVersion]: ...
    def get_rule_version(self, version: int) -> RuleVersion | None: ...
    def rules_acks(self, device_id: str) -> list[RulesAckRow]: ...


class RetentionRepository(Protocol):
    def purge(self, now_ms: int, policy: PurgePolicy, dry_run: bool = False) -> PurgeReport: ...


class Store(AuditRepository, DeviceRepository, CaptureRepository, RuleRepository,
            RetentionRepository, Protocol):
    """Everything the collector needs from its database. All times are ms since the epoch.

    Implemented once per backend by mixing the repositories of collector/store/repos/ over
    that backend's connection (SqliteStore, PostgresStore); the shared test suite in
    tests/collector/store_suite.py runs against each."""

    backend: str
    data_dir: Path

    def transaction(self) -> AbstractContextManager[Any]: ...
    def is_leader(self, job: str) -> bool: ...
    def maintain(self, now_ms: int | None = None) -> None: ...
    def close(self) -> None: ...
