"""Rule publishing for technicians: validate, compile, sign, store as the active version.

The running server notices the new active version and pushes it (see collector.fanout).
A rollback never re-activates an old version number (agents refuse to go backwards); it
re-signs the previous rules AND the previous model reference as a NEW version whose note says
``rollback:<version>``.

A bundle may name a model artefact (signed reference only; the files are copied into the
data dir by digest, see collector.artefacts, before the bundle is stored). Which model a
publish names (:data:`ModelChoice`): a folder; ``"none"``; or ``"current"``, the active
bundle's model, else the scorer shipped with Vigil if this install has it. A rule-only
publish therefore names the same digest and agents download nothing.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import rules
from collector.artefacts import ArtefactStore
from collector.store.base import RuleVersion, Store
from rules.artefact import ArtefactError, ModelRef

__all__ = [
    "ModelChoice",
    "Published",
    "RulesAdminError",
    "RulesFeed",
    "ensure_signing_key",
    "public_key_path",
    "publish",
    "rollback",
    "shipped_model",
]

#: A folder, no model, or "the current one" (see the module docstring).
ModelChoice = Path | Literal["current", "none"]


@dataclass(frozen=True)
class Published:
    """A stored rule version and the model reference its bundle signs (None: no model)."""

    version: RuleVersion
    model: ModelRef | None


def shipped_model() -> Path | None:
    """The scorer artefact shipped in this install's ``rules`` package, if it is there."""
    from rules.scorer import DEFAULT_MODEL

    return DEFAULT_MODEL if (DEFAULT_MODEL / "manifest.json").is_file() else None


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


def _bundle_model(data_dir: Path, rv: RuleVersion | None) -> ModelRef | None:
    if rv is None or not rv.bundle:
        return None
    _, pub = _key_paths(data_dir)
    return rules.load_bundle(rv.bundle, pub.read_bytes())[1].model


def _sign_and_store(store: Store, data_dir: Path, ruleset: rules.RuleSet, actor: str,
                    note: str, now_ms: int, model: ModelRef | None,
                    keep_models: int) -> Published:
    priv, pub = _key_paths(data_dir)
    if not priv.exists():
        raise RulesAdminError(f"{priv}: no rule-signing key; run `vigil-collector init` first")
    artefacts = ArtefactStore(data_dir)
    if model is not None:
        if not artefacts.has(model.digest):
            raise RulesAdminError(
                f"model {model.name} {model.version} ({model.digest[:12]}) is no longer kept "
                "in the data dir (retention model_artefacts); publish with --model DIR")
        artefacts.touch(model.digest, now_ms)
    version = store.next_rule_version()
    bundle = rules.compile_bundle(ruleset, priv.read_bytes(), version, model=model)
    _, info = rules.load_bundle(bundle, pub.read_bytes())  # prove it verifies before storing
    store.add_rule_version(version, info.content_hash, bundle, actor, note, now_ms)
    rv = store.active_rule_version()
    assert rv is not None
    store.audit(actor, "rules.publish", f"v{version}", None,
                {"version": version, "content_hash": info.content_hash, "note": note,
                 "rules": len(ruleset.rules),
                 "model": model.to_dict() | {"files": len(model.files)} if model else None},
                now_ms)
    artefacts.prune(keep_models, model.digest if model else None)
    return Published(rv, model)


def _choose_model(store: Store, data_dir: Path, choice: ModelChoice,
                  now_ms: int) -> ModelRef | None:
    if choice == "none":
        return None
    artefacts = ArtefactStore(data_dir)
    if choice == "current":
        current = _bundle_model(data_dir, store.active_rule_version())
        if current is not None and artefacts.has(current.digest):
            return current
        folder = shipped_model()
        if folder is None:
            return None
    else:
        folder = choice
    try:
        return artefacts.add(folder, now_ms)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            # nothing is half-published: the temporary copy is gone and no bundle is stored
            raise RulesAdminError(
                f"model artefact {folder} cannot be published: no space left under "
                f"{artefacts.root}; free some space and run again, or publish with "
                "--no-model (agents then run on rules alone)") from None
        raise RulesAdminError(f"model artefact {folder} cannot be published: {exc}") from None
    except ArtefactError as exc:
        raise RulesAdminError(f"model artefact {folder} cannot be published: {exc}") from None


def publish(store: Store, data_dir: Path, rules_dir: Path, actor: str, now_ms: int,
            note: str = "", model: ModelChoice = "current", keep_models: int = 0) -> Published:
    """Raises rules.RuleError (naming file/line/rule) when the rule files are invalid."""
    ruleset = rules.load_library(rules_dir)
    ref = _choose_model(store, data_dir, model, now_ms)
    return _sign_and_store(store, data_dir, ruleset, actor, note or f"published {rules_dir}",
                           now_ms, ref, keep_models)


def rollback(store: Store, data_dir: Path, actor: str, now_ms: int,
             keep_models: int = 0) -> Published:
    """Re-sign the version before the effective one (rules and model) as a new version."""
    active = store.active_rule_version()
    if active is None:
        raise RulesAdminError("no rules have been published yet; nothing to roll back")
    effective = active.version
    if active.note.startswith("rollback:"):
        effective = int(active.note.split(":", 1)[1].split()[0])
    active_model = _bundle_model(data_dir, active)
    now = (active.content_hash, active_model.digest if active_model else None)
    # newest first: the first earlier version whose rules or model differ from the active one
    for v in reversed(store.list_rule_versions()):
        if v.version >= effective:
            continue
        target = store.get_rule_version(v.version)
        assert target is not None
        _, pub = _key_paths(data_dir)
        ruleset, info = rules.load_bundle(target.bundle, pub.read_bytes())
        if (info.content_hash, info.model.digest if info.model else None) != now:
            return _sign_and_store(store, data_dir, ruleset, actor,
                                   f"rollback:{target.version}", now_ms, info.model,
                                   keep_models)
    raise RulesAdminError(f"version {active.version} has no earlier version to roll back to")


def versions(store: Store, actor: str, now_ms: int) -> list[RuleVersion]:
    """Every published version (oldest first), the listing audited."""
    store.audit(actor, "rules.list", "", None, {}, now_ms)
    return store.list_rule_versions()


def has_published(store: Store) -> bool:
    return store.active_rule_version_number() > 0


class RulesFeed:
    """What the running server reads to push rules and to close revoked streams: the active
    version (its number cheaply, for the poll), the bundles it has not learnt yet, and the
    devices revoked since a moment. Read-only; publishing is :func:`publish`/:func:`rollback`.
    The gRPC adapter (collector.server) reads the store through this, not directly."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def active(self) -> RuleVersion | None:
        return self._store.active_rule_version()

    def active_number(self) -> int:
        """0 when nothing is published."""
        return self._store.active_rule_version_number()

    def unlearnt(self, known: Container[int]) -> list[RuleVersion]:
        """Every published version not in *known*, with its bundle (bundles are immutable,
        so a version once learnt never needs reading again)."""
        out = []
        for rv in self._store.list_rule_versions():
            if rv.version not in known:
                full = self._store.get_rule_version(rv.version)
                if full is not None:
                    out.append(full)
        return out

    def revoked_since(self, since_ms: int) -> list[str]:
        """Device ids revoked at or after *since_ms*."""
        return self._store.revoked_since(since_ms)
