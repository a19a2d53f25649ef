"""Model artefacts the collector published, kept under its data dir by content digest.

Layout::

    <data dir>/models/<digest>/<file>     one folder per published artefact (never edited)
    <data dir>/models/published.json      {digest: last published, unix ms}

``rules publish`` copies an artefact in (through a temporary folder, verified, then renamed,
so ``serve`` never sees half an artefact) before it stores the bundle that names it.
``serve`` hands out files only from here (``Collector.FetchModel``), and only to as many
agents at once as :class:`FetchLimit` allows. Pruning keeps the active artefact and the most
recently published ones (retention ``model_artefacts``; never fewer than 3), so a rollback
finds its model still here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from rules.artefact import ArtefactError, ModelRef, artefact_digest, model_ref, safe_file_name

__all__ = ["MIN_KEPT", "ArtefactStore", "FetchLimit"]

log = logging.getLogger(__name__)

#: Published artefacts kept whatever the retention setting says (rollback needs them).
MIN_KEPT = 3


def _is_digest(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


class ArtefactStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "models"
        self._index = self.root / "published.json"

    def add(self, folder: Path, now_ms: int) -> ModelRef:
        """Copy the artefact in ``folder`` in (once per digest) and mark it published now."""
        ref = model_ref(folder)
        dest = self.root / ref.digest
        if not (dest.is_dir() and artefact_digest(dest)[0] == ref.digest):
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
            try:
                for name in ref.files:
                    shutil.copyfile(folder / name, tmp / name)
                if artefact_digest(tmp)[0] != ref.digest:
                    raise ArtefactError(f"{folder}: the files changed while they were copied; "
                                        "publish again")
                if dest.exists():
                    shutil.rmtree(dest)  # a damaged copy of the same digest
                os.replace(tmp, dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        self.touch(ref.digest, now_ms)
        return ref

    def touch(self, digest: str, now_ms: int) -> None:
        index = self.published()
        index[digest] = now_ms
        self._write_index(index)

    def _write_index(self, index: dict[str, int]) -> None:
        tmp = self._index.with_name(self._index.name + ".tmp")
        tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
        os.replace(tmp, self._index)

    def published(self) -> dict[str, int]:
        try:
            raw = json.loads(self._index.read_text())
        except (OSError, ValueError):
            return {}
        return {k: int(v) for k, v in raw.items() if isinstance(v, int)} \
            if isinstance(raw, dict) else {}

    def has(self, digest: str) -> bool:
        return _is_digest(digest) and (self.root / digest).is_dir()

    def file(self, digest: str, name: str) -> Path | None:
        """The path of one file of a published artefact, or None (never outside it)."""
        if not self.has(digest) or not safe_file_name(name):
            return None
        path = self.root / digest / name
        return path if path.is_file() else None

    def prune(self, keep_last: int, active: str | None) -> list[str]:
        """Delete artefacts beyond the ``keep_last`` most recently published (0 = keep all;
        never fewer than :data:`MIN_KEPT`); the active one always stays."""
        if not self.root.is_dir():
            return []
        for stale in self.root.glob(".incoming-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if keep_last <= 0:
            return []
        index = self.published()
        newest = sorted(index, key=lambda d: index[d], reverse=True)
        keep = set(newest[:max(MIN_KEPT, keep_last)]) | ({active} if active else set())
        gone = [p.name for p in self.root.iterdir()
                if p.is_dir() and _is_digest(p.name) and p.name not in keep]
        for digest in gone:
            shutil.rmtree(self.root / digest, ignore_errors=True)
            index.pop(digest, None)
            log.info("model artefact %s pruned (retention model_artefacts)", digest[:12])
        if gone:
            self._write_index(index)
        return gone


class FetchLimit:
    """How many model downloads run at once. One event loop: no lock is needed."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.active = self.peak = self.refused = 0

    def try_acquire(self) -> bool:
        if self.active >= self.limit:
            self.refused += 1
            return False
        self.active += 1
        self.peak = max(self.peak, self.active)
        return True

    def release(self) -> None:
        self.active -= 1
