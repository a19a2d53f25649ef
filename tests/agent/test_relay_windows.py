"""The Windows uplink relay (agent.relay.PipeUplinkRelay over agent.backends.winpipe) against a
simulated kernel32/advapi32 that behaves as Microsoft documents it. NOT a Windows test: nothing
here has run on Windows (docs/security.md lists what is unproven).

The simulation is at the DLL boundary: every function the seam calls is a real C-ABI thunk
(``ctypes.CFUNCTYPE``) built from the seam's own declared prototype, so ctypes marshals every
argument for real (handles as pointers, OVERLAPPED/SECURITY_ATTRIBUTES/token buffers in real
memory, out-parameters written through real pointers). Behind the thunks, in-memory byte pipes
with overlapped semantics, and, from the documentation:

* *CreateNamedPipe*: ``FILE_FLAG_FIRST_PIPE_INSTANCE`` fails with ERROR_ACCESS_DENIED when the
  pipe exists; another instance needs ``FILE_CREATE_PIPE_INSTANCE`` in the pipe's DACL
  (*Named Pipe Security and Access Rights*); only SYSTEM may make SYSTEM the owner;
* *CreateFile* on a pipe: an access check of the caller's token against the DACL (generic
  rights mapped as for files, plus the SYNCHRONIZE and FILE_READ_ATTRIBUTES CreateFile always
  asks for); ERROR_PIPE_BUSY when no instance is listening; *WaitNamedPipe* waits for one;
* *ConnectNamedPipe* (overlapped): ERROR_IO_PENDING, or ERROR_PIPE_CONNECTED when the client
  came first; *ReadFile*/*WriteFile*/*GetOverlappedResult*/*CancelIoEx* with
  ERROR_BROKEN_PIPE, ERROR_NO_DATA, ERROR_OPERATION_ABORTED as documented; synchronous I/O on
  the relay's handles is reported as a defect;
* *ImpersonateNamedPipeClient* fails with ERROR_CANNOT_IMPERSONATE before a read; impersonation
  is per thread; *OpenThreadToken* at SecurityIdentification needs OpenAsSelf=TRUE
  (ERROR_BAD_IMPERSONATION_LEVEL otherwise); *GetTokenInformation*/*LookupAccountSidW* with
  their ERROR_INSUFFICIENT_BUFFER protocols; *OpenProcess*/*OpenProcessToken* denied to a
  standard user on another account's (e.g. SYSTEM's) process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import re
import subprocess
import threading
import time
import types
from collections.abc import AsyncIterator, Callable, Iterator
from ctypes import wintypes as w
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from agent import relay as relay_mod
from agent.backends import winpipe
from agent.backends.winpipe import PipeApi
from agent.enrol import enroll
from agent.paths import DataDir
from agent.relay import (
    MSG,
    OPEN,
    STATUS,
    Peer,
    PipeUplinkRelay,
    RelayChannel,
    _frame,
    pipe_relay_channel,
    session_channel_factory,
    take_custody,
    windows_allow,
)
from agent.spool import Spool
from agent.uplink import Uplink, mtls_channel_factory
from proto import vigil_pb2 as pb
from tests.agent.minicollector import MiniCollector
from tests.agent.test_device_key_relay import send_through as _send

PIPE = r"\\.\pipe\vigil-uplink-test"
PSEUDO_PROCESS = ctypes.c_void_p(-1).value
PSEUDO_THREAD = ctypes.c_void_p(-2).value
INVALID = winpipe.INVALID_HANDLE_VALUE
ERROR_INVALID_PARAMETER, ERROR_INVALID_NAME, ERROR_INVALID_OWNER = 87, 123, 1307
ERROR_IO_INCOMPLETE, ERROR_PIPE_LISTENING, ERROR_CANT_OPEN_ANONYMOUS = 996, 536, 1347
ERROR_GEN_FAILURE = 31


# -- accounts and SIDs --------------------------------------------------------------------------
@dataclass(frozen=True)
class Account:
    sid: str
    domain: str
    name: str
    groups: tuple[str, ...]

    @property
    def token_sids(self) -> tuple[str, ...]:
        return (self.sid, *self.groups)


EVERYONE, USERS, INTERACTIVE, AUTHENTICATED = "S-1-1-0", "S-1-5-32-545", "S-1-5-4", "S-1-5-11"
SYSTEM = Account("S-1-5-18", "NT AUTHORITY", "SYSTEM", ("S-1-5-32-544", EVERYONE, AUTHENTICATED))
PUPIL = Account("S-1-5-21-1004336348-1177238915-682003330-1105", "SCHOOL", "pupil1",
                (EVERYONE, USERS, INTERACTIVE, "S-1-2-1", AUTHENTICATED, "S-1-5-15",
                 "S-1-5-5-0-271828", "S-1-2-0"))
PUPIL2 = Account("S-1-5-21-1004336348-1177238915-682003330-1106", "SCHOOL", "pupil2",
                 (EVERYONE, USERS, INTERACTIVE, AUTHENTICATED, "S-1-5-5-0-314159"))
#: pupil1 logged on over the network (a share, WinRM): NETWORK, not INTERACTIVE
NETWORK_PUPIL = Account(PUPIL.sid, "SCHOOL", "pupil1", (EVERYONE, USERS, "S-1-5-2", AUTHENTICATED))
ANONYMOUS = Account("S-1-5-7", "NT AUTHORITY", "ANONYMOUS LOGON", (EVERYONE, "S-1-5-2"))
ALIASES = {"SY": "S-1-5-18", "BA": "S-1-5-32-544", "BU": USERS, "IU": INTERACTIVE,
           "AU": AUTHENTICATED, "WD": EVERYONE, "AN": "S-1-5-7", "NU": "S-1-5-2",
           "CO": "S-1-3-0"}


def sid_bytes(text: str) -> bytes:
    parts = text.split("-")
    assert parts[0] == "S", text
    subs = [int(x) for x in parts[3:]]
    return (bytes([int(parts[1]), len(subs)]) + int(parts[2]).to_bytes(6, "big")
            + b"".join(x.to_bytes(4, "little") for x in subs))


def sid_at(addr: int) -> str:
    count = ctypes.string_at(addr, 2)[1]
    raw = ctypes.string_at(addr, 8 + 4 * count)
    subs = [int.from_bytes(raw[8 + 4 * i:12 + 4 * i], "little") for i in range(count)]
    return "-".join(["S", str(raw[0]), str(int.from_bytes(raw[2:8], "big")), *map(str, subs)])


# -- an SDDL reading of our own (not winpipe's), for the fake's access checks -------------------
GENERIC = {"GA": 0x1F01FF, "GR": 0x120089, "GW": 0x120116, "GX": 0x1200A0, "FA": 0x1F01FF,
           "FR": 0x120089, "FW": 0x120116, "FX": 0x1200A0, "RC": 0x20000}


def rights_of(text: str) -> int:
    if text.lower().startswith("0x"):
        mask = int(text, 16)
        out = mask & 0x0FFFFFFF
        for bit, mapped in ((0x10000000, 0x1F01FF), (0x80000000, 0x120089),
                            (0x40000000, 0x120116), (0x20000000, 0x1200A0)):
            if mask & bit:
                out |= mapped
        return out
    out = 0
    for i in range(0, len(text), 2):
        out |= GENERIC[text[i:i + 2]]
    return out


def parse_sddl(text: str) -> tuple[str, list[tuple[str, str, int, str]]]:
    """(owner SID or "", [(type, flags, rights, SID)])."""
    m = re.match(r"^(?:O:(S(?:-\d+)+|[A-Z]{2}))?(?:G:\S\S)?D:([A-Z]*)((?:\([^)]*\))*)$", text)
    if not m:
        raise ValueError(text)
    aces = []
    for body in re.findall(r"\(([^)]*)\)", m.group(3)):
        kind, flags, rights, _, _, who = body.split(";")
        aces.append((kind, flags, rights_of(rights), ALIASES.get(who, who)))
    return ALIASES.get(m.group(1) or "", m.group(1) or ""), aces


# -- the simulated kernel -----------------------------------------------------------------------
@dataclass(eq=False)
class Event:
    signalled: bool = False


@dataclass(eq=False)
class Token:
    account: Account
    level: int  # 0 anonymous, 1 identification, 2 impersonation, -1 primary


@dataclass(eq=False)
class ProcessObject:
    proc: Proc


@dataclass(eq=False)
class Pipe:
    name: str
    sddl: str
    owner: str
    aces: list[tuple[str, str, int, str]]
    instances: list[Instance] = field(default_factory=list)
    open_modes: list[int] = field(default_factory=list)
    pipe_modes: list[int] = field(default_factory=list)


@dataclass(eq=False)
class End:
    inst: Instance
    side: str  # "server" | "client"
    proc: Proc
    overlapped: bool
    access: int = 0
    closed: bool = False


@dataclass(eq=False)
class Instance:
    pipe: Pipe
    server: Proc
    server_end: End | None = None
    client: Proc | None = None
    client_end: End | None = None
    client_flags: int = 0
    level: int = 2
    disconnected: bool = False
    to_server: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    server_reads: int = 0
    received: int = 0  # bytes the client ever wrote to the server


@dataclass(eq=False)
class Op:
    kind: str
    end: End
    addr: int
    event: int
    buf: int = 0
    size: int = 0
    done: bool = False
    cancelled: bool = False
    error: int = 0
    count: int = 0


class Proc:
    """A simulated process: its account, pid and its own view of the two DLLs."""

    def __init__(self, kernel: FakeKernel, account: Account, pid: int) -> None:
        self.kernel, self.account, self.pid = kernel, account, pid
        self.libs = kernel.libs_for(self)
        self.api = PipeApi(load=self.load, last_error=kernel.last_error)

    def load(self, name: str) -> Any:
        return self.libs[name]


class FakeKernel:
    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.tls = threading.local()
        self.handles: dict[int, object] = {}
        self._next = 0x1000
        self.blocks: dict[int, Any] = {}
        self.sds: dict[int, str] = {}
        self.pipes: dict[str, Pipe] = {}
        self.ops: dict[int, Op] = {}
        self.impersonating: dict[int, Token] = {}
        self.procs: dict[int, Proc] = {}
        self.accounts = {a.sid: a for a in (SYSTEM, PUPIL, PUPIL2, ANONYMOUS)}
        self.calls: list[tuple[Any, ...]] = []
        self.fail: dict[str, int] = {}
        self.errors: list[str] = []
        self.files: dict[str, str] = {}
        #: while set (and not yet signalled), process `gate_pid` cannot add pipe instances
        self.gate: threading.Event | None = None
        self.gate_pid = 4000
        self.waiting_for_instance = threading.Event()
        self.before_connect: Callable[[], None] | None = None

    # -- plumbing ---------------------------------------------------------------------------
    def process(self, account: Account, pid: int) -> Proc:
        proc = Proc(self, account, pid)
        self.procs[pid] = proc
        return proc

    def last_error(self) -> int:
        return int(getattr(self.tls, "error", 0))

    def _err(self, code: int, value: Any = 0) -> Any:
        self.tls.error = code
        return value

    def _new(self, obj: object) -> int:
        self._next += 4
        self.handles[self._next] = obj
        return self._next

    def _alloc(self, data: bytes) -> int:
        buf = ctypes.create_string_buffer(data, max(len(data), 1))
        self.blocks[ctypes.addressof(buf)] = buf
        return ctypes.addressof(buf)

    def _alloc_wstr(self, text: str) -> int:
        buf = ctypes.create_unicode_buffer(text)
        self.blocks[ctypes.addressof(buf)] = buf
        return ctypes.addressof(buf)

    def libs_for(self, proc: Proc) -> dict[str, Any]:
        libs = {}
        for dll, funcs in winpipe.prototypes().items():
            lib = types.SimpleNamespace()
            for name, (restype, argtypes) in funcs.items():
                impl = getattr(self, "_" + name)

                def call(*args: Any, _impl: Any = impl, _name: str = name,
                         _res: Any = restype) -> Any:
                    try:
                        return _impl(proc, *args)
                    except Exception as exc:  # never unwind into ctypes: record it
                        self.errors.append(f"{_name}: {exc!r}")
                        return self._err(ERROR_GEN_FAILURE, None if _res is w.HANDLE else 0)

                setattr(lib, name, ctypes.CFUNCTYPE(restype, *argtypes)(call))
            libs[dll] = lib
        return libs

    def _live(self, name: str) -> Pipe | None:
        pipe = self.pipes.get(name.lower())
        if pipe is not None and all(i.server_end is None or i.server_end.closed
                                    for i in pipe.instances):
            del self.pipes[name.lower()]
            return None
        return pipe

    def _allowed(self, pipe: Pipe, account: Account, desired: int) -> bool:
        granted = 0
        for kind, _, rights, who in pipe.aces:
            if kind == "A" and who in account.token_sids:
                granted |= rights
        return desired & granted == desired

    def _end(self, h: Any, side: str | None = None) -> End | None:
        obj = self.handles.get(h)
        if isinstance(obj, End) and not obj.closed and (side is None or obj.side == side):
            return obj
        return None

    def _complete(self, op: Op, error: int, count: int = 0) -> None:
        op.done, op.error, op.count = True, error, count
        ev = self.handles.get(op.event)
        if isinstance(ev, Event):
            ev.signalled = True
        self.cv.notify_all()

    def _progress(self) -> None:
        for op in list(self.ops.values()):
            if op.done:
                continue
            inst = op.end.inst
            if op.cancelled:
                self._complete(op, winpipe.ERROR_OPERATION_ABORTED)
            elif op.kind == "connect":
                if inst.client is not None:
                    self._complete(op, 0)
            elif op.kind == "read":
                inbox = inst.to_server if op.end.side == "server" else inst.to_client
                peer = inst.client_end if op.end.side == "server" else inst.server_end
                if inbox:
                    k = min(op.size, len(inbox))
                    ctypes.memmove(op.buf, bytes(inbox[:k]), k)
                    del inbox[:k]
                    if op.end.side == "server":
                        inst.server_reads += 1
                    self._complete(op, 0, k)
                elif inst.disconnected:
                    self._complete(op, winpipe.ERROR_PIPE_NOT_CONNECTED)
                elif peer is not None and peer.closed:
                    self._complete(op, winpipe.ERROR_BROKEN_PIPE)

    def _start(self, end: End, kind: str, pov: Any, buf: int = 0, size: int = 0) -> Op | None:
        if not end.overlapped or not pov:
            self.errors.append(f"synchronous {kind} on a pipe handle")
            return None
        ov = pov.contents
        addr = ctypes.addressof(ov)
        if addr in self.ops:
            self.errors.append(f"{kind}: an OVERLAPPED reused while still pending")
        ev = self.handles.get(ov.hEvent)
        if not isinstance(ev, Event):
            self.errors.append(f"{kind}: OVERLAPPED without an event")
            return None
        ev.signalled = False  # "the system resets the event ... when it begins the operation"
        op = Op(kind, end, addr, ov.hEvent, buf, size)
        self.ops[addr] = op
        return op

    def wait_idle(self, timeout: float = 10) -> bool:
        """Every pipe, event and token handle closed, every block freed."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while self.handles or self.blocks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cv.wait(left)
        return True

    def release(self) -> None:
        """Open the instance gate (a failing test must not leave the relay's listener held)."""
        if self.gate is not None:
            self.gate.set()

    def wait_for(self, what: Callable[[], bool], timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        with self.cv:
            while not what():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cv.wait(left)
        return True

    def leaks(self) -> list[str]:
        with self.cv:
            return ([type(o).__name__ for o in self.handles.values()]
                    + [f"block {a:#x}" for a in self.blocks])

    # -- kernel32 ----------------------------------------------------------------------------
    def _CreateEventW(self, proc: Proc, sa: Any, manual: int, initial: int, name: Any) -> Any:
        with self.cv:
            if not manual:
                self.errors.append("an auto-reset event for overlapped I/O")
            return self._new(Event(bool(initial)))

    def _SetEvent(self, proc: Proc, h: Any) -> int:
        with self.cv:
            ev = self.handles.get(h)
            if not isinstance(ev, Event):
                return int(self._err(winpipe.ERROR_INVALID_HANDLE))
            ev.signalled = True
            self.cv.notify_all()
            return 1

    def _WaitForMultipleObjects(self, proc: Proc, n: int, hs: Any, wait_all: int,
                                ms: int) -> int:
        handles = [hs[i] for i in range(n)]
        deadline = None if ms == winpipe.INFINITE else time.monotonic() + ms / 1000
        with self.cv:
            while True:
                for i, h in enumerate(handles):
                    ev = self.handles.get(h)
                    if not isinstance(ev, Event):
                        self.errors.append(f"WaitForMultipleObjects on a non-event {h!r}")
                        return int(self._err(winpipe.ERROR_INVALID_HANDLE, winpipe.WAIT_FAILED))
                    if ev.signalled:
                        return winpipe.WAIT_OBJECT_0 + i
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return winpipe.WAIT_TIMEOUT
                self.cv.wait(left)

    def _CloseHandle(self, proc: Proc, h: Any) -> int:
        with self.cv:
            obj = self.handles.pop(h, None)
            if obj is None:
                self.errors.append(f"CloseHandle({h!r}): not a handle")
                return int(self._err(winpipe.ERROR_INVALID_HANDLE))
            if isinstance(obj, End):
                if any(op.end is obj and not op.done for op in self.ops.values()):
                    self.errors.append("CloseHandle with I/O still pending")
                obj.closed = True
                self._progress()
            self.cv.notify_all()
            return 1

    def _GetCurrentProcess(self, proc: Proc) -> Any:
        return PSEUDO_PROCESS

    def _GetCurrentThread(self, proc: Proc) -> Any:
        return PSEUDO_THREAD

    def _LocalFree(self, proc: Proc, p: Any) -> Any:
        with self.cv:
            if p is None:
                return None
            if self.blocks.pop(p, None) is None:
                self.errors.append(f"LocalFree({p:#x}): not allocated")
                return p
            self.sds.pop(p, None)
            self.cv.notify_all()
            return None

    def _CreateNamedPipeW(self, proc: Proc, name: str, open_mode: int, pipe_mode: int,
                          max_instances: int, out_size: int, in_size: int, timeout: int,
                          psa: Any) -> Any:
        key = name.lower()
        if not key.startswith("\\\\.\\pipe\\"):
            return self._err(ERROR_INVALID_NAME, INVALID)
        gate = self.gate
        if gate is not None and proc.pid == self.gate_pid and key in self.pipes:
            gate.wait()  # test-controlled: hold back the relay's next instance
        with self.cv:
            sd = psa.contents.lpSecurityDescriptor if psa else None
            sddl = self.sds.get(sd) if sd else None
            if sd and sddl is None:
                self.errors.append("CreateNamedPipeW: an unknown security descriptor")
            self.calls.append(("CreateNamedPipeW", proc.pid, open_mode, pipe_mode))
            pipe = self._live(key)
            if pipe is None:
                sddl = sddl or (f"O:{proc.account.sid}D:(A;;GA;;;SY)(A;;GA;;;BA)"
                                f"(A;;GA;;;{proc.account.sid})(A;;GR;;;WD)(A;;GR;;;AN)")
                owner, aces = parse_sddl(sddl)
                owner = owner or proc.account.sid
                if owner != proc.account.sid and proc.account != SYSTEM:
                    return self._err(ERROR_INVALID_OWNER, INVALID)
                pipe = Pipe(key, sddl, owner, aces)
                self.pipes[key] = pipe
            else:
                if open_mode & winpipe.FILE_FLAG_FIRST_PIPE_INSTANCE:
                    return self._err(winpipe.ERROR_ACCESS_DENIED, INVALID)
                need = (winpipe.FILE_CREATE_PIPE_INSTANCE | winpipe.FILE_GENERIC_READ
                        | winpipe.FILE_GENERIC_WRITE)
                if not self._allowed(pipe, proc.account, need):
                    return self._err(winpipe.ERROR_ACCESS_DENIED, INVALID)
            pipe.open_modes.append(open_mode)
            pipe.pipe_modes.append(pipe_mode)
            inst = Instance(pipe, proc)
            inst.server_end = End(inst, "server", proc, bool(open_mode & 0x40000000))
            pipe.instances.append(inst)
            self.cv.notify_all()
            return self._new(inst.server_end)

    def _ConnectNamedPipe(self, proc: Proc, h: Any, pov: Any) -> int:
        hook, self.before_connect = self.before_connect, None
        if hook is not None:
            hook()
        with self.cv:
            end = self._end(h, "server")
            if end is None:
                return int(self._err(winpipe.ERROR_INVALID_HANDLE))
            if end.inst.client is not None:
                self.calls.append(("ConnectNamedPipe", "ERROR_PIPE_CONNECTED"))
                return int(self._err(winpipe.ERROR_PIPE_CONNECTED))
            if self._start(end, "connect", pov) is None:
                return int(self._err(ERROR_INVALID_PARAMETER))
            self.calls.append(("ConnectNamedPipe", "ERROR_IO_PENDING"))
            return int(self._err(winpipe.ERROR_IO_PENDING))

    def _DisconnectNamedPipe(self, proc: Proc, h: Any) -> int:
        with self.cv:
            end = self._end(h, "server")
            if end is None:
                return int(self._err(winpipe.ERROR_INVALID_HANDLE))
            end.inst.disconnected = True
            end.inst.to_client.clear()  # "any unread data in the pipe is discarded"
            end.inst.to_server.clear()
            self._progress()
            return 1

    def _CreateFileW(self, proc: Proc, name: str, access: int, share: int, psa: Any,
                     disposition: int, flags: int, template: Any) -> Any:
        with self.cv:
            self.calls.append(("CreateFileW", proc.pid, access, flags))
            pipe = self._live(name)
            if pipe is None:
                return self._err(winpipe.ERROR_FILE_NOT_FOUND, INVALID)
            desired = rights_of(f"{access:#x}") | winpipe.SYNCHRONIZE | 0x80
            if not self._allowed(pipe, proc.account, desired):
                return self._err(winpipe.ERROR_ACCESS_DENIED, INVALID)
            inst = next((i for i in pipe.instances if i.client is None
                         and i.server_end is not None and not i.server_end.closed), None)
            if inst is None:
                self.calls.append(("CreateFileW", "ERROR_PIPE_BUSY"))
                return self._err(winpipe.ERROR_PIPE_BUSY, INVALID)
            inst.client, inst.client_flags = proc, flags
            inst.level = (flags >> 16) & 3 if flags & winpipe.SECURITY_SQOS_PRESENT else 2
            inst.client_end = End(inst, "client", proc, bool(flags & 0x40000000), desired)
            self._progress()
            return self._new(inst.client_end)

    def _WaitNamedPipeW(self, proc: Proc, name: str, ms: int) -> int:
        deadline = time.monotonic() + ms / 1000
        with self.cv:
            self.calls.append(("WaitNamedPipeW", proc.pid))
            while True:
                pipe = self._live(name)
                if pipe is None:
                    return int(self._err(winpipe.ERROR_FILE_NOT_FOUND))
                if any(i.client is None and i.server_end and not i.server_end.closed
                       for i in pipe.instances):
                    return 1
                self.waiting_for_instance.set()
                left = deadline - time.monotonic()
                if left <= 0:
                    return int(self._err(winpipe.ERROR_SEM_TIMEOUT))
                self.cv.wait(left)

    def _ReadFile(self, proc: Proc, h: Any, buf: Any, size: int, pread: Any, pov: Any) -> int:
        with self.cv:
            end = self._end(h)
            if end is None:
                return int(self._err(winpipe.ERROR_INVALID_HANDLE))
            if pread:
                self.errors.append("ReadFile: lpNumberOfBytesRead with overlapped I/O")
            op = self._start(end, "read", pov, buf, size)
            if op is None:
                return int(self._err(ERROR_INVALID_PARAMETER))
            self._progress()
            if op.done:
                if op.error:
                    del self.ops[op.addr]
                    return int(self._err(op.error))
                return 1
            return int(self._err(winpipe.ERROR_IO_PENDING))

    def _WriteFile(self, proc: Proc, h: Any, buf: Any, size: int, pwritten: Any,
                   pov: Any) -> int:
        with self.cv:
            end = self._end(h)
            if end is None:
                return int(self._err(winpipe.ERROR_INVALID_HANDLE))
            inst = end.inst
            if inst.disconnected:
                return int(self._err(winpipe.ERROR_PIPE_NOT_CONNECTED))
            if end.side == "server" and inst.client is None:
                return int(self._err(ERROR_PIPE_LISTENING))
            peer = inst.client_end if end.side == "server" else inst.server_end
            if peer is None or peer.closed:
                return int(self._err(winpipe.ERROR_NO_DATA))  # "the pipe is being closed"
            op = self._start(end, "write", pov)
            if op is None:
                return int(self._err(ERROR_INVALID_PARAMETER))
            data = ctypes.string_at(buf, size)
            if end.side == "server":
                inst.to_client += data
            else:
                inst.to_server += data
                inst.received += size
            self._complete(op, 0, size)
            self._progress()
            return 1

    def _GetOverlappedResult(self, proc: Proc, h: Any, pov: Any, pcount: Any,
                             wait: int) -> int:
        with self.cv:
            op = self.ops.get(ctypes.addressof(pov.contents))
            if op is None:
                self.errors.append("GetOverlappedResult for no operation")
                return int(self._err(ERROR_INVALID_PARAMETER))
            while not op.done:
                if not wait:
                    return int(self._err(ERROR_IO_INCOMPLETE))
                self.cv.wait()
            del self.ops[op.addr]
            if op.error:
                return int(self._err(op.error))
            pcount[0] = op.count
            return 1

    def _CancelIoEx(self, proc: Proc, h: Any, pov: Any) -> int:
        with self.cv:
            obj = self.handles.get(h)
            addr = ctypes.addressof(pov.contents) if pov else None
            ops = [op for op in self.ops.values() if op.end is obj and not op.done
                   and (addr is None or op.addr == addr)]
            if not ops:
                return int(self._err(winpipe.ERROR_NOT_FOUND))
            for op in ops:
                op.cancelled = True
            self._progress()
            return 1

    def _GetNamedPipeClientProcessId(self, proc: Proc, h: Any, ppid: Any) -> int:
        with self.cv:
            end = self._end(h, "server")
            if end is None or end.inst.client is None:
                return int(self._err(winpipe.ERROR_INVALID_HANDLE))
            ppid[0] = end.inst.client.pid
            return 1

    def _GetNamedPipeServerProcessId(self, proc: Proc, h: Any, ppid: Any) -> int:
        with self.cv:
            end = self._end(h, "client")
            if end is None:
                return int(self._err(winpipe.ERROR_INVALID_HANDLE))
            ppid[0] = end.inst.server.pid
            return 1

    def _OpenProcess(self, proc: Proc, access: int, inherit: int, pid: int) -> Any:
        with self.cv:
            target = self.procs.get(pid)
            if target is None:
                return self._err(ERROR_INVALID_PARAMETER, None)
            # a process's default DACL: its own account, SYSTEM (and Administrators)
            if proc.account != SYSTEM and proc.account.sid != target.account.sid:
                return self._err(winpipe.ERROR_ACCESS_DENIED, None)
            return self._new(ProcessObject(target))

    # -- advapi32 ----------------------------------------------------------------------------
    def _OpenProcessToken(self, proc: Proc, hproc: Any, access: int, ptok: Any) -> int:
        with self.cv:
            if hproc == PSEUDO_PROCESS:
                target = proc
            else:
                obj = self.handles.get(hproc)
                if not isinstance(obj, ProcessObject):
                    return int(self._err(winpipe.ERROR_INVALID_HANDLE))
                target = obj.proc
            if proc.account != SYSTEM and proc.account.sid != target.account.sid:
                return int(self._err(winpipe.ERROR_ACCESS_DENIED))
            ptok[0] = self._new(Token(target.account, -1))
            return 1

    def _ConvertStringSecurityDescriptorToSecurityDescriptorW(
            self, proc: Proc, text: str, revision: int, ppsd: Any, psize: Any) -> int:
        try:
            parse_sddl(text)
        except ValueError:
            return int(self._err(ERROR_INVALID_PARAMETER))
        with self.cv:
            addr = self._alloc(b"SD:" + text.encode("utf-16-le"))
            self.sds[addr] = text
            ppsd[0] = addr
            return 1

    def _ConvertSecurityDescriptorToStringSecurityDescriptorW(
            self, proc: Proc, psd: Any, revision: int, info: int, pps: Any, plen: Any) -> int:
        with self.cv:
            text = self.sds.get(psd)
            if text is None:
                return int(self._err(ERROR_INVALID_PARAMETER))
            pps[0] = self._alloc_wstr(text)
            return 1

    def _ImpersonateNamedPipeClient(self, proc: Proc, h: Any) -> int:
        tid = threading.get_ident()
        with self.cv:
            self.calls.append(("ImpersonateNamedPipeClient", tid))
            if code := self.fail.pop("ImpersonateNamedPipeClient", 0):
                return int(self._err(code))
            end = self._end(h, "server")
            if end is None or end.inst.client is None:
                return int(self._err(winpipe.ERROR_INVALID_HANDLE))
            if end.inst.server_reads == 0:
                return int(self._err(winpipe.ERROR_CANNOT_IMPERSONATE))
            self.impersonating[tid] = Token(end.inst.client.account, end.inst.level)
            return 1

    def _RevertToSelf(self, proc: Proc) -> int:
        tid = threading.get_ident()
        with self.cv:
            self.calls.append(("RevertToSelf", tid))
            if code := self.fail.pop("RevertToSelf", 0):
                return int(self._err(code))
            self.impersonating.pop(tid, None)
            return 1

    def _OpenThreadToken(self, proc: Proc, thread: Any, access: int, as_self: int,
                         ptok: Any) -> int:
        with self.cv:
            if code := self.fail.pop("OpenThreadToken", 0):
                return int(self._err(code))
            if thread != PSEUDO_THREAD:
                return int(self._err(winpipe.ERROR_INVALID_HANDLE))
            tok = self.impersonating.get(threading.get_ident())
            if tok is None:
                return int(self._err(winpipe.ERROR_NO_TOKEN))
            if tok.level == 0:
                return int(self._err(ERROR_CANT_OPEN_ANONYMOUS))
            if tok.level == 1 and not as_self:
                return int(self._err(winpipe.ERROR_BAD_IMPERSONATION_LEVEL))
            ptok[0] = self._new(Token(tok.account, tok.level))
            return 1

    def _GetTokenInformation(self, proc: Proc, h: Any, cls: int, buf: Any, size: int,
                             pret: Any) -> int:
        with self.cv:
            if buf and (code := self.fail.pop("GetTokenInformation", 0)):
                return int(self._err(code))
            tok = self.handles.get(h)
            if not isinstance(tok, Token):
                return int(self._err(winpipe.ERROR_INVALID_HANDLE))
            sa_size = ctypes.sizeof(winpipe.SID_AND_ATTRIBUTES)
            if cls == winpipe.TOKEN_USER_CLASS:
                sids, header = [tok.account.sid], sa_size
            elif cls == winpipe.TOKEN_GROUPS_CLASS:
                sids = list(tok.account.groups)
                header = winpipe.TOKEN_GROUPS.Groups.offset + sa_size * len(sids)
            else:
                return int(self._err(ERROR_INVALID_PARAMETER))
            blobs = [sid_bytes(s) for s in sids]
            need = header + sum(map(len, blobs))
            pret[0] = need
            if not buf or size < need:
                return int(self._err(winpipe.ERROR_INSUFFICIENT_BUFFER))
            first = 0 if cls == winpipe.TOKEN_USER_CLASS else winpipe.TOKEN_GROUPS.Groups.offset
            if cls == winpipe.TOKEN_GROUPS_CLASS:
                winpipe.TOKEN_GROUPS.from_address(buf).GroupCount = len(sids)
            at = buf + header
            for i, blob in enumerate(blobs):
                entry = winpipe.SID_AND_ATTRIBUTES.from_address(buf + first + i * sa_size)
                entry.Sid = at
                entry.Attributes = 0 if cls == winpipe.TOKEN_USER_CLASS else 0x7
                ctypes.memmove(at, blob, len(blob))
                at += len(blob)
            return 1

    def _LookupAccountSidW(self, proc: Proc, system: Any, psid: Any, name: Any, pcch: Any,
                           domain: Any, pdcch: Any, puse: Any) -> int:
        with self.cv:
            if code := self.fail.pop("LookupAccountSidW", 0):
                return int(self._err(code))
            account = self.accounts.get(sid_at(psid))
            if account is None:
                return int(self._err(winpipe.ERROR_NONE_MAPPED))
            if pcch[0] <= len(account.name) or pdcch[0] <= len(account.domain):
                pcch[0], pdcch[0] = len(account.name) + 1, len(account.domain) + 1
                return int(self._err(winpipe.ERROR_INSUFFICIENT_BUFFER))
            for out, text in ((name, account.name), (domain, account.domain)):
                for i, ch in enumerate(text + "\0"):
                    out[i] = ch
            pcch[0], pdcch[0], puse[0] = len(account.name), len(account.domain), 1
            return 1

    def _ConvertSidToStringSidW(self, proc: Proc, psid: Any, pp: Any) -> int:
        with self.cv:
            if not psid:
                return int(self._err(ERROR_INVALID_PARAMETER))
            pp[0] = self._alloc_wstr(sid_at(psid))
            return 1

    def _GetSecurityInfo(self, proc: Proc, h: Any, kind: int, info: int, powner: Any,
                         pgroup: Any, pdacl: Any, psacl: Any, psd: Any) -> int:
        with self.cv:
            end = self._end(h)
            if end is None:
                return winpipe.ERROR_INVALID_HANDLE
            if kind != winpipe.SE_KERNEL_OBJECT or not info & 1 or not powner or not psd:
                return ERROR_INVALID_PARAMETER
            if end.side == "client" and not end.access & winpipe.READ_CONTROL:
                return winpipe.ERROR_ACCESS_DENIED
            addr = self._alloc(sid_bytes(end.inst.pipe.owner))
            powner[0] = psd[0] = addr
            return 0

    def _GetNamedSecurityInfoW(self, proc: Proc, path: str, kind: int, info: int,
                               powner: Any, pgroup: Any, pdacl: Any, psacl: Any,
                               psd: Any) -> int:
        with self.cv:
            if path not in self.files:
                return winpipe.ERROR_FILE_NOT_FOUND
            addr = self._alloc(b"SD:" + self.files[path].encode("utf-16-le"))
            self.sds[addr] = self.files[path]
            psd[0] = addr
            return 0

    # -- icacls.exe, for take_custody --------------------------------------------------------
    def icacls(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        path, *args = argv[1:]
        self.calls.append(("icacls", path, *args))
        if code := self.fail.pop("icacls", 0):
            return subprocess.CompletedProcess(argv, code, "", "Access is denied.")
        owner, _ = parse_sddl(self.files[path])
        aces = re.findall(r"\([^)]*\)", self.files[path].split("D:", 1)[1])
        if args[:2] == ["/inheritance:r", "/grant:r"]:
            granted = {g.split(":")[0].lstrip("*") for g in args[2:]}
            kept = [a for a in aces if ";ID;" not in a and a.rstrip(")").split(";")[-1]
                    not in granted and ALIASES.get(a.rstrip(")").split(";")[-1]) not in granted]
            new = [f"(A;;FA;;;{g.split(':')[0].lstrip('*')})" for g in args[2:]]
            self.files[path] = f"O:{owner}D:PAI" + "".join(kept + new)
        elif args[0] == "/grant":
            who, _, right = args[1].lstrip("*").partition(":")
            head, _, _ = self.files[path].partition("D:")
            flags = re.match(r"D:([A-Z]*)", self.files[path][len(head):])
            self.files[path] = (f"{head}D:{flags.group(1) if flags else ''}" + "".join(aces)
                                + f"(A;;F{right};;;{who})")
        return subprocess.CompletedProcess(argv, 0, "processed 1 files", "")


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture
def kernel() -> Iterator[FakeKernel]:
    k = FakeKernel()
    yield k
    k.release()
    assert k.errors == [], k.errors


async def _device(collector: MiniCollector, where: Path) -> DataDir:
    device = where / "device"
    data = DataDir(device, device)
    token = f"tok-{len(collector.stored)}-{id(where)}"
    collector.tokens.add(token)
    where.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(enroll, data, collector.enroll_address, token,
                            collector.write_ca(where / "ca.crt"), collector.address,
                            machine=True)
    return data


def _collector_factory(collector: MiniCollector, data: DataDir) -> Callable[[], Any]:
    return mtls_channel_factory(collector.address, data.ca_cert.read_bytes(),
                                data.device_key.read_bytes(), data.device_cert.read_bytes())


@contextlib.asynccontextmanager
async def running(kernel: FakeKernel, collector: MiniCollector, tmp_path: Path,
                  **kwargs: Any) -> AsyncIterator[PipeUplinkRelay]:
    """The relay as SYSTEM (pid 4000) on PIPE; afterwards every handle and block is freed."""
    data = await _device(collector, tmp_path)
    system = kernel.process(SYSTEM, 4000)
    r = await PipeUplinkRelay(PIPE, _collector_factory(collector, data), api=system.api,
                              **kwargs).start()
    try:
        yield r
    finally:
        kernel.release()
        await r.stop()
        assert await asyncio.to_thread(kernel.wait_idle), kernel.leaks()
        assert await asyncio.to_thread(_pipe_threads_gone)


def _pipe_threads_gone(timeout: float = 10) -> bool:
    """Every thread the pipe code started has ended (joined, bounded)."""
    for t in threading.enumerate():
        if t.name.startswith("vigil-pipe"):
            t.join(timeout)
    return not [t for t in threading.enumerate()
                if t.name.startswith("vigil-pipe") and t.is_alive()]


def _capture(cid: str, user: str) -> pb.Capture:
    return pb.Capture(id=cid, os_user=user, rule_id="self_harm.test", category="self_harm",
                      severity=4, match="i cut myself")


def _hb(user: str) -> pb.AgentMessage:
    return pb.AgentMessage(heartbeat=pb.Heartbeat(agent_version="test", os_user=user))


def _impersonations(kernel: FakeKernel) -> list[tuple[str, int]]:
    return [(c[0], c[1]) for c in kernel.calls
            if c[0] in ("ImpersonateNamedPipeClient", "RevertToSelf")]


def _each_impersonation_reverted_on_its_thread(kernel: FakeKernel) -> bool:
    seq = _impersonations(kernel)
    return bool(seq) and all(
        a[0] == "ImpersonateNamedPipeClient" and b == ("RevertToSelf", a[1])
        for a, b in zip(seq[::2], seq[1::2], strict=True))


# -- prototypes -----------------------------------------------------------------------------------
#: Microsoft's signatures (the SDK headers' parameter types), written out independently of
#: winpipe.prototypes(); the resolution below maps them to the ctypes types they must be.
SIGNATURES = {
    "CreateNamedPipeW": ("HANDLE", "LPCWSTR DWORD DWORD DWORD DWORD DWORD DWORD "
                         "LPSECURITY_ATTRIBUTES"),
    "ConnectNamedPipe": ("BOOL", "HANDLE LPOVERLAPPED"),
    "DisconnectNamedPipe": ("BOOL", "HANDLE"),
    "CreateFileW": ("HANDLE", "LPCWSTR DWORD DWORD LPSECURITY_ATTRIBUTES DWORD DWORD HANDLE"),
    "WaitNamedPipeW": ("BOOL", "LPCWSTR DWORD"),
    "ReadFile": ("BOOL", "HANDLE LPVOID DWORD LPDWORD LPOVERLAPPED"),
    "WriteFile": ("BOOL", "HANDLE LPCVOID DWORD LPDWORD LPOVERLAPPED"),
    "GetOverlappedResult": ("BOOL", "HANDLE LPOVERLAPPED LPDWORD BOOL"),
    "CancelIoEx": ("BOOL", "HANDLE LPOVERLAPPED"),
    "CreateEventW": ("HANDLE", "LPSECURITY_ATTRIBUTES BOOL BOOL LPCWSTR"),
    "SetEvent": ("BOOL", "HANDLE"),
    "WaitForMultipleObjects": ("DWORD", "DWORD HANDLE* BOOL DWORD"),
    "CloseHandle": ("BOOL", "HANDLE"),
    "GetNamedPipeClientProcessId": ("BOOL", "HANDLE PULONG"),
    "GetNamedPipeServerProcessId": ("BOOL", "HANDLE PULONG"),
    "OpenProcess": ("HANDLE", "DWORD BOOL DWORD"),
    "GetCurrentProcess": ("HANDLE", ""),
    "GetCurrentThread": ("HANDLE", ""),
    "LocalFree": ("HLOCAL", "HLOCAL"),
    "ConvertStringSecurityDescriptorToSecurityDescriptorW": (
        "BOOL", "LPCWSTR DWORD PSECURITY_DESCRIPTOR* PULONG"),
    "ConvertSecurityDescriptorToStringSecurityDescriptorW": (
        "BOOL", "PSECURITY_DESCRIPTOR DWORD SECURITY_INFORMATION LPWSTR* PULONG"),
    "ImpersonateNamedPipeClient": ("BOOL", "HANDLE"),
    "RevertToSelf": ("BOOL", ""),
    "OpenThreadToken": ("BOOL", "HANDLE DWORD BOOL PHANDLE"),
    "OpenProcessToken": ("BOOL", "HANDLE DWORD PHANDLE"),
    "GetTokenInformation": ("BOOL", "HANDLE TOKEN_INFORMATION_CLASS LPVOID DWORD PDWORD"),
    "LookupAccountSidW": ("BOOL", "LPCWSTR PSID LPWSTR LPDWORD LPWSTR LPDWORD PSID_NAME_USE"),
    "ConvertSidToStringSidW": ("BOOL", "PSID LPWSTR*"),
    "GetSecurityInfo": ("DWORD", "HANDLE SE_OBJECT_TYPE SECURITY_INFORMATION PSID* PSID* "
                        "PACL* PACL* PSECURITY_DESCRIPTOR*"),
    "GetNamedSecurityInfoW": ("DWORD", "LPCWSTR SE_OBJECT_TYPE SECURITY_INFORMATION PSID* "
                              "PSID* PACL* PACL* PSECURITY_DESCRIPTOR*"),
}
C_TYPES: dict[str, Any] = {
    "HANDLE": w.HANDLE, "HLOCAL": w.HLOCAL, "BOOL": w.BOOL, "DWORD": w.DWORD,
    "SECURITY_INFORMATION": w.DWORD, "LPCWSTR": w.LPCWSTR, "LPVOID": w.LPVOID,
    "LPCVOID": w.LPCVOID, "PSID": w.LPVOID, "PSECURITY_DESCRIPTOR": w.LPVOID,
    "LPDWORD": ctypes.POINTER(w.DWORD), "PDWORD": ctypes.POINTER(w.DWORD),
    "PULONG": ctypes.POINTER(w.ULONG), "PHANDLE": ctypes.POINTER(w.HANDLE),
    "HANDLE*": ctypes.POINTER(w.HANDLE),
    "LPOVERLAPPED": ctypes.POINTER(winpipe.OVERLAPPED),
    "LPSECURITY_ATTRIBUTES": ctypes.POINTER(winpipe.SECURITY_ATTRIBUTES),
    "PSECURITY_DESCRIPTOR*": ctypes.POINTER(w.LPVOID), "PSID*": ctypes.POINTER(w.LPVOID),
    "PACL*": ctypes.POINTER(w.LPVOID), "LPWSTR*": ctypes.POINTER(w.LPVOID),
    "LPWSTR": ctypes.POINTER(ctypes.c_wchar),  # a buffer the function writes into
    "TOKEN_INFORMATION_CLASS": ctypes.c_int, "SE_OBJECT_TYPE": ctypes.c_int,
    "PSID_NAME_USE": ctypes.POINTER(ctypes.c_int),
}


def test_every_call_is_declared_as_microsoft_documents_it() -> None:
    table = winpipe.prototypes()
    declared = {name: proto for funcs in table.values() for name, proto in funcs.items()}
    source = Path(winpipe.__file__).read_text()
    used = set(re.findall(r"self\.[ka]\.(\w+)\(", source))
    assert used and used <= set(declared), used - set(declared)
    assert set(declared) == set(SIGNATURES)
    for name, (ret, params) in SIGNATURES.items():
        restype, argtypes = declared[name]
        assert restype is C_TYPES[ret], name
        assert argtypes == [C_TYPES[p] for p in params.split()], name
    # pointer-sized where Windows passes pointers (a HANDLE cut to a C int is a classic bug)
    for restype, argtypes in declared.values():
        for t in [restype, *argtypes]:
            assert t in (w.BOOL, w.DWORD, ctypes.c_int) or ctypes.sizeof(t) == ctypes.sizeof(
                ctypes.c_void_p), t
    assert "use_last_error=True" in source
    assert set(table) == {"kernel32", "advapi32"}
    assert "ImpersonateNamedPipeClient" in table["advapi32"]  # Advapi32.dll, per its docs


def test_binding_declares_every_prototype_and_loads_nothing_else() -> None:
    loaded: list[str] = []

    class Lib:
        def __init__(self) -> None:
            self.funcs: dict[str, Any] = {}

        def __getattr__(self, name: str) -> Any:
            return self.funcs.setdefault(name, type("Fn", (), {})())

    libs: dict[str, Lib] = {}

    def load(name: str) -> Lib:
        loaded.append(name)
        return libs.setdefault(name, Lib())

    PipeApi(load=load, last_error=lambda: 0)
    assert sorted(loaded) == ["advapi32", "kernel32"]
    for dll, funcs in winpipe.prototypes().items():
        assert set(libs[dll].funcs) == set(funcs)
        for name, (restype, argtypes) in funcs.items():
            fn = libs[dll].funcs[name]
            assert fn.restype is restype and fn.argtypes == argtypes, name


# -- the pipe's security ------------------------------------------------------------------------
def test_the_pipe_dacl_lets_in_only_system_admins_and_interactive_users() -> None:
    owner, aces = parse_sddl(winpipe.RELAY_PIPE_SDDL)
    assert owner == SYSTEM.sid
    assert {a[3] for a in aces} == {"S-1-5-18", "S-1-5-32-544", INTERACTIVE}
    assert all(a[0] == "A" for a in aces)
    for nobody in (EVERYONE, "S-1-5-7", "S-1-5-2", AUTHENTICATED, USERS, "S-1-3-0"):
        assert nobody not in {a[3] for a in aces}, nobody
    [iu] = [a[2] for a in aces if a[3] == INTERACTIVE]
    assert iu & winpipe.FILE_CREATE_PIPE_INSTANCE == 0  # a pupil cannot add an instance
    assert iu & (winpipe.FILE_READ_DATA | winpipe.FILE_WRITE_DATA) == 0x3
    assert iu & (winpipe.WRITE_DAC | winpipe.WRITE_OWNER | winpipe.DELETE) == 0
    # what the session asks for is exactly what it is granted (CreateFile adds SYNCHRONIZE
    # and FILE_READ_ATTRIBUTES, both in FILE_GENERIC_READ)
    assert rights_of(f"{winpipe.CLIENT_ACCESS:#x}") | winpipe.SYNCHRONIZE | 0x80 == iu
    # winpipe's own reading of its SDDL agrees with ours
    protected, mine = winpipe.dacl(winpipe.RELAY_PIPE_SDDL)
    assert protected and {(a.sid, a.rights) for a in mine} == {(a[3], a[2]) for a in aces}


@pytest.mark.parametrize(("sddl", "pupil_may_add"), [
    ("", False),  # the relay's DACL
    ("O:SYD:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;IU)", True),  # GENERIC_WRITE: why not this
])
async def test_a_pupil_cannot_add_an_instance_to_the_relays_pipe(
        kernel: FakeKernel, collector: MiniCollector, tmp_path: Path, sddl: str,
        pupil_may_add: bool) -> None:
    async with running(kernel, collector, tmp_path, sddl=sddl) as relay:
        assert relay.pipe_name == PIPE
        squatter = kernel.process(PUPIL2, 6000).api
        if pupil_may_add:
            h = await asyncio.to_thread(squatter.create_server, PIPE, "D:(A;;GA;;;WD)", False)
            squatter.close(h)
        else:
            with pytest.raises(winpipe.Win32Error) as err:
                await asyncio.to_thread(squatter.create_server, PIPE, "D:(A;;GA;;;WD)", False)
            assert err.value.code == winpipe.ERROR_ACCESS_DENIED


async def test_flags_of_the_pipe_and_of_the_session_end(
        kernel: FakeKernel, collector: MiniCollector, tmp_path: Path) -> None:
    async with running(kernel, collector, tmp_path):
        pupil = kernel.process(PUPIL, 5000)
        await _send(pipe_relay_channel(PIPE, pupil.api),
                    pb.AgentMessage(captures=pb.CaptureBatch(captures=[_capture("f1", "x")])),
                    wait_acks=1)
        pipe = kernel.pipes[PIPE.lower()]
        # the relay keeps an instance listening after the first client
        assert await asyncio.to_thread(kernel.wait_for, lambda: len(pipe.open_modes) >= 2)
        first, *more = pipe.open_modes
        assert first & winpipe.FILE_FLAG_FIRST_PIPE_INSTANCE
        assert not any(m & winpipe.FILE_FLAG_FIRST_PIPE_INSTANCE for m in more)
        for mode in pipe.open_modes:
            assert mode & 0x3 == winpipe.PIPE_ACCESS_DUPLEX
            assert mode & winpipe.FILE_FLAG_OVERLAPPED
        for mode in pipe.pipe_modes:
            assert mode & winpipe.PIPE_REJECT_REMOTE_CLIENTS
            assert mode & 0x7 == 0  # PIPE_TYPE_BYTE, PIPE_READMODE_BYTE, PIPE_WAIT
        [(_, pid, access, flags)] = [c for c in kernel.calls
                                     if c[0] == "CreateFileW" and len(c) == 4]
        assert pid == 5000 and access == winpipe.GENERIC_READ | winpipe.FILE_WRITE_DATA
        assert flags & winpipe.SECURITY_SQOS_PRESENT
        assert flags & 0x000F0000 == winpipe.SECURITY_IDENTIFICATION  # not impersonation
        assert flags & winpipe.FILE_FLAG_OVERLAPPED


# -- end to end -----------------------------------------------------------------------------------
class _Spool(Spool):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.empty = asyncio.Event()

    def ack(self, ids: object) -> int:
        n = super().ack(ids)  # type: ignore[arg-type]
        if self.stats().depth == 0:
            self.empty.set()
        return n


async def test_a_session_uplink_sends_through_the_pipe_as_the_account_its_token_names(
        kernel: FakeKernel, collector: MiniCollector, tmp_path: Path) -> None:
    async with running(kernel, collector, tmp_path) as relay:
        pupil = kernel.process(PUPIL, 5000)
        session = DataDir(tmp_path / "sessions" / "pupil1", tmp_path / "device")
        # the key is readable here (it is on this Linux box); on Windows that must not matter
        factory = session_channel_factory(session, collector.address, platform="win32",
                                          pipe_name=PIPE, pipe_api=pupil.api)
        spool = _Spool(tmp_path / "spool.db")
        spool.put(_capture("w1", "SCHOOL\\somebody-else"))
        up = Uplink(spool, None,  # type: ignore[arg-type]  # no bundle is pushed
                    factory, heartbeat=lambda: pb.Heartbeat(rules_version=1, os_user="root"))
        stop = asyncio.Event()
        task = asyncio.create_task(up.run(stop))
        try:
            await asyncio.wait_for(spool.empty.wait(), 30)
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
            spool.close()
    assert collector.stored["w1"].os_user == "SCHOOL\\pupil1", "the claimed user was kept"
    assert collector.heartbeats[0].os_user == "SCHOOL\\pupil1"
    peer = relay.served[0]
    assert (peer.sid, peer.pid, peer.uid) == (PUPIL.sid, 5000, -1)
    assert INTERACTIVE in peer.groups
    assert len(collector.peers) == 1 and collector.peers[0]  # mTLS with the device's cert
    assert _each_impersonation_reverted_on_its_thread(kernel)
    assert not kernel.impersonating


async def test_no_relay_is_unavailable_so_the_uplink_keeps_the_spool_and_backs_off(
        kernel: FakeKernel, tmp_path: Path) -> None:
    pupil = kernel.process(PUPIL, 5000)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _send(pipe_relay_channel(PIPE, pupil.api), _hb("x"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "ERROR_FILE_NOT_FOUND" in (err.value.details() or "")


@pytest.mark.parametrize("failing", ["OpenThreadToken", "GetTokenInformation"])
async def test_revert_to_self_follows_every_impersonation_even_when_the_token_read_fails(
        kernel: FakeKernel, collector: MiniCollector, tmp_path: Path, failing: str) -> None:
    async with running(kernel, collector, tmp_path) as relay:
        kernel.fail[failing] = winpipe.ERROR_ACCESS_DENIED
        pupil = kernel.process(PUPIL, 5000)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _send(pipe_relay_channel(PIPE, pupil.api), _hb("x"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert failing in (err.value.details() or "")
        assert collector.streams == 0, "an unidentified session reached the collector"
        assert relay.served == [] and len(relay.unidentified) == 1
        assert _each_impersonation_reverted_on_its_thread(kernel)
        assert not kernel.impersonating


async def test_a_failed_impersonation_refuses_the_session_instead_of_serving_it_as_system(
        kernel: FakeKernel, collector: MiniCollector, tmp_path: Path) -> None:
    async with running(kernel, collector, tmp_path) as relay:
        kernel.fail["ImpersonateNamedPipeClient"] = winpipe.ERROR_ACCESS_DENIED
        pupil = kernel.process(PUPIL, 5000)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _send(pipe_relay_channel(PIPE, pupil.api), _hb("x"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "ImpersonateNamedPipeClient" in (err.value.details() or "")
        assert collector.streams == 0 and relay.served == []
        assert [c[0] for c in kernel.calls].count("RevertToSelf") == 0  # nothing to revert
        assert not any(c[0] == "OpenThreadToken" for c in kernel.calls)


async def test_a_failed_revert_ends_the_thread_and_nothing_is_served(
        kernel: FakeKernel, collector: MiniCollector, tmp_path: Path) -> None:
    fatal: list[BaseException] = []
    died = threading.Event()

    def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)
        died.set()

    data = await _device(collector, tmp_path)
    system = kernel.process(SYSTEM, 4000)
    relay = await PipeUplinkRelay(PIPE, _collector_factory(collector, data), api=system.api,
                                  on_fatal=on_fatal).start()
    pupil = kernel.process(PUPIL, 5000)
    kernel.fail["RevertToSelf"] = 1314  # ERROR_PRIVILEGE_NOT_HELD, say
    h = await asyncio.to_thread(pupil.api.open_client, PIPE)
    stop = pupil.api.new_event()
    await asyncio.to_thread(pupil.api.write, h, _frame(OPEN, b"/vigil.v1.Collector/Connect")
                            + _frame(MSG, _hb("x").SerializeToString()), stop)
    assert await asyncio.to_thread(died.wait, 10)
    assert isinstance(fatal[0], winpipe.ImpersonationStuck)
    [(tid, token)] = kernel.impersonating.items()  # that thread still impersonates...
    assert token.account == PUPIL
    stuck = next((t for t in threading.enumerate() if t.ident == tid), None)
    if stuck is not None:
        await asyncio.to_thread(stuck.join, 10)
        assert not stuck.is_alive()  # ...and has ended without doing anything else
    assert [c[0] for c in kernel.calls if c[0] in ("ImpersonateNamedPipeClient", "RevertToSelf",
                                                    "OpenThreadToken")] == [
        "ImpersonateNamedPipeClient", "RevertToSelf"]
    assert collector.streams == 0 and relay.served == [] and relay.unidentified == []
    with kernel.cv:  # the process would have exited here; nothing answered the session
        inst = kernel.pipes[PIPE.lower()].instances[0]
        assert inst.to_client == b""
        server_end = inst.server_end
    pupil.api.close(h)
    pupil.api.close(stop)
    await relay.stop()
    handle = next(k for k, v in kernel.handles.items() if v is server_end)
    system.api.close(handle)  # what the process exit would have done
    assert await asyncio.to_thread(kernel.wait_idle), kernel.leaks()


def test_the_windows_allow_rule() -> None:
    allow = windows_allow()

    def peer(sid: str, *groups: str) -> Peer:
        return Peer(1, -1, -1, "X\\y", sid, groups)

    assert allow(peer(PUPIL.sid, *PUPIL.groups))
    assert allow(peer(SYSTEM.sid, *SYSTEM.groups))
    assert not allow(peer(NETWORK_PUPIL.sid, *NETWORK_PUPIL.groups))  # no INTERACTIVE
    assert not allow(peer(ANONYMOUS.sid, *ANONYMOUS.groups))
    assert not allow(peer(PUPIL.sid, *PUPIL.groups, "S-1-5-2"))  # NETWORK as well
    assert not allow(peer("", *PUPIL.groups))
    assert not allow(peer(PUPIL.sid, EVERYONE, USERS))  # interactive? not said: no
    pupils_only = windows_allow(groups=["S-1-5-21-1004336348-1177238915-682003330-2001"])
    assert not pupils_only(peer(PUPIL.sid, *PUPIL.groups))
    assert pupils_only(peer(PUPIL.sid, *PUPIL.groups,
                            "S-1-5-21-1004336348-1177238915-682003330-2001"))
    listed_anonymous = windows_allow(sids=["S-1-5-7"], groups=[EVERYONE])
    assert not listed_anonymous(peer(ANONYMOUS.sid, *ANONYMOUS.groups))  # never, even listed


@pytest.mark.parametrize("who", [ANONYMOUS, NETWORK_PUPIL])
async def test_anonymous_and_network_logons_are_refused(
        kernel: FakeKernel, collector: MiniCollector, tmp_path: Path, who: Account) -> None:
    # The relay's DACL does not even let them open the pipe...
    async with running(kernel, collector, tmp_path):
        client = kernel.process(who, 7000)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _send(pipe_relay_channel(PIPE, client.api), _hb("x"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "ERROR_ACCESS_DENIED" in (err.value.details() or "")
    # ...and with a DACL that did (Everyone), the allow rule still refuses them.
    async with running(kernel, collector, tmp_path / "again",
                       sddl="O:SYD:(A;;GA;;;SY)(A;;0x12008b;;;WD)") as relay:
        client = kernel.process(who, 7001)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _send(pipe_relay_channel(PIPE, client.api), _hb("x"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert [p.sid for p in relay.refused] == [who.sid] and relay.served == []
    assert collector.streams == 0


@pytest.mark.parametrize("squatter", [PUPIL, PUPIL2])
async def test_a_pipe_not_served_by_system_gets_nothing(
        kernel: FakeKernel, collector: MiniCollector, tmp_path: Path,
        squatter: Account) -> None:
    """A pupil creates the relay's pipe name before the relay starts (it is not running)."""
    bad = kernel.process(squatter, 6000)
    h = await asyncio.to_thread(bad.api.create_server, PIPE, "D:(A;;GA;;;WD)", True)
    stop = bad.api.new_event()
    listening = asyncio.create_task(asyncio.to_thread(bad.api.connect, h, stop))
    victim = kernel.process(PUPIL, 5000)
    with pytest.raises(grpc.aio.AioRpcError) as err:  # bounded: a squatter never answers
        await asyncio.wait_for(_send(
            pipe_relay_channel(PIPE, victim.api), _hb("x"),
            pb.AgentMessage(captures=pb.CaptureBatch(captures=[_capture("s1", "x")]))), 20)
    details = err.value.details() or ""
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the uplink keeps its spool
    assert "not SYSTEM" in details and "nothing was sent" in details
    assert (f"running as {PUPIL.sid}" in details) == (squatter == PUPIL)  # its own: token
    assert (f"owned by {PUPIL2.sid}" in details) == (squatter == PUPIL2)  # another's: owner
    await listening  # the squatter's instance did see a client connect...
    with kernel.cv:
        assert kernel.pipes[PIPE.lower()].instances[0].received == 0  # ...that sent nothing
    # and the relay, started now, refuses to share the name
    data = await _device(collector, tmp_path)
    relay = PipeUplinkRelay(PIPE, _collector_factory(collector, data),
                            api=kernel.process(SYSTEM, 4000).api)
    with pytest.raises(PermissionError, match="another program created it first"):
        await relay.start()
    bad.api.close(h)
    bad.api.close(stop)
    assert await asyncio.to_thread(kernel.wait_idle), kernel.leaks()


async def test_a_pupils_own_instance_of_a_system_owned_pipe_is_caught_by_the_token_check(
        kernel: FakeKernel, collector: MiniCollector, tmp_path: Path) -> None:
    """With GENERIC_WRITE for interactive users (not the relay's DACL), a pupil could add an
    instance to SYSTEM's pipe: its owner is then SYSTEM, so only the server-process check
    (the pupil may read their own process's token) refuses it."""
    async with running(kernel, collector, tmp_path,
                       sddl="O:SYD:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;IU)"):
        pupil = kernel.process(PUPIL, 5000)
        kernel.gate = threading.Event()  # the relay's next instance is held back
        # take the relay's listening instance, so the next client lands on the pupil's
        taken = await asyncio.to_thread(pupil.api.open_client, PIPE)
        mine = await asyncio.to_thread(pupil.api.create_server, PIPE, "D:(A;;GA;;;WD)", False)
        with pytest.raises(grpc.aio.AioRpcError) as err:  # bounded: the pupil never answers
            await asyncio.wait_for(_send(pipe_relay_channel(PIPE, pupil.api), _hb("x")), 20)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"process 5000 running as {PUPIL.sid}" in (err.value.details() or "")
        kernel.release()
        pupil.api.close(mine)
        pupil.api.close(taken)


async def test_pipe_busy_then_wait_named_pipe(kernel: FakeKernel, collector: MiniCollector,
                                              tmp_path: Path) -> None:
    async with running(kernel, collector, tmp_path):
        pupil = kernel.process(PUPIL, 5000)
        kernel.gate = threading.Event()
        first = await asyncio.to_thread(pupil.api.open_client, PIPE)  # the only instance
        sending = asyncio.create_task(_send(
            pipe_relay_channel(PIPE, pupil.api),
            pb.AgentMessage(captures=pb.CaptureBatch(captures=[_capture("b1", "x")])),
            wait_acks=1))
        assert await asyncio.to_thread(kernel.waiting_for_instance.wait, 10)
        kernel.release()  # now the relay may create its next instance
        assert await asyncio.wait_for(sending, 30) == ["ack"]
        assert "b1" in collector.stored
        attempts = [c for c in kernel.calls if c[0] == "CreateFileW" and len(c) == 4]
        outcomes = [c[1] for c in kernel.calls if c[0] in ("CreateFileW", "WaitNamedPipeW")
                    and len(c) == 2]
        assert len(attempts) == 3  # the first client; the second, busy; the second again
        assert outcomes == ["ERROR_PIPE_BUSY", 5000]  # then WaitNamedPipeW, by the session
        pupil.api.close(first)


async def test_error_pipe_connected_counts_as_connected(
        kernel: FakeKernel, collector: MiniCollector, tmp_path: Path) -> None:
    pupil = kernel.process(PUPIL, 5000)
    early: list[int] = []
    kernel.before_connect = lambda: early.append(pupil.api.open_client(PIPE))
    async with running(kernel, collector, tmp_path) as relay:
        assert await asyncio.to_thread(kernel.wait_for, lambda: bool(early))
        loop = asyncio.get_running_loop()
        conn = winpipe.PipeConnection(pupil.api, early[0], loop, server=False).start()
        conn.write(_frame(OPEN, b"/vigil.v1.Collector/Connect") + _frame(MSG, pb.AgentMessage(
            captures=pb.CaptureBatch(captures=[_capture("e1", "x")])).SerializeToString()))
        await conn.drain()
        kind, body = await _read(conn.reader)
        assert kind == MSG and pb.CollectorMessage.FromString(body).ack.stored_ids == ["e1"]
        conn.close()
        await conn.wait_closed()
        assert relay.served[0].sid == PUPIL.sid
        assert ("ConnectNamedPipe", "ERROR_PIPE_CONNECTED") in kernel.calls


async def _read(reader: winpipe.PipeReader) -> tuple[int, bytes]:
    head = await reader.readexactly(5)
    size, kind = int.from_bytes(head[:4], "big"), head[4]
    return kind, await reader.readexactly(size)


async def test_a_session_that_says_nothing_is_dropped(
        kernel: FakeKernel, collector: MiniCollector, tmp_path: Path) -> None:
    data = await _device(collector, tmp_path)
    system = kernel.process(SYSTEM, 4000)
    relay = PipeUplinkRelay(PIPE, _collector_factory(collector, data), api=system.api)
    server = winpipe.PipeServer(system.api, PIPE, winpipe.RELAY_PIPE_SDDL, relay._handle,
                                first_read_ms=50)
    await server.start()
    pupil = kernel.process(PUPIL, 5000)
    h = await asyncio.to_thread(pupil.api.open_client, PIPE)
    stop = pupil.api.new_event()
    assert await asyncio.to_thread(pupil.api.read, h, 10, stop) == b""  # closed on us
    assert not any(c[0] == "ImpersonateNamedPipeClient" for c in kernel.calls)
    pupil.api.close(h)
    pupil.api.close(stop)
    await server.stop()
    assert await asyncio.to_thread(kernel.wait_idle), kernel.leaks()


async def test_reader_flow_control() -> None:
    reader = winpipe.PipeReader(asyncio.get_running_loop(), high=8)
    reader.feed_data(b"0123456789")
    assert not reader._room.is_set()  # the pipe thread waits
    assert await reader.readexactly(4) == b"0123"
    assert reader._room.is_set()
    reader.feed_data(b"ab")
    reader.feed_eof()
    assert await reader.readexactly(8) == b"456789ab"
    with pytest.raises(asyncio.IncompleteReadError):
        await reader.readexactly(1)


# -- the device key on Windows ------------------------------------------------------------------
KEY_INHERITED = "O:BAD:AI(A;ID;FA;;;SY)(A;ID;FA;;;BA)(A;ID;0x1200a9;;;BU)"
FOLDER = "O:BAD:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;;0x1200a9;;;BU)"


def _device_files(kernel: FakeKernel, tmp_path: Path, folder: str = FOLDER) -> Path:
    device = tmp_path / "device"
    device.mkdir(parents=True)
    kernel.files[str(device)] = folder
    for name in ("device.key", "device.crt", "ca.crt", "device.json"):
        (device / name).write_text(name)
        kernel.files[str(device / name)] = "O:SYD:AI(A;ID;FA;;;SY)(A;ID;FA;;;BA)"
    kernel.files[str(device / "device.key")] = KEY_INHERITED
    return device


def test_custody_on_windows_leaves_the_key_to_system_and_admins(
        kernel: FakeKernel, tmp_path: Path) -> None:
    device = _device_files(kernel, tmp_path)
    api = kernel.process(SYSTEM, 4000).api
    assert take_custody(device, platform="win32", run=kernel.icacls, api=api) == \
        device / "device.key"
    icacls = [c[1:] for c in kernel.calls if c[0] == "icacls"]
    assert icacls[0] == (str(device / "device.key"), "/inheritance:r", "/grant:r",
                         "*S-1-5-18:F", "*S-1-5-32-544:F")
    assert sorted(c[0] for c in icacls[1:]) == sorted(
        str(device / n) for n in ("ca.crt", "device.crt", "device.json"))
    assert all(c[1:] == ("/grant", "*S-1-5-32-545:R") for c in icacls[1:])
    _, aces = parse_sddl(kernel.files[str(device / "device.key")])
    assert {a[3] for a in aces} == {"S-1-5-18", "S-1-5-32-544"}
    assert USERS in {a[3] for a in parse_sddl(kernel.files[str(device / "device.crt")])[1]}
    assert kernel.wait_idle(1), kernel.leaks()


def test_custody_on_windows_refuses(kernel: FakeKernel, tmp_path: Path) -> None:
    api = kernel.process(SYSTEM, 4000).api
    writable = _device_files(kernel, tmp_path / "a",
                             FOLDER.replace("(A;;0x1200a9;;;BU)", "(A;OICI;0x1301bf;;;BU)"))
    with pytest.raises(PermissionError, match="S-1-5-32-545 may write to it"):
        take_custody(writable, platform="win32", run=kernel.icacls, api=api)
    assert not [c for c in kernel.calls if c[0] == "icacls"], "changed before refusing"

    failing = _device_files(kernel, tmp_path / "b")
    kernel.fail["icacls"] = 5
    with pytest.raises(PermissionError, match="failed \\(exit 5\\)"):
        take_custody(failing, platform="win32", run=kernel.icacls, api=api)

    leftover = _device_files(kernel, tmp_path / "c")
    key = str(leftover / "device.key")
    kernel.files[key] = KEY_INHERITED + "(A;;FR;;;S-1-5-21-1-2-3-1105)"  # explicit: kept
    with pytest.raises(PermissionError, match="S-1-5-21-1-2-3-1105"):
        take_custody(leftover, platform="win32", run=kernel.icacls, api=api)
    assert kernel.wait_idle(1), kernel.leaks()


def test_main_on_windows_refuses_to_run_as_anyone_but_system(
        kernel: FakeKernel, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pupil = kernel.process(PUPIL, 5000).api
    assert relay_mod.main(["--device-dir", str(tmp_path)], platform="win32", api=pupil) == 2
    err = capsys.readouterr().err
    assert "run as SYSTEM (S-1-5-18)" in err and PUPIL.sid in err
    system = kernel.process(SYSTEM, 4000).api
    assert relay_mod.main(["--device-dir", str(tmp_path), "--allow-group", "Pupils"],
                          platform="win32", api=system) == 2
    assert "takes SIDs on Windows" in capsys.readouterr().err
    assert kernel.wait_idle(1), kernel.leaks()


def test_sessions_on_windows_use_the_relay_whenever_the_identity_is_the_devices(
        tmp_path: Path) -> None:
    device = tmp_path / "device"
    device.mkdir()
    session = DataDir(tmp_path / "sessions" / "pupil1", device)
    made = session_channel_factory(session, "127.0.0.1:1", platform="win32", pipe_name=PIPE)()
    assert isinstance(made, RelayChannel) and made.path == PIPE
    assert STATUS == 4  # the frame format the pipe carries is the Unix socket's
