"""Device-key custody on Linux, for real: a root-only key, the uplink relay on a Unix socket,
kernel peer credentials, and a second, unprivileged account made with useradd.

The relay holds the key and does the mutual TLS to a real collector (tests/agent/minicollector:
grpc.aio over TLS with client certificates); session agents reach it with RelayChannel. The
account tests need root and useradd (they are skipped otherwise, and say so).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import cast

import grpc
import grpc.aio
import pytest

from agent.enrol import enroll
from agent.paths import DataDir
from agent.relay import (
    MSG,
    OPEN,
    Peer,
    RelayChannel,
    UplinkRelay,
    _frame,
    peer_credentials,
    session_channel_factory,
    take_custody,
)
from agent.uplink import mtls_channel_factory
from proto import vigil_pb2 as pb
from proto import vigil_pb2_grpc as pb_grpc
from tests.agent.minicollector import MiniCollector

PUPIL = "vigiltestpupil"
ROOT = Path(__file__).resolve().parents[2]
need_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"),
                               reason="needs root and useradd to make a second account")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder every account can traverse (pytest's tmp_path is 0700 root)."""
    d = Path(tempfile.mkdtemp(prefix="vigil-relay-"))
    os.chmod(d, 0o755)  # noqa: S103 - the pupil must reach the socket
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def pupil() -> Iterator[pwd.struct_passwd]:
    subprocess.run(["userdel", PUPIL], capture_output=True, check=False)
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", PUPIL],
                   check=True, capture_output=True)
    try:
        yield pwd.getpwnam(PUPIL)
    finally:
        subprocess.run(["userdel", PUPIL], capture_output=True, check=False)


async def _device(collector: MiniCollector, where: Path) -> DataDir:
    device = where / "device"
    ca = collector.write_ca(where / "ca.crt")
    data = DataDir(device, device)
    await asyncio.to_thread(enroll, data, collector.enroll_address, "tok-1", ca,
                            collector.address, machine=True)
    return data


@pytest.fixture
async def relay(collector: MiniCollector, shared_dir: Path) -> AsyncIterator[UplinkRelay]:
    data = await _device(collector, shared_dir)
    take_custody(data.identity)
    factory = mtls_channel_factory(collector.address, data.ca_cert.read_bytes(),
                                   data.device_key.read_bytes(), data.device_cert.read_bytes())
    r = await UplinkRelay(shared_dir / "run" / "uplink.sock", factory).start()
    yield r
    await r.stop()


async def send_through(channel: RelayChannel, *msgs: pb.AgentMessage,
                       wait_acks: int = 0) -> list[str]:
    """Connect through a relay channel like the agent's Uplink does (Unix socket or named
    pipe); return the kinds of the collector's replies, until *wait_acks* acks."""
    out: asyncio.Queue[pb.AgentMessage | None] = asyncio.Queue()
    for m in msgs:
        out.put_nowait(m)

    async def requests() -> AsyncIterator[pb.AgentMessage]:
        while (m := await out.get()) is not None:
            yield m

    got: list[str] = []
    call = pb_grpc.CollectorStub(cast(grpc.aio.Channel, channel)).Connect(requests())
    try:
        async for reply in call:
            got.append(reply.WhichOneof("body") or "")
            if got.count("ack") >= wait_acks:
                break
    finally:
        await channel.close()
    return got


async def _send(path: Path, *msgs: pb.AgentMessage, wait_acks: int = 0) -> list[str]:
    return await send_through(RelayChannel(path), *msgs, wait_acks=wait_acks)


def _capture(cid: str, user: str) -> pb.Capture:
    return pb.Capture(id=cid, os_user=user, rule_id="self_harm.test", category="self_harm",
                      severity=4, match="i cut myself")


def _hb(user: str) -> pb.AgentMessage:
    return pb.AgentMessage(heartbeat=pb.Heartbeat(agent_version="test", os_user=user))


async def test_a_session_sends_through_the_relay_as_the_account_the_kernel_names(
        relay: UplinkRelay, collector: MiniCollector) -> None:
    me = pwd.getpwuid(os.getuid()).pw_name
    await _send(relay.socket_path, _hb("somebody-else"),
                pb.AgentMessage(captures=pb.CaptureBatch(captures=[_capture("c1", "alice")])),
                wait_acks=1)
    assert collector.stored["c1"].os_user == me, "the claimed user was not overwritten"
    assert collector.heartbeats[0].os_user == me
    assert relay.served[0].uid == os.getuid() and relay.served[0].pid == os.getpid()
    assert len(collector.peers) == 1 and collector.peers[0]  # mutual TLS with the device cert


async def test_a_collector_refusal_reaches_the_session_unchanged(
        relay: UplinkRelay, collector: MiniCollector) -> None:
    collector.refuse_streams, collector.retry_after_ms = 1, 1234
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _send(relay.socket_path, _hb("x"), wait_acks=1)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ("retry-after-ms", "1234") in list(err.value.trailing_metadata())


