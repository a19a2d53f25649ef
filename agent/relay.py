r"""Device-key custody: one privileged uplink relay per device; the session agents never read
the key.

Per-device enrolment gives every desktop session on a laptop one identity. If each session's
agent (running as the pupil) read ``device.key`` itself, any pupil could copy it and speak
for the device from anywhere. Instead:

* ``python -m agent.relay`` runs as root (a systemd system service on Linux, a LaunchDaemon
  on macOS) or as SYSTEM (a scheduled task at startup on Windows). It takes custody of the key
  (:func:`take_custody`: root-owned, mode 0600; on Windows a protected DACL granting SYSTEM and
  Administrators only, set with ``icacls`` and read back), and opens the mutual-TLS streams to
  the collector itself.
* Each session agent connects to the relay (a Unix socket, default ``/run/vigil/uplink.sock``;
  on Windows the named pipe ``\\.\pipe\vigil-uplink``) and speaks the same RPCs
  (``Collector.Connect``, ``Collector.FetchModel``) as length-framed protobuf bytes;
  :class:`RelayChannel` gives :class:`~agent.uplink.Uplink` and the model fetcher the part of
  a ``grpc.aio.Channel`` they use, so their logic is unchanged.
* The relay asks the kernel who is on the other end of each connection (``SO_PEERCRED`` on
  Linux, ``LOCAL_PEERCRED``/``LOCAL_PEERPID`` on macOS; on Windows the client's token, read by
  impersonating it at identification level: credentials the client cannot forge), applies an
  allow rule (e.g. members of a group; on Windows by default any authenticated interactive
  user, never the anonymous or network logons), and overwrites the ``os_user`` of every
  heartbeat and capture with that account's name (``DOMAIN\user`` on Windows): a pupil
  cannot send as another user, only as themself, from this device, while they are logged on.
  The transport-independent part is :meth:`UplinkRelay.serve_connection`; both servers call it.
* On Windows the session also checks the relay: before it sends a byte, the pipe's server
  process must run as SYSTEM and the pipe must be owned by SYSTEM
  (:func:`agent.backends.winpipe.verify_server`), so a pupil who creates the pipe name before
  the relay starts gets nothing. The pipe, its DACL and the identity calls are in
  :mod:`agent.backends.winpipe`.

**The Windows relay has never run on real Windows**: it is tested on Linux against a simulated
kernel32/advapi32 (tests/agent/test_relay_windows.py); docs/security.md lists what that does
not prove.

Frames: 4-byte big-endian length, 1-byte type (OPEN: the method name; MSG: one serialized
message; END: no more requests; STATUS: a JSON ``{"code", "details", "trailing"}``, last).
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
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import grpc
import grpc.aio

from proto import vigil_pb2 as pb

from .paths import DataDir

if TYPE_CHECKING:
    from .backends.winpipe import Identity, PipeApi, PipeServer

__all__ = ["DEFAULT_PIPE", "DEFAULT_SOCKET", "PIPE_ENV", "SOCKET_ENV", "Peer",
           "PipeUplinkRelay", "RelayChannel", "UplinkRelay", "peer_credentials",
           "pipe_relay_channel", "session_channel_factory", "take_custody", "windows_allow"]

log = logging.getLogger(__name__)

SOCKET_ENV = "VIGIL_UPLINK_SOCKET"
DEFAULT_SOCKET = Path("/var/run/vigil/uplink.sock" if sys.platform == "darwin"
                      else "/run/vigil/uplink.sock")
PIPE_ENV = "VIGIL_UPLINK_PIPE"
DEFAULT_PIPE = r"\\.\pipe\vigil-uplink"
SYSTEM_SID = "S-1-5-18"
ADMINISTRATORS_SID = "S-1-5-32-544"
USERS_SID = "S-1-5-32-545"
INTERACTIVE_SID = "S-1-5-4"
AUTHENTICATED_USERS_SID = "S-1-5-11"
#: Never served, whatever the allow list says: ANONYMOUS LOGON, NETWORK (a logon from another
#: machine; the pipe also rejects remote clients), the NULL SID.
NEVER_SIDS = frozenset({"S-1-5-7", "S-1-5-2", "S-1-0-0"})
#: The only RPCs the relay forwards, and their shape.
METHODS = {"/vigil.v1.Collector/Connect": "stream_stream",
           "/vigil.v1.Collector/FetchModel": "unary_stream"}
MAX_FRAME = 64 * 1024 * 1024  # a capture with a full-screen PNG fits many times over
OPEN, MSG, END, STATUS = 1, 2, 3, 4
_HEADER = struct.Struct(">IB")


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of the connection, as the kernel says. On Windows ``uid`` and
    ``gid`` are -1, ``user`` is DOMAIN\\user and ``sid``/``groups`` come from the token."""

    pid: int
    uid: int
    gid: int
    user: str
    sid: str = ""
    groups: tuple[str, ...] = ()

    def describe(self) -> str:
        who = self.sid if self.sid else f"uid {self.uid}"
        return f"{self.user} ({who}, pid {self.pid})"


