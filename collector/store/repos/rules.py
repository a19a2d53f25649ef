"""Published rule versions (signed bundles) and each device's acknowledgements."""

from __future__ import annotations

from typing import Any

from collector.store.base import RulesAckRow, RuleVersion
from collector.store.sql import Db

__all__ = ["RulesRepo"]


def _rv(r: dict[str, Any], with_bundle: bool) -> RuleVersion:
    return RuleVersion(r["version"], r["content_hash"], r["created_at"], r["published_by"],
                       bool(r["active"]), r["note"], bytes(r["bundle"]) if with_bundle else b"")


class RulesRepo:
    db: Db

    def rules_published(self, version: int) -> None:
        """Backend hook, called inside the publishing transaction (PostgreSQL: NOTIFY)."""

    def next_rule_version(self) -> int:
        return int(self.db.scalar("SELECT COALESCE(MAX(version), 0) FROM rule_versions")) + 1

    def add_rule_version(self, version: int, content_hash: str, bundle: bytes,
                         published_by: str, note: str, now_ms: int) -> None:
        """Store a signed bundle and make it the one active version."""
        with self.db.transaction():
            self.db.execute("UPDATE rule_versions SET active = 0 WHERE active = 1")
            self.db.execute(
                "INSERT INTO rule_versions (version, content_hash, bundle, created_at, "
                "published_by, active, note) VALUES (?,?,?,?,?,1,?)",
                (version, content_hash, bundle, now_ms, published_by, note))
            self.rules_published(version)

    def active_rule_version(self) -> RuleVersion | None:
        r = self.db.one("SELECT * FROM rule_versions WHERE active = 1")
        return _rv(r, True) if r else None

    def active_rule_version_number(self) -> int:
        """0 when nothing is published. Cheap: what ``serve`` checks."""
        v = self.db.scalar("SELECT version FROM rule_versions WHERE active = 1")
        return int(v) if v is not None else 0

    def list_rule_versions(self) -> list[RuleVersion]:
        return [_rv(r, False) for r in self.db.rows(
            "SELECT version, content_hash, created_at, published_by, active, note "
            "FROM rule_versions ORDER BY version")]

    def get_rule_version(self, version: int) -> RuleVersion | None:
        r = self.db.one("SELECT * FROM rule_versions WHERE version = ?", (version,))
        return _rv(r, True) if r else None

    def rules_acks(self, device_id: str) -> list[RulesAckRow]:
        """What this device said about each version it was sent."""
        return [RulesAckRow(r["device_id"], r["version"], bool(r["applied"]), r["error"], r["at"])
                for r in self.db.rows("SELECT * FROM rules_acks WHERE device_id = ? "
                                      "ORDER BY version", (device_id,))]
