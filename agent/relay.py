"""Device-key custody: one privileged uplink relay per device; the session agents never read
the key.

Per-device enrolment gives every desktop session on a laptop one identity. If each session's
agent (running as the pupil) read ``device.key`` itself, any pupil could copy it and speak
for the device from anywhere. Instead:

* ``python -m agent.relay`` runs as root (a systemd system service on Linux, a LaunchDaemon
  on macOS). It takes custody of the key (``device.key`` becomes root-owned, mode 0600), and
  opens the mutual-TLS streams to the collector itself.
* Each session agent connects to the relay's Unix socket (default ``/run/vigil/uplink.sock``)
  and speaks the same RPCs (``Collector.Connect``, ``Collector.FetchModel``) as length-framed
  protobuf bytes; :class:`RelayChannel` gives :class:`~agent.uplink.Uplink` and the model
  fetcher the part of a ``grpc.aio.Channel`` they use, so their logic is unchanged.
* The relay asks the kernel who is on the other end of each connection (``SO_PEERCRED`` on
  Linux, ``LOCAL_PEERCRED``/``LOCAL_PEERPID`` on macOS: credentials the client cannot
  forge), applies an allow rule (e.g. members of a group), and overwrites the ``os_user`` of
  every heartbeat and capture with that account's name: a pupil cannot send as another
  user, only as themself, from this device, while they are logged on to it.

Frames: 4-byte big-endian length, 1-byte type (OPEN: the method name; MSG: one serialized
message; END: no more requests; STATUS: a JSON ``{"code", "details", "trailing"}``, last).
Windows is not done: it needs a named pipe (``GetNamedPipeClientProcessId`` and the client's
token) and a Windows service; see docs/security.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import struct
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
import grpc.aio

from proto import vigil_pb2 as pb

from .paths import DataDir

__all__ = ["DEFAULT_SOCKET", "SOCKET_ENV", "Peer", "RelayChannel", "UplinkRelay",
           "peer_credentials", "session_channel_factory", "take_custody"]

log = logging.getLogger(__name__)

SOCKET_ENV = "VIGIL_UPLINK_SOCKET"
DEFAULT_SOCKET = Path("/var/run/vigil/uplink.sock" if sys.platform == "darwin"
                      else "/run/vigil/uplink.sock")
#: The only RPCs the relay forwards, and their shape.
METHODS = {"/vigil.v1.Collector/Connect": "stream_stream",
           "/vigil.v1.Collector/FetchModel": "unary_stream"}
MAX_FRAME = 64 * 1024 * 1024  # a capture with a full-screen PNG fits many times over
OPEN, MSG, END, STATUS = 1, 2, 3, 4
_HEADER = struct.Struct(">IB")


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a Unix socket, as the kernel says."""

    pid: int
    uid: int
    gid: int
    user: str


def peer_credentials(sock: socket.socket) -> Peer:
    """The connected peer's pid/uid/gid (Linux ``SO_PEERCRED``; macOS ``LOCAL_PEERCRED``
    and ``LOCAL_PEERPID``) and its account name."""
    import pwd

    if sys.platform.startswith("linux"):
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
    else:  # Darwin / BSD: struct xucred {u_int cr_version; uid_t cr_uid; short cr_ngroups;
        # gid_t cr_groups[16]}; SOL_LOCAL = 0, LOCAL_PEERCRED = 1, LOCAL_PEERPID = 2
        raw = sock.getsockopt(0, 1, struct.calcsize("IIh2x16I"))
        _, uid, _n, *groups = struct.unpack("IIh2x16I", raw)
        gid = groups[0]
        pid = struct.unpack("i", sock.getsockopt(0, 2, 4))[0]
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = f"uid{uid}"
    return Peer(pid, uid, gid, user)


def in_group(name: str) -> Callable[[Peer], bool]:
    """An allow rule: the peer's account is root or a member of group *name*."""
    import grp
    import pwd

    def allow(peer: Peer) -> bool:
        if peer.uid == 0:
            return True
        try:
            group = grp.getgrnam(name)
            primary = pwd.getpwuid(peer.uid).pw_gid
        except KeyError:
            return False
        return primary == group.gr_gid or peer.user in group.gr_mem
    return allow


def take_custody(device_dir: Path) -> Path:
    """Make ``device.key`` readable by root only (owner root, mode 0600); refuse a folder
    that others could write to (they could swap the key or the certificate)."""
    key = device_dir / "device.key"
    st = device_dir.stat()
    if st.st_mode & 0o022 or (os.geteuid() == 0 and st.st_uid != 0):
        raise PermissionError(f"{device_dir}: must be owned by root and not writable by "
                              "others (the installer makes it root:root 0755)")
    if os.geteuid() == 0:
        os.chown(key, 0, 0)
    os.chmod(key, 0o600)
    return key


