"""Per-device identity (agent.paths + agent.enrol): one enrolment in a machine-wide folder
shared by every session, beside the per-user default, which keeps working unchanged.
(The installed end-to-end path, with a real collector and two users, is
tests/installer/test_device_enrolment.py.)"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from agent.enrol import EnrolError, enroll, load_device
from agent.paths import (
    DEVICE_DIR_ENV,
    DataDir,
    machine_device_dir,
    machine_root,
    machine_session_dir,
    session_folder_name,
)
from tests.agent.minicollector import MiniCollector


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


async def test_machine_enrolment_is_shared_and_sessions_keep_their_own_data(
        collector: MiniCollector, tmp_path: Path) -> None:
    ca = collector.write_ca(tmp_path / "ca.crt")
    device = tmp_path / "machine" / "device"
    dev = await asyncio.to_thread(enroll, DataDir(device, device), collector.enroll_address,
                                  "tok-1", ca, collector.address, machine=True)
    assert _mode(device) == 0o755 and _mode(device / "device.key") == 0o600
    assert _mode(device / "device.crt") == 0o644  # the certificate is public; the key is not
    alice = DataDir.resolve(tmp_path / "machine" / "sessions" / "alice", device).ensure()
    bob = DataDir.resolve(tmp_path / "machine" / "sessions" / "bob", device).ensure()
    for session in (alice, bob):
        assert session.shared_identity and session.device_key == device / "device.key"
        assert load_device(session) == dev
        assert session.spool.parent == session.root != device
    assert _mode(device) == 0o755  # ensure() makes the session private, not the identity
    # a session cannot enrol itself on a machine-wide device (no token is spent)
    with pytest.raises(EnrolError, match="enrolled machine-wide"):
        await asyncio.to_thread(enroll, alice, collector.enroll_address, "tok-2", ca)


async def test_the_per_user_default_is_unchanged(collector: MiniCollector, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEVICE_DIR_ENV, raising=False)
    assert not machine_device_dir().exists()  # this machine has no machine-wide install
    data = DataDir.resolve(tmp_path / "me")
    assert data.device is None and data.identity == data.root and not data.shared_identity
    ca = collector.write_ca(tmp_path / "ca.crt")
    await asyncio.to_thread(enroll, data, collector.enroll_address, "tok-1", ca)
    assert _mode(data.device_key) == 0o600 and _mode(data.root) == 0o700


def test_the_device_folder_can_be_named_by_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEVICE_DIR_ENV, str(tmp_path / "dev"))
    data = DataDir.resolve(tmp_path / "session")
    assert data.identity == tmp_path / "dev" and data.rules_bundle.parent == tmp_path / "session"


def test_machine_paths_per_os() -> None:
    assert machine_root("win32", {"PROGRAMDATA": r"D:\ProgramData"}) == \
        Path(r"D:\ProgramData") / "Vigil"
    assert machine_root("darwin", {}) == Path("/Library/Application Support/Vigil")
    assert machine_device_dir("linux", {}) == Path("/var/lib/vigil/device")
    assert machine_session_dir("alice", "linux", {}) == Path("/var/lib/vigil/sessions/alice")


@pytest.mark.parametrize(("user", "folder"), [
    ("alice", "alice"), ("SCHOOL.alice", "SCHOOL.alice"), ("a.b@school.uk", "a.b@school.uk"),
    ("..", "_"), (".", "_"), ("../../etc", ".._.._etc"), ("a/b\\c", "a_b_c"), ("", "_"),
])
def test_session_folder_names_never_escape_the_sessions_folder(user: str, folder: str) -> None:
    assert session_folder_name(user) == folder
    assert Path("/s", session_folder_name(user)).parent == Path("/s")