class FrameReader(Protocol):
    async def readexactly(self, n: int, /) -> bytes: ...


class FrameWriter(Protocol):
    def write(self, data: bytes, /) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


Connector = Callable[[], Awaitable[tuple[FrameReader, FrameWriter]]]


#: Darwin's <sys/un.h> and <sys/ucred.h>: SOL_LOCAL, LOCAL_PEERCRED, LOCAL_PEERPID, and
#: struct xucred {u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16]}
#: (cr_version must be XUCRED_VERSION, 0).
SOL_LOCAL, LOCAL_PEERCRED, LOCAL_PEERPID, XUCRED_VERSION = 0, 0x001, 0x002, 0
_XUCRED = struct.Struct("IIh2x16I")


def peer_credentials(sock: socket.socket, platform: str = sys.platform) -> Peer:
    """The connected peer's pid/uid/gid (Linux ``SO_PEERCRED``; macOS ``LOCAL_PEERCRED``
    and ``LOCAL_PEERPID``) and its account name. Raises PermissionError when the kernel's
    answer is not one this code can read (the connection is then refused, never served
    under a guessed identity)."""
    import pwd

    if platform.startswith("linux"):
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
    else:  # Darwin
        raw = sock.getsockopt(SOL_LOCAL, LOCAL_PEERCRED, _XUCRED.size)
        if len(raw) != _XUCRED.size:
            raise PermissionError(f"LOCAL_PEERCRED gave {len(raw)} bytes, not an xucred")
        version, uid, ngroups, *groups = _XUCRED.unpack(raw)
        if version != XUCRED_VERSION or not 0 < ngroups <= len(groups):
            raise PermissionError(f"LOCAL_PEERCRED: unknown xucred (version {version}, "
                                  f"{ngroups} groups)")
        gid = groups[0]  # cr_groups[0] is the effective group
        pid = struct.unpack("i", sock.getsockopt(SOL_LOCAL, LOCAL_PEERPID, 4))[0]
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


def windows_allow(sids: Collection[str] = (), groups: Collection[str] = ()
                  ) -> Callable[[Peer], bool]:
    """The Windows allow rule. Never the anonymous or network logons (:data:`NEVER_SIDS`, as
    the account or as a group). SYSTEM always. With *sids* or *groups* (SIDs: names are
    localised): only those accounts and members of those groups. Without: any authenticated
    interactive user (INTERACTIVE and Authenticated Users in the token), which is who the pipe's
    DACL lets in."""
    listed = frozenset(sids) | frozenset(groups)

    def allow(peer: Peer) -> bool:
        if not peer.sid or peer.sid in NEVER_SIDS or NEVER_SIDS.intersection(peer.groups):
            return False
        if peer.sid == SYSTEM_SID:
            return True
        if listed:
            return peer.sid in listed or bool(listed.intersection(peer.groups))
        return INTERACTIVE_SID in peer.groups and AUTHENTICATED_USERS_SID in peer.groups
    return allow


def take_custody(device_dir: Path, *, platform: str | None = None,
                 run: Callable[..., subprocess.CompletedProcess[str]] | None = None,
                 api: PipeApi | None = None) -> Path:
    """Make ``device.key`` readable by root only (owner root, mode 0600); refuse a folder
    that others could write to (they could swap the key or the certificate).

    Windows (os.access and chmod do not see ACLs there): refuse a folder that anyone but
    SYSTEM and Administrators may write to; ``icacls`` the key to SYSTEM and Administrators
    only (inheritance removed), grant Users read on the public files (the installer's folder
    ACL gives files made later no Users access), then read the key's DACL back and refuse
    unless it is protected and names nobody else."""
    if (platform or sys.platform) == "win32":
        return _take_custody_windows(device_dir, run or subprocess.run, api)
    key = device_dir / "device.key"
    st = device_dir.stat()
    if st.st_mode & 0o022 or (os.geteuid() == 0 and st.st_uid != 0):
        raise PermissionError(f"{device_dir}: must be owned by root and not writable by "
                              "others (the installer makes it root:root 0755)")
    if os.geteuid() == 0:
        os.chown(key, 0, 0)
    os.chmod(key, 0o600)
    return key


