"""Where the agent keeps its files. One object, injected everywhere (STYLE.md: inject the world).

Two folders, which may be the same one:

* the **device** folder holds the identity, made once per device at enrolment::

      device.json      device id, collector address, site, group
      device.key       P-256 private key, PEM
      device.crt       client certificate issued by the collector's CA
      ca.crt           the collector's CA certificate
      rules.pub        pinned Ed25519 public key that rule bundles must be signed with

* the **data** folder holds what one desktop session's agent writes::

      rules.bundle     last good signed rule bundle
      rules.json       version/hash of the active bundle, last error
      spool.sqlite3    the outbox (WAL mode)
      state.json       written by ``run``: what is monitored, pid, connection state
      agent.log        the agent's log

Per-user install (the default, and ``vigil-agent enroll`` by hand): both are the user's data
dir (platformdirs). Machine-wide install (the installers): the device folder is
:func:`machine_device_dir` (enrolled once, at install time, by root/SYSTEM), and each session
gets :func:`machine_session_dir` for its user, outside the user's profile, so a Shared-PC
profile deletion loses no spool and a new pupil does not spend an enrolment token.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DATA_DIR_ENV", "DEVICE_DIR_ENV", "DataDir", "default_data_dir",
           "machine_device_dir", "machine_root", "machine_session_dir", "session_folder_name",
           "session_user"]

#: Overrides where the device identity is looked for (tests, unusual installs).
DEVICE_DIR_ENV = "VIGIL_DEVICE_DIR"
#: Names the data folder for every command run without ``--data-dir`` (scripts/quickstart's
#: env file sets it to the demo agent's folder).
DATA_DIR_ENV = "VIGIL_AGENT_DATA_DIR"


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("vigil-agent", appauthor=False))


def machine_root(platform: str | None = None, env: dict[str, str] | None = None) -> Path:
    """The machine-wide Vigil folder: %ProgramData%\\Vigil, /Library/Application Support/Vigil
    or /var/lib/vigil."""
    platform = platform or sys.platform
    env = dict(os.environ) if env is None else env
    if platform.startswith("win"):
        return Path(env.get("PROGRAMDATA") or r"C:\ProgramData") / "Vigil"
    if platform == "darwin":
        return Path("/Library/Application Support/Vigil")
    return Path("/var/lib/vigil")


def machine_device_dir(platform: str | None = None, env: dict[str, str] | None = None) -> Path:
    return machine_root(platform, env) / "device"


def session_user() -> str:
    """The desktop user this session belongs to (Windows: DOMAIN.user, as names repeat
    across domains)."""
    import getpass

    user = getpass.getuser()
    domain = os.environ.get("USERDOMAIN", "") if sys.platform == "win32" else ""
    return f"{domain}.{user}" if domain else user


def session_folder_name(user: str) -> str:
    """A folder name for *user* ("SCHOOL.alice", "alice@school.uk"): no path separators,
    never "." or ".."."""
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in user)
    return safe if safe.strip(".") else "_"


def machine_session_dir(user: str, platform: str | None = None,
                        env: dict[str, str] | None = None) -> Path:
    """This user's session data under the machine folder (never inside the profile)."""
    return machine_root(platform, env) / "sessions" / session_folder_name(user)


def _installed_device_dir() -> Path | None:
    override = os.environ.get(DEVICE_DIR_ENV)
    if override:
        return Path(override)
    machine = machine_device_dir()
    return machine if machine.is_dir() else None


@dataclass(frozen=True)
class DataDir:
    root: Path
    #: Where the device identity lives; None: in :attr:`root` (a per-user install).
    device: Path | None = None

    @classmethod
    def resolve(cls, path: str | Path | None, device: str | Path | None = None) -> DataDir:
        """*path* (else ``$VIGIL_AGENT_DATA_DIR``, else this user's session folder or data
        dir), with the device identity from *device*, else ``$VIGIL_DEVICE_DIR``, else the
        machine-wide device folder when the installer made one, else *path* itself."""
        path = path or os.environ.get(DATA_DIR_ENV) or None
        found = Path(device) if device else _installed_device_dir()
        if path:
            return cls(Path(path), found)
        if found is not None and found == machine_device_dir():
            session = machine_session_dir(session_user())
            if session.is_dir():  # made by vigil_session.py at this user's logon
                return cls(session, found)
        return cls(default_data_dir(), found)

    def ensure(self) -> DataDir:
        """Create the folder if needed, and make it private to this user either way.

        ``mkdir(mode=...)`` only applies to a folder it creates; one made earlier by an
        installer or an admin may be 0755, and the spool and log inside hold the context of
        safeguarding hits: no other account on the laptop may read them. The device folder
        is left alone: the installer owns its permissions.
        """
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.name == "posix":
            os.chmod(self.root, 0o700)
            for child in self.root.iterdir():
                if child.is_file() and not child.is_symlink():
                    os.chmod(child, child.stat().st_mode & 0o700)
        return self

    @property
    def identity(self) -> Path:
        """The folder holding the device identity files."""
        return self.device if self.device is not None else self.root

    @property
    def shared_identity(self) -> bool:
        """True when the identity is the device's, shared by every session (machine-wide)."""
        return self.device is not None and self.device != self.root

    @property
    def device_json(self) -> Path:
        return self.identity / "device.json"

    @property
    def device_key(self) -> Path:
        return self.identity / "device.key"

    @property
    def device_cert(self) -> Path:
        return self.identity / "device.crt"

    @property
    def ca_cert(self) -> Path:
        return self.identity / "ca.crt"

    @property
    def rules_pub(self) -> Path:
        return self.identity / "rules.pub"

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