def _frame(kind: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(len(payload), kind) + payload


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    size, kind = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is larger than {MAX_FRAME}")
    return kind, await reader.readexactly(size)


def _status(code: grpc.StatusCode, details: str = "",
            trailing: list[tuple[str, str]] | None = None) -> bytes:
    return _frame(STATUS, json.dumps({"code": code.name, "details": details,
                                      "trailing": trailing or []}).encode())


def _stamp(method: str, data: bytes, peer: Peer) -> bytes:
    """The kernel's account name on every heartbeat and capture (whatever the agent said)."""
    if method != "/vigil.v1.Collector/Connect":
        return data
    msg = pb.AgentMessage.FromString(data)
    kind = msg.WhichOneof("body")
    if kind == "heartbeat":
        msg.heartbeat.os_user = peer.user
    elif kind == "captures":
        for capture in msg.captures.captures:
            capture.os_user = peer.user
    else:
        return data
    return msg.SerializeToString()


class UplinkRelay:
    """Serves session agents on *socket_path*; opens the collector streams with
    *channel_factory* (the device's mTLS identity)."""

    def __init__(self, socket_path: Path, channel_factory: Callable[[], grpc.aio.Channel], *,
                 allow: Callable[[Peer], bool] = lambda peer: True,
                 credentials: Callable[[socket.socket], Peer] = peer_credentials) -> None:
        self.socket_path, self.channel_factory = socket_path, channel_factory
        self.allow, self.credentials = allow, credentials
        self.refused: list[Peer] = []
        self.served: list[Peer] = []
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> UplinkRelay:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.socket_path))
        # Anyone may connect: who they are comes from the kernel, and `allow` decides.
        os.chmod(self.socket_path, 0o666)  # noqa: S103
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def _handle(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        try:
            peer = self.credentials(writer.get_extra_info("socket"))
            if not self.allow(peer):
                self.refused.append(peer)
                log.warning("uplink relay: refused %s (uid %d, pid %d)", peer.user, peer.uid,
                            peer.pid)
                writer.write(_status(grpc.StatusCode.PERMISSION_DENIED,
                                     f"{peer.user} may not use this device's uplink"))
                return
            kind, payload = await _read_frame(reader)
            method = payload.decode() if kind == OPEN else ""
            if method not in METHODS:
                writer.write(_status(grpc.StatusCode.UNIMPLEMENTED, f"not relayed: {method}"))
                return
            self.served.append(peer)
            await self._forward(method, peer, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            log.info("uplink relay: session connection ended: %s", exc)
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
            writer.close()

    async def _forward(self, method: str, peer: Peer, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        channel = self.channel_factory()
        call: Any = None
        try:
            if METHODS[method] == "stream_stream":
                async def requests() -> AsyncIterator[bytes]:
                    while True:
                        try:
                            kind, data = await _read_frame(reader)
                        except (asyncio.IncompleteReadError, ConnectionError):
                            if call is not None:
                                call.cancel()  # the session went away: end its stream
                            return
                        if kind == END:
                            return
                        if kind == MSG:
                            yield _stamp(method, data, peer)

                stream: Any = channel.stream_stream(method)  # bytes in, bytes out
                call = stream(requests())
            else:
                _, data = await _read_frame(reader)
                unary: Any = channel.unary_stream(method)
                call = unary(data)
            try:
                async for response in call:
                    writer.write(_frame(MSG, cast(bytes, response)))
                    await writer.drain()
                status = _status(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as exc:
                trailing = [(str(k), str(v)) for k, v in (exc.trailing_metadata() or ())]
                status = _status(exc.code(), exc.details() or "", trailing)
            except asyncio.CancelledError:
                if call.cancelled():
                    return
                raise
            writer.write(status)
        finally:
            await channel.close(grace=None)


# -- the session side --------------------------------------------------------------------------
def _error(code: grpc.StatusCode, details: str,
           trailing: list[tuple[str, str]] | None = None) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(),
                                grpc.aio.Metadata(*(trailing or [])), details)


class _RelayCall:
    def __init__(self, path: Path, method: str, request: Any, stream: bool,
                 serialize: Callable[[Any], bytes], deserialize: Callable[[bytes], Any]) -> None:
        self.path, self.method, self.request, self.stream = path, method, request, stream
        self.serialize, self.deserialize = serialize, deserialize
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None
        self._cancelled = False

    def cancel(self) -> bool:
        self._cancelled = True
        if self._pump is not None:
            self._pump.cancel()
        if self._writer is not None:
            self._writer.close()
        return True

    def cancelled(self) -> bool:
        return self._cancelled

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._responses()

    async def _send(self, writer: asyncio.StreamWriter) -> None:
        if self.stream:
            async for item in self.request:
                writer.write(_frame(MSG, self.serialize(item)))
                await writer.drain()
        else:
            writer.write(_frame(MSG, self.serialize(self.request)))
        writer.write(_frame(END))
        await writer.drain()

    async def _responses(self) -> AsyncIterator[Any]:
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.path))
        except OSError as exc:
            raise _error(grpc.StatusCode.UNAVAILABLE,
                         f"uplink relay not reachable at {self.path}: {exc}") from None
        self._writer = writer
        writer.write(_frame(OPEN, self.method.encode()))
        self._pump = asyncio.create_task(self._send(writer))
        try:
            while True:
                try:
                    kind, data = await _read_frame(reader)
                except (asyncio.IncompleteReadError, ConnectionError) as exc:
                    if self._cancelled:
                        return
                    raise _error(grpc.StatusCode.UNAVAILABLE,
                                 f"uplink relay closed the stream: {exc}") from None
                if kind == MSG:
                    yield self.deserialize(data)
                elif kind == STATUS:
                    st = json.loads(data)
                    code = grpc.StatusCode[st["code"]]
                    if code != grpc.StatusCode.OK:
                        raise _error(code, st["details"],
                                     [(str(k), str(v)) for k, v in st["trailing"]])
                    return
        finally:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump
            writer.close()


class RelayChannel:
    """The part of ``grpc.aio.Channel`` that the generated ``CollectorStub`` uses, over the
    relay's Unix socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._calls: list[_RelayCall] = []

    def _multi(self, method: str, stream: bool, request_serializer: Any,
               response_deserializer: Any) -> Callable[..., _RelayCall]:
        def call(request: Any, *args: Any, **kwargs: Any) -> _RelayCall:
            c = _RelayCall(self.path, method, request, stream, request_serializer or bytes,
                           response_deserializer or bytes)
            self._calls.append(c)
            return c
        return call

    def stream_stream(self, method: str, request_serializer: Any = None,
                      response_deserializer: Any = None, **_: Any) -> Callable[..., _RelayCall]:
        return self._multi(method, True, request_serializer, response_deserializer)

    def unary_stream(self, method: str, request_serializer: Any = None,
                     response_deserializer: Any = None, **_: Any) -> Callable[..., _RelayCall]:
        return self._multi(method, False, request_serializer, response_deserializer)

    async def close(self, grace: float | None = None) -> None:
        for c in self._calls:
            c.cancel()
        self._calls.clear()


def relay_socket() -> Path:
    return Path(os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET)


def session_channel_factory(data: DataDir, collector: str,
                            socket_path: Path | None = None
                            ) -> Callable[[], grpc.aio.Channel]:
    """How a session agent reaches the collector: through the relay when the device's
    identity is shared and the relay's socket exists or the key is not readable (so captures
    stay in the spool until the relay is up); directly with the key otherwise."""
    from .uplink import mtls_channel_factory

    path = socket_path or relay_socket()
    if data.shared_identity and (path.exists() or not os.access(data.device_key, os.R_OK)):
        return lambda: cast(grpc.aio.Channel, RelayChannel(path))
    return mtls_channel_factory(collector, data.ca_cert.read_bytes(),
                                data.device_key.read_bytes(), data.device_cert.read_bytes())


async def serve(device_dir: Path, socket_path: Path, allow_group: str = "") -> None:
    from .enrol import load_device
    from .uplink import mtls_channel_factory

    data = DataDir(device_dir, device_dir)
    while (device := load_device(data)) is None:  # the enrol timer has not succeeded yet
        log.warning("uplink relay: %s is not enrolled yet; waiting", device_dir)
        await asyncio.sleep(30)
    take_custody(device_dir)
    factory = mtls_channel_factory(device.collector, data.ca_cert.read_bytes(),
                                   data.device_key.read_bytes(), data.device_cert.read_bytes())
    relay = await UplinkRelay(socket_path, factory,
                              allow=in_group(allow_group) if allow_group else (lambda p: True)
                              ).start()
    log.info("uplink relay for device %s on %s", device.device_id, socket_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await relay.stop()


def main(argv: list[str] | None = None) -> int:
    from .paths import machine_device_dir

    ap = argparse.ArgumentParser(prog="python -m agent.relay", description=(
        "Hold this device's key (root only) and relay the session agents' streams to the "
        "collector over mutual TLS, naming each session by its kernel-verified account."))
    ap.add_argument("--device-dir", type=Path, default=machine_device_dir(),
                    help="the machine-wide device folder (default: %(default)s)")
    ap.add_argument("--socket", type=Path, default=relay_socket(),
                    help="the Unix socket the session agents connect to (default: %(default)s)")
    ap.add_argument("--allow-group", default="",
                    help="only root and members of this group may use the uplink")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if os.geteuid() != 0:
        print("agent.relay: run as root: it must be the only reader of the device key",
              file=sys.stderr)
        return 2
    asyncio.run(serve(args.device_dir, args.socket, args.allow_group))
    return 0


if __name__ == "__main__":
    sys.exit(main())