#: Public parts of the identity: every session may read them.
PUBLIC_IDENTITY_FILES = ("device.json", "device.crt", "ca.crt", "rules.pub")


def _icacls() -> str:
    return str(Path(os.environ.get("SYSTEMROOT") or r"C:\Windows") / "System32" / "icacls.exe")


def _take_custody_windows(device_dir: Path, run: Callable[..., subprocess.CompletedProcess[str]],
                          api: PipeApi | None) -> Path:
    from .backends import winpipe

    api = api or winpipe.default_api()
    key = device_dir / "device.key"
    writers = winpipe.others_with(api.file_sddl(str(device_dir)), winpipe.FOLDER_WRITE)
    if writers:
        raise PermissionError(f"{device_dir}: {', '.join(writers)} may write to it (and swap "
                              "the key or the certificate); only SYSTEM and Administrators may "
                              "(the installer gives Users read)")

    def icacls(*args: str) -> None:
        proc = run([_icacls(), *args], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise PermissionError(f"icacls {' '.join(args)} failed (exit {proc.returncode}): "
                                  f"{(proc.stdout or '') + (proc.stderr or '')}".strip())

    icacls(str(key), "/inheritance:r", "/grant:r", f"*{SYSTEM_SID}:F",
           f"*{ADMINISTRATORS_SID}:F")
    for name in PUBLIC_IDENTITY_FILES:
        if (device_dir / name).exists():
            icacls(str(device_dir / name), "/grant", f"*{USERS_SID}:R")
    sddl = api.file_sddl(str(key))
    protected, _ = winpipe.dacl(sddl)
    readers = winpipe.others_with(sddl, 0xFFFFFFFF)
    if readers or not protected:
        raise PermissionError(f"{key}: after icacls its DACL still lets "
                              f"{', '.join(readers) or 'inherited entries'} in ({sddl}); "
                              "refusing to serve with a key others may read")
    return key


def _frame(kind: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(len(payload), kind) + payload


async def _read_frame(reader: FrameReader) -> tuple[int, bytes]:
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


class _Relay:
    """What every relay does with one session connection, whatever carries it."""

    def __init__(self, channel_factory: Callable[[], grpc.aio.Channel],
                 allow: Callable[[Peer], bool]) -> None:
        self.channel_factory, self.allow = channel_factory, allow
        self.refused: list[Peer] = []
        self.served: list[Peer] = []
        #: Connections refused because who they are could not be established.
        self.unidentified: list[str] = []

    async def serve_connection(self, reader: FrameReader, writer: FrameWriter,
                               identify: Callable[[], Peer]) -> None:
        """Serve one session: *identify* says who it is (the kernel's word; PermissionError:
        unknown, and refused), the allow rule decides, then one RPC is relayed."""
        try:
            try:
                peer = identify()
            except PermissionError as exc:
                self.unidentified.append(str(exc))
                log.warning("uplink relay: refused a session: %s", exc)
                writer.write(_status(grpc.StatusCode.PERMISSION_DENIED,
                                     f"the uplink relay could not tell who this is: {exc}"))
                return
            if not self.allow(peer):
                self.refused.append(peer)
                log.warning("uplink relay: refused %s", peer.describe())
                writer.write(_status(grpc.StatusCode.PERMISSION_DENIED,
                                     f"{peer.user} may not use this device's uplink"))
                return
            kind, payload = await _read_frame(reader)
            method = payload.decode() if kind == OPEN else ""
            if method not in METHODS:
                writer.write(_status(grpc.StatusCode.UNIMPLEMENTED, f"not relayed: {method}"))
                return
            self.served.append(peer)
            log.info("uplink relay: %s for %s", method.rsplit("/", 1)[-1], peer.describe())
            await self._forward(method, peer, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            log.info("uplink relay: session connection ended: %s", exc)
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
            writer.close()

    async def _forward(self, method: str, peer: Peer, reader: FrameReader,
                       writer: FrameWriter) -> None:
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


class UplinkRelay(_Relay):
    """Serves session agents on the Unix socket *socket_path*; opens the collector streams
    with *channel_factory* (the device's mTLS identity)."""

    def __init__(self, socket_path: Path, channel_factory: Callable[[], grpc.aio.Channel], *,
                 allow: Callable[[Peer], bool] = lambda peer: True,
                 credentials: Callable[[socket.socket], Peer] = peer_credentials) -> None:
        super().__init__(channel_factory, allow)
        self.socket_path, self.credentials = socket_path, credentials
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
        await self.serve_connection(
            reader, writer, lambda: self.credentials(writer.get_extra_info("socket")))


class PipeUplinkRelay(_Relay):
    """Serves session agents on the Windows named pipe *pipe_name* (run as SYSTEM). Who each
    session is comes from its token (:meth:`agent.backends.winpipe.PipeApi.client_identity`);
    the pipe's DACL is *sddl*. *on_fatal* is called if a thread cannot stop impersonating a
    client (default: the process exits; the scheduled task restarts it)."""

    def __init__(self, pipe_name: str, channel_factory: Callable[[], grpc.aio.Channel], *,
                 allow: Callable[[Peer], bool] | None = None, api: PipeApi | None = None,
                 sddl: str = "", on_fatal: Callable[[BaseException], None] | None = None
                 ) -> None:
        super().__init__(channel_factory, allow or windows_allow())
        self.pipe_name, self.api, self.sddl, self.on_fatal = pipe_name, api, sddl, on_fatal
        self._server: PipeServer | None = None

    async def start(self) -> PipeUplinkRelay:
        from .backends import winpipe

        kwargs: dict[str, Any] = {"on_fatal": self.on_fatal} if self.on_fatal else {}
        self._server = await winpipe.PipeServer(
            self.api or winpipe.default_api(), self.pipe_name,
            self.sddl or winpipe.RELAY_PIPE_SDDL, self._handle, **kwargs).start()
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    async def _handle(self, reader: FrameReader, writer: FrameWriter,
                      identity: Callable[[], Identity]) -> None:
        def identify() -> Peer:
            who = identity()
            return Peer(who.pid, -1, -1, who.account, who.sid, who.groups)
        await self.serve_connection(reader, writer, identify)


# -- the session side --------------------------------------------------------------------------
def _error(code: grpc.StatusCode, details: str,
           trailing: list[tuple[str, str]] | None = None) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(),
                                grpc.aio.Metadata(*(trailing or [])), details)


class _RelayCall:
    def __init__(self, where: str, connect: Connector, method: str, request: Any, stream: bool,
                 serialize: Callable[[Any], bytes], deserialize: Callable[[bytes], Any]) -> None:
        self.where, self.connect, self.method = where, connect, method
        self.request, self.stream = request, stream
        self.serialize, self.deserialize = serialize, deserialize
        self._writer: FrameWriter | None = None
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

    async def _send(self, writer: FrameWriter) -> None:
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
            reader, writer = await self.connect()
        except OSError as exc:  # absent, refused, or not the relay (winpipe.ServerNotTrusted)
            raise _error(grpc.StatusCode.UNAVAILABLE,
                         f"uplink relay not reachable at {self.where}: {exc}") from None
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
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class RelayChannel:
    """The part of ``grpc.aio.Channel`` that the generated ``CollectorStub`` uses, over the
    relay's Unix socket *path* (or, with *connect*, whatever that opens: the Windows pipe)."""

    def __init__(self, path: Path | str, connect: Connector | None = None) -> None:
        self.path = path

        async def unix() -> tuple[FrameReader, FrameWriter]:
            return await asyncio.open_unix_connection(str(path))

        self.connect: Connector = connect or unix
        self._calls: list[_RelayCall] = []

    def _multi(self, method: str, stream: bool, request_serializer: Any,
               response_deserializer: Any) -> Callable[..., _RelayCall]:
        def call(request: Any, *args: Any, **kwargs: Any) -> _RelayCall:
            c = _RelayCall(str(self.path), self.connect, method, request, stream,
                           request_serializer or bytes, response_deserializer or bytes)
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


def relay_pipe() -> str:
    return os.environ.get(PIPE_ENV) or DEFAULT_PIPE


def pipe_relay_channel(name: str | None = None, api: PipeApi | None = None) -> RelayChannel:
    """A :class:`RelayChannel` over the Windows relay's named pipe; each call connects and
    checks that SYSTEM serves the pipe before it sends anything."""
    pipe = name or relay_pipe()

    async def connect() -> tuple[FrameReader, FrameWriter]:
        from .backends import winpipe

        return await winpipe.open_pipe(api or winpipe.default_api(), pipe)

    return RelayChannel(pipe, connect)


def session_channel_factory(data: DataDir, collector: str,
                            socket_path: Path | None = None, *, platform: str | None = None,
                            pipe_name: str | None = None, pipe_api: PipeApi | None = None
                            ) -> Callable[[], grpc.aio.Channel]:
    """How a session agent reaches the collector: through the relay when the device's
    identity is shared and the relay's socket exists or the key is not readable (so captures
    stay in the spool until the relay is up); directly with the key otherwise.

    Windows: a shared identity always goes through the relay's pipe (``os.access`` does not
    look at ACLs there, so "the key is not readable" cannot be asked that way)."""
    from .uplink import mtls_channel_factory

    if (platform or sys.platform) == "win32" and data.shared_identity:
        name = pipe_name or relay_pipe()
        return lambda: cast(grpc.aio.Channel, pipe_relay_channel(name, pipe_api))
    path = socket_path or relay_socket()
    if data.shared_identity and (path.exists() or not os.access(data.device_key, os.R_OK)):
        return lambda: cast(grpc.aio.Channel, RelayChannel(path))
    return mtls_channel_factory(collector, data.ca_cert.read_bytes(),
                                data.device_key.read_bytes(), data.device_cert.read_bytes())


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:  # Windows' event loop: a plain handler, then the loop
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))


