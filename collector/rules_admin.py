"""Rule publishing for technicians: validate, compile, sign, store as the active version.

The running server notices the new active version and pushes it (see collector.fanout).
A rollback never re-activates an old version number (agents refuse to go backwards); it
re-signs the previous rules as a NEW version whose note says ``rollback:<version>``.
"""

from __future__ import annotations

import os
from pathlib import Path

import rules
from collector.store.base import RuleVersion, Store

__all__ = ["RulesAdminError", "ensure_signing_key", "public_key_path", "publish", "rollback"]


class RulesAdminError(Exception):
    """A publish or rollback cannot be done (the message says why and what to do)."""


def _key_paths(data_dir: Path) -> tuple[Path, Path]:
    return data_dir / "rules" / "signing-key.pem", data_dir / "rules" / "signing-public.pem"


def public_key_path(data_dir: Path) -> Path:
    return _key_paths(data_dir)[1]


def ensure_signing_key(data_dir: Path) -> bool:
    priv, pub = _key_paths(data_dir)
    if priv.exists() and pub.exists():
        return False
    priv.parent.mkdir(parents=True, exist_ok=True)
    private_pem, public_pem = rules.generate_signing_key()
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    pub.write_bytes(public_pem)
    return True


def _sign_and_store(store: Store, data_dir: Path, ruleset: rules.RuleSet, actor: str,
                    note: str, now_ms: int) -> RuleVersion:
    priv, pub = _key_paths(data_dir)
    if not priv.exists():
        raise RulesAdminError(f"{priv}: no rule-signing key; run `vigil-collector init` first")
    version = store.next_rule_version()
    bundle = rules.compile_bundle(ruleset, priv.read_bytes(), version)
    _, info = rules.load_bundle(bundle, pub.read_bytes())  # prove it verifies before storing
    store.add_rule_version(version, info.content_hash, bundle, actor, note, now_ms)
    rv = store.active_rule_version()
    assert rv is not None
    store.audit(actor, "rules.publish", f"v{version}", None,
                {"version": version, "content_hash": info.content_hash, "note": note,
                 "rules": len(ruleset.rules)}, now_ms)
    return rv


def publish(store: Store, data_dir: Path, rules_dir: Path, actor: str, now_ms: int,
            note: str = "") -> RuleVersion:
    """Raises rules.RuleError (naming file/line/rule) when the rule files are invalid."""
    ruleset = rules.load_library(rules_dir)
    return _sign_and_store(store, data_dir, ruleset, actor, note or f"published {rules_dir}",
                           now_ms)


def rollback(store: Store, data_dir: Path, actor: str, now_ms: int) -> RuleVersion:
    active = store.active_rule_version()
    if active is None:
        raise RulesAdminError("no rules have been published yet; nothing to roll back")
    effective = active.version
    if active.note.startswith("rollback:"):
        effective = int(active.note.split(":", 1)[1].split()[0])
    older = [v for v in store.list_rule_versions()
             if v.version < effective and v.content_hash != active.content_hash]
    if not older:
        raise RulesAdminError(f"version {active.version} has no earlier version to roll back to")
    target = store.get_rule_version(older[-1].version)
    assert target is not None
    _, pub = _key_paths(data_dir)
    ruleset, _ = rules.load_bundle(target.bundle, pub.read_bytes())
    return _sign_and_store(store, data_dir, ruleset, actor, f"rollback:{target.version}", now_ms)
