"""Where the agent keeps its files. One object, injected everywhere (STYLE.md: inject the world).

Layout of the data dir::

    device.json      device id, collector address, site, group (written at enrolment)
    device.key       P-256 private key, PEM, mode 0600
    device.crt       client certificate issued by the collector's CA
    ca.crt           the collector's CA certificate
    rules.pub        pinned Ed25519 public key that rule bundles must be signed with
    rules.bundle     last good signed rule bundle
    rules.json       version/hash of the active bundle, last error
    spool.sqlite3    the outbox (WAL mode)
    state.json       written by ``run``: what is monitored, pid, connection state
    agent.log        the agent's log
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DataDir", "default_data_dir"]


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("vigil-agent", appauthor=False))


@dataclass(frozen=True)
class DataDir:
    root: Path

    @classmethod
    def resolve(cls, path: str | Path | None) -> DataDir:
        return cls(Path(path) if path else default_data_dir())

    def ensure(self) -> DataDir:
        """Create the folder if needed, and make it private to this user either way.

        ``mkdir(mode=...)`` only applies to a folder it creates; one made earlier by an
        installer or an admin may be 0755, and the spool and log inside hold the context of
        safeguarding hits: no other account on the laptop may read them.
        """
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.name == "posix":
            os.chmod(self.root, 0o700)
            for child in self.root.iterdir():
                if child.is_file() and not child.is_symlink():
                    os.chmod(child, child.stat().st_mode & 0o700)
        return self

    @property
    def device_json(self) -> Path:
        return self.root / "device.json"

    @property
    def device_key(self) -> Path:
        return self.root / "device.key"

    @property
    def device_cert(self) -> Path:
        return self.root / "device.crt"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def rules_pub(self) -> Path:
        return self.root / "rules.pub"

    @property
    def rules_bundle(self) -> Path:
        return self.root / "rules.bundle"

    @property
    def rules_json(self) -> Path:
        return self.root / "rules.json"

    @property
    def spool(self) -> Path:
        return self.root / "spool.sqlite3"

    @property
    def state_json(self) -> Path:
        return self.root / "state.json"

    @property
    def log(self) -> Path:
        return self.root / "agent.log"