async def test_no_relay_is_unavailable_so_the_uplink_backs_off(shared_dir: Path) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _send(shared_dir / "nothing.sock", _hb("x"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_allow_rule_refuses_an_account(collector: MiniCollector,
                                                 shared_dir: Path) -> None:
    data = await _device(collector, shared_dir)
    factory = mtls_channel_factory(collector.address, data.ca_cert.read_bytes(),
                                   data.device_key.read_bytes(), data.device_cert.read_bytes())
    r = await UplinkRelay(shared_dir / "u.sock", factory,
                          allow=lambda peer: peer.uid != os.getuid()).start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _send(r.socket_path, _hb("x"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert collector.streams == 0, "a refused peer reached the collector"
        assert r.refused[0].uid == os.getuid()
    finally:
        await r.stop()


def test_peer_credentials_come_from_the_kernel() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        peer = peer_credentials(a)
    assert peer == Peer(os.getpid(), os.getuid(), os.getgid(),
                        pwd.getpwuid(os.getuid()).pw_name)


async def test_sessions_use_the_relay_when_the_identity_is_the_devices(
        relay: UplinkRelay, collector: MiniCollector, shared_dir: Path) -> None:
    session = DataDir(shared_dir / "sessions" / "alice", shared_dir / "device")
    factory = session_channel_factory(session, collector.address, relay.socket_path)
    assert isinstance(factory(), RelayChannel)
    own = DataDir(shared_dir / "device")  # a per-user install: the identity is its own
    assert not isinstance(session_channel_factory(own, collector.address, relay.socket_path)(),
                          RelayChannel)


#: The pupil's client: the system Python's standard library only (the test's interpreter
#: lives under /root, which other accounts cannot enter). It replays frames the test built,
#: exactly what RelayChannel would send, and prints the frame types it got back.
_PUPIL_CLIENT = """
import socket, struct, sys
frames = open(sys.argv[2], "rb").read()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(frames)
kinds = []
buf = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
    while len(buf) >= 5:
        size, kind = struct.unpack(">IB", buf[:5])
        if len(buf) < 5 + size:
            break
        body, buf = buf[5:5 + size], buf[5 + size:]
        kinds.append(kind)
        if kind == 2 and b"p1" in body:  # the ack of our capture: close, like the agent
            print(kinds)
            sys.exit(0)
        if kind == 4:
            print(kinds, body.decode())
            sys.exit(1)
print(kinds)
sys.exit(3)
"""


@need_root
async def test_a_pupil_cannot_read_the_key_and_is_named_by_the_kernel(
        relay: UplinkRelay, collector: MiniCollector, shared_dir: Path,
        pupil: pwd.struct_passwd) -> None:
    device = shared_dir / "device"
    key = device / "device.key"
    assert (key.stat().st_mode & 0o777, key.stat().st_uid) == (0o600, 0)
    as_pupil = {"user": pupil.pw_uid, "group": pupil.pw_gid, "cwd": "/tmp",
                "env": {"PATH": "/usr/bin:/bin"}, "capture_output": True, "text": True,
                "timeout": 60}
    read = subprocess.run(["cat", str(key)], **as_pupil)  # type: ignore[call-overload]
    assert read.returncode != 0 and "Permission denied" in read.stderr, read
    cert = subprocess.run(["cat", str(device / "device.crt")], **as_pupil)  # type: ignore[call-overload]
    assert cert.returncode == 0 and "BEGIN CERTIFICATE" in cert.stdout  # public parts stay

    # The pupil claims to be root, in the heartbeat and in the capture.
    frames = _frame(OPEN, b"/vigil.v1.Collector/Connect")
    for msg in (_hb("root"), pb.AgentMessage(captures=pb.CaptureBatch(
            captures=[_capture("p1", "root")]))):
        frames += _frame(MSG, msg.SerializeToString())
    (shared_dir / "frames").write_bytes(frames)
    os.chmod(shared_dir / "frames", 0o644)
    client = shared_dir / "client.py"
    client.write_text(_PUPIL_CLIENT)
    os.chmod(client, 0o644)
    proc = await asyncio.create_subprocess_exec(
        "/usr/bin/python3", "-I", str(client), str(relay.socket_path), str(shared_dir / "frames"),
        user=pupil.pw_uid, group=pupil.pw_gid, env={"PATH": "/usr/bin:/bin"}, cwd="/tmp",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (out.decode(), err.decode())
    assert collector.stored["p1"].os_user == PUPIL, "the pupil sent as another account"
    assert collector.heartbeats[-1].os_user == PUPIL
    assert relay.served[-1].uid == pupil.pw_uid


def test_custody_refuses_a_folder_others_can_write(shared_dir: Path) -> None:
    d = shared_dir / "device"
    d.mkdir()
    (d / "device.key").write_bytes(b"k")
    os.chmod(d, 0o777)  # noqa: S103
    with pytest.raises(PermissionError, match="not writable by others"):
        take_custody(d)
    os.chmod(d, 0o755)  # noqa: S103
    take_custody(d)
    assert (d / "device.key").stat().st_mode & 0o777 == 0o600
