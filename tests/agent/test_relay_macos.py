"""The uplink relay's macOS peer credentials (agent.relay.peer_credentials on Darwin).

NOT RUN ON A REAL MAC. A Unix socket on macOS has no SO_PEERCRED: the kernel answers
``getsockopt(SOL_LOCAL, LOCAL_PEERCRED)`` with a ``struct xucred`` and ``LOCAL_PEERPID`` with
the pid (<sys/un.h>, <sys/ucred.h>). The socket below answers those two calls with bytes laid
out as Darwin's headers say, so the real parsing and the refusal paths run; the Linux path
(SO_PEERCRED) runs for real in tests/agent/test_device_key_relay.py."""

from __future__ import annotations

import pwd
import struct
from typing import Any

import pytest

from agent.relay import LOCAL_PEERCRED, LOCAL_PEERPID, SOL_LOCAL, XUCRED_VERSION, peer_credentials


class DarwinSocket:
    """Answers LOCAL_PEERCRED / LOCAL_PEERPID as the macOS kernel does; nothing else."""

    def __init__(self, uid: int, groups: list[int], pid: int, version: int = XUCRED_VERSION,
                 ngroups: int | None = None, truncate: int = 0) -> None:
        padded = (groups + [0] * 16)[:16]
        n = len(groups) if ngroups is None else ngroups
        self.cred = struct.pack("IIh2x16I", version, uid, n, *padded)
        if truncate:
            self.cred = self.cred[:-truncate]
        self.pid = pid
        self.asked: list[tuple[int, int, int]] = []

    def getsockopt(self, level: int, name: int, size: int) -> bytes:
        self.asked.append((level, name, size))
        assert level == SOL_LOCAL == 0
        if name == LOCAL_PEERCRED:
            assert size == 76  # sizeof(struct xucred) on 64-bit macOS
            return self.cred[:size]
        if name == LOCAL_PEERPID:
            return struct.pack("i", self.pid)
        raise OSError(42, "ENOPROTOOPT")


def _creds(sock: Any) -> Any:
    return peer_credentials(sock, platform="darwin")


def test_the_account_comes_from_the_kernels_xucred() -> None:
    root = pwd.getpwuid(0).pw_name
    sock = DarwinSocket(uid=0, groups=[0, 1, 20], pid=4242)
    peer = _creds(sock)
    assert (peer.uid, peer.gid, peer.pid, peer.user) == (0, 0, 4242, root)
    assert [name for _, name, _ in sock.asked] == [LOCAL_PEERCRED, LOCAL_PEERPID]


def test_an_account_without_a_passwd_entry_is_named_by_uid() -> None:
    peer = _creds(DarwinSocket(uid=501_777, groups=[20], pid=7))
    assert peer.user == "uid501777" and peer.gid == 20


@pytest.mark.parametrize("bad", [
    {"version": 1},          # an xucred layout this code does not know
    {"ngroups": 0},          # no effective group
    {"ngroups": 17},         # more groups than the array holds
    {"truncate": 8},         # a short answer
])
def test_an_answer_that_cannot_be_read_is_refused_not_guessed(bad: dict[str, int]) -> None:
    with pytest.raises(PermissionError, match="LOCAL_PEERCRED"):
        _creds(DarwinSocket(uid=501, groups=[20], pid=9, **bad))