async def serve(device_dir: Path, socket_path: Path, allow_group: str = "", *,
                pipe_name: str | None = None, platform: str | None = None) -> None:
    from .enrol import load_device
    from .uplink import mtls_channel_factory

    windows = (platform or sys.platform) == "win32"
    data = DataDir(device_dir, device_dir)
    # Windows: soon after the SYSTEM enrol task writes the identity, custody makes its public
    # parts readable (the folder gives new files no Users access), so sessions can start.
    poll = 2.0 if windows else 30.0
    waited = 0.0
    while (device := load_device(data)) is None:  # the enrol task has not succeeded yet
        if waited % 300 == 0:
            log.warning("uplink relay: %s is not enrolled yet; waiting", device_dir)
        await asyncio.sleep(poll)
        waited += poll
    take_custody(device_dir, platform=platform)
    factory = mtls_channel_factory(device.collector, data.ca_cert.read_bytes(),
                                   data.device_key.read_bytes(), data.device_cert.read_bytes())
    relay: UplinkRelay | PipeUplinkRelay
    if windows:
        groups = [g for g in allow_group.split(",") if g]
        relay = await PipeUplinkRelay(pipe_name or relay_pipe(), factory,
                                      allow=windows_allow(groups=groups)).start()
        where = relay.pipe_name
    else:
        relay = await UplinkRelay(socket_path, factory,
                                  allow=in_group(allow_group) if allow_group else (lambda p: True)
                                  ).start()
        where = str(socket_path)
    log.info("uplink relay for device %s on %s", device.device_id, where)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    try:
        await stop.wait()
    finally:
        await relay.stop()


