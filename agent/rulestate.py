"""The active rule set, and how a new signed bundle replaces it.

Before the first bundle arrives the agent uses the default rule library shipped with it
(version 0). A bundle from the collector is applied only if it verifies against the rules
public key pinned at enrolment and is not older than the active version; it is then written
to disk as the last good bundle and swapped in by replacing one reference. A bad bundle
leaves the last good one in place and the error is reported.

A bundle may also name a model artefact (a signed ``rules.artefact.ModelRef``); model
listeners (``agent.modelfetch``) hear it after the rules are swapped, and fetch it in the
background, so a model never delays rule application.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rules.artefact import ModelRef

from .paths import DataDir

__all__ = ["ActiveRules"]

log = logging.getLogger(__name__)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class ActiveRules:
    """Holds the current ``rules.RuleSet`` and its version; notifies listeners on swap."""

    def __init__(self, data: DataDir, library: Path | None = None) -> None:
        self.data = data
        self.library = library
        self.ruleset: Any = None
        self.version = 0
        self.content_hash = ""
        self.last_error = ""
        #: The model the active bundle names (None: none named; the package's model).
        self.model: ModelRef | None = None
        self._listeners: list[Callable[[Any], None]] = []
        self._model_listeners: list[Callable[[ModelRef | None], None]] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Callable[[Any], None]) -> None:
        self._listeners.append(listener)

    def subscribe_model(self, listener: Callable[[ModelRef | None], None]) -> None:
        """Call ``listener(model)`` after each applied bundle (it must return quickly)."""
        self._model_listeners.append(listener)

    def load(self) -> ActiveRules:
        """Load the last good bundle if there is one, else the shipped library."""
        import rules

        if self.data.rules_bundle.exists() and self.data.rules_pub.exists():
            try:
                rs, info = rules.load_bundle(self.data.rules_bundle.read_bytes(),
                                             self.data.rules_pub.read_bytes())
                self._set(rs, int(info.version), str(info.content_hash), info.model)
                return self
            except rules.BundleError as exc:
                self.last_error = f"stored bundle unusable: {exc}"
                log.error("%s; falling back to the built-in library", self.last_error)
        rs = rules.load_library(self.library or rules.DEFAULT_LIBRARY)
        self._set(rs, 0, str(getattr(rs, "content_hash", "")), None)
        return self

    def apply_bundle(self, bundle: bytes) -> tuple[bool, str, int]:
        """Verify and apply *bundle*. Returns (applied, error, version)."""
        import rules

        if not self.data.rules_pub.exists():
            self.last_error = "no pinned rules public key (agent not enrolled)"
            return False, self.last_error, 0
        try:
            rs, info = rules.load_bundle(bundle, self.data.rules_pub.read_bytes(),
                                         min_version=self.version)
        except rules.BundleError as exc:
            self.last_error = str(exc)
            log.error("rule bundle rejected, keeping version %d: %s", self.version, exc)
            self._write_state()
            return False, self.last_error, 0
        version = int(info.version)
        _atomic_write(self.data.rules_bundle, bundle)
        self.last_error = ""
        self._set(rs, version, str(info.content_hash), info.model)
        log.info("rules version %d applied", version)
        return True, "", version

    def _set(self, rs: Any, version: int, content_hash: str, model: ModelRef | None) -> None:
        with self._lock:
            self.ruleset, self.version, self.content_hash = rs, version, content_hash
            self.model = model
        self._write_state()
        for listener in self._listeners:
            listener(rs)
        for model_listener in self._model_listeners:
            try:
                model_listener(model)
            except Exception:  # a model problem must never undo or block the rules
                log.exception("model listener failed for rules version %d", version)

    def _write_state(self) -> None:
        try:
            self.data.ensure()
            _atomic_write(self.data.rules_json, json.dumps({
                "version": self.version, "content_hash": self.content_hash,
                "rules": len(getattr(self.ruleset, "rules", ()) or ()),
                "model": ({"name": self.model.name, "version": self.model.version,
                           "digest": self.model.digest} if self.model else None),
                "last_error": self.last_error}).encode())
        except OSError as exc:
            log.warning("cannot write %s: %s", self.data.rules_json, exc)