def main(argv: list[str] | None = None, *, platform: str | None = None,
         api: PipeApi | None = None) -> int:
    from .paths import machine_device_dir

    platform = platform or sys.platform
    windows = platform == "win32"
    ap = argparse.ArgumentParser(prog="python -m agent.relay", description=(
        "Hold this device's key (root/SYSTEM only) and relay the session agents' streams to "
        "the collector over mutual TLS, naming each session by its kernel-verified account."))
    ap.add_argument("--device-dir", type=Path, default=machine_device_dir(platform),
                    help="the machine-wide device folder (default: %(default)s)")
    ap.add_argument("--socket", type=Path, default=relay_socket(),
                    help="the Unix socket the session agents connect to (default: %(default)s)")
    ap.add_argument("--pipe", default=relay_pipe(),
                    help="Windows: the named pipe the session agents connect to "
                         "(default: %(default)s)")
    ap.add_argument("--allow-group", default="",
                    help="only root and members of this group may use the uplink (Windows: "
                         "SYSTEM and these comma-separated group or account SIDs)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if windows:
        bad = [g for g in args.allow_group.split(",") if g and not g.startswith("S-1-")]
        if bad:
            print(f"agent.relay: --allow-group takes SIDs on Windows (names are localised), "
                  f"not {', '.join(bad)}", file=sys.stderr)
            return 2
        from .backends import winpipe

        try:
            me = (api or winpipe.default_api()).current_user_sid()
        except OSError as exc:
            print(f"agent.relay: cannot tell which account this is: {exc}", file=sys.stderr)
            return 2
        if me != SYSTEM_SID:
            print(f"agent.relay: run as SYSTEM ({SYSTEM_SID}), as the installer's "
                  f"\\Vigil\\Vigil Uplink task does: it must be the only reader of the device "
                  f"key (this process runs as {me})", file=sys.stderr)
            return 2
    elif os.geteuid() != 0:
        print("agent.relay: run as root: it must be the only reader of the device key",
              file=sys.stderr)
        return 2
    asyncio.run(serve(args.device_dir, args.socket, args.allow_group, pipe_name=args.pipe,
                      platform=platform))
    return 0


if __name__ == "__main__":
    sys.exit(main())
