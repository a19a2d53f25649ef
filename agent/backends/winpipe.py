"""Named pipes for the uplink relay on Windows (agent.relay). NOT YET RUN ON REAL WINDOWS.

The Win32 calls follow :mod:`agent.backends.win32`: every function is loaded from
``WinDLL(name, use_last_error=True)`` and declared with ``argtypes``/``restype``
(:func:`prototypes`); nothing is loaded or called at import time. The tests drive this module
through a simulated kernel32/advapi32 whose functions are real C-ABI thunks built from the
same prototypes (tests/agent/test_relay_windows.py).

Design, and the documentation each choice rests on:

* **Overlapped I/O on every handle.** A synchronous handle serialises its I/O, so a thread
  blocked in ``ReadFile`` would hold up the ``WriteFile`` of the relay's reply ("Overlapped
  operations make it possible for one pipe to read and write data simultaneously", *Synchronous
  and Overlapped Pipe I/O*). Each operation has its own OVERLAPPED and manual-reset event and
  waits with ``WaitForMultipleObjects`` on it and on a stop event; stopping is ``CancelIoEx``
  followed by ``GetOverlappedResult(bWait=TRUE)``, so no OVERLAPPED is freed while the kernel
  still owns it and a stop can never be missed (the stop event stays signalled).
* **The pipe's DACL** (:data:`RELAY_PIPE_SDDL`): SYSTEM and Administrators full control;
  interactive users (``IU``, S-1-5-4) read, write and read-control only, *not* ``GENERIC_WRITE``:
  ``FILE_GENERIC_WRITE`` includes ``FILE_APPEND_DATA``, which for a pipe is the same bit as
  ``FILE_CREATE_PIPE_INSTANCE`` (*Named Pipe Security and Access Rights*), and a pupil who may
  create instances of the relay's pipe could serve other pupils' agents. No ACE names Everyone,
  Anonymous or Network, so they are denied; ``PIPE_REJECT_REMOTE_CLIENTS`` refuses remote
  clients before any access check. ``O:SY`` makes SYSTEM the owner, which the client checks.
* **Who the client is**: the client opens the pipe with ``SECURITY_SQOS_PRESENT |
  SECURITY_IDENTIFICATION``. At that level "the server process can obtain information about the
  client, such as security identifiers and privileges, but it cannot impersonate the client"
  (*SECURITY_IMPERSONATION_LEVEL*); ``ImpersonateNamedPipeClient`` allows a level below
  SecurityImpersonation, and ``OpenThreadToken(..., OpenAsSelf=TRUE)`` is what lets a thread
  impersonating at SecurityIdentification open its token (*OpenThreadToken*: "Without this
  parameter, the calling thread cannot open the access token ... because it is impossible to
  open executive-level objects by using the SecurityIdentification impersonation level");
  ``TOKEN_QUERY`` then suffices for ``GetTokenInformation``. The server must read from the
  pipe before it may impersonate (``ERROR_CANNOT_IMPERSONATE``, "Unable to impersonate using a
  named pipe until data has been read from that pipe"), so the first bytes are read first.
  The thread reverts (``RevertToSelf``) as soon as it holds the token, in a ``finally``; if the
  revert fails, :class:`ImpersonationStuck` is raised and the server ends the process.
* **Who the server is** (:func:`verify_server`, before the client sends a byte): the server
  process's token user (``GetNamedPipeServerProcessId`` → ``OpenProcess`` → ``OpenProcessToken``
  → ``TokenUser``) must be S-1-5-18 whenever the client may read it, and the pipe's owner
  (``GetSecurityInfo``) must be S-1-5-18 always. A pupil can always open their own processes'
  tokens, so a pipe served by the pupil's own process fails the first check; a SYSTEM process's
  token is not normally open to a standard user (``ERROR_ACCESS_DENIED``), and then the owner
  decides: nobody but SYSTEM (or a holder of SeRestorePrivilege) can make SYSTEM the owner of a
  pipe they create, and the DACL above lets nobody else add instances to SYSTEM's pipe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import functools
import logging
import os
import re
import threading
from collections.abc import Awaitable, Callable
from ctypes import wintypes as w
from dataclasses import dataclass
from typing import Any

from . import win32
from .win32 import _windll

__all__ = ["RELAY_PIPE_SDDL", "SYSTEM_SID", "Ace", "Identity", "ImpersonationStuck",
           "PipeApi", "PipeConnection", "PipeReader", "PipeServer", "ServerNotTrusted",
           "Win32Error", "bind", "dacl", "open_pipe", "prototypes", "verify_server"]

log = logging.getLogger(__name__)

# -- constants (winbase.h, winnt.h, winerror.h) -----------------------------------------------
PIPE_ACCESS_DUPLEX = 0x00000003
FILE_FLAG_FIRST_PIPE_INSTANCE = 0x00080000
FILE_FLAG_OVERLAPPED = 0x40000000
PIPE_TYPE_BYTE = PIPE_READMODE_BYTE = PIPE_WAIT = 0x00000000
PIPE_REJECT_REMOTE_CLIENTS = 0x00000008
PIPE_UNLIMITED_INSTANCES = 255
GENERIC_READ, GENERIC_WRITE, GENERIC_EXECUTE, GENERIC_ALL = (0x80000000, 0x40000000,
                                                             0x20000000, 0x10000000)
FILE_READ_DATA, FILE_WRITE_DATA = 0x0001, 0x0002
FILE_APPEND_DATA = FILE_CREATE_PIPE_INSTANCE = 0x0004
FILE_READ_EA, FILE_WRITE_EA, FILE_DELETE_CHILD = 0x0008, 0x0010, 0x0040
FILE_READ_ATTRIBUTES, FILE_WRITE_ATTRIBUTES = 0x0080, 0x0100
DELETE, READ_CONTROL, WRITE_DAC, WRITE_OWNER, SYNCHRONIZE = (0x10000, 0x20000, 0x40000,
                                                            0x80000, 0x100000)
FILE_GENERIC_READ = 0x120089
FILE_GENERIC_WRITE = 0x120116
FILE_GENERIC_EXECUTE = 0x1200A0
FILE_ALL_ACCESS = 0x1F01FF
OPEN_EXISTING = 3
SECURITY_SQOS_PRESENT = 0x00100000
SECURITY_IDENTIFICATION = 1 << 16  # SecurityIdentification << 16
ERROR_FILE_NOT_FOUND, ERROR_ACCESS_DENIED, ERROR_INVALID_HANDLE = 2, 5, 6
ERROR_BROKEN_PIPE, ERROR_SEM_TIMEOUT, ERROR_INSUFFICIENT_BUFFER = 109, 121, 122
ERROR_PIPE_BUSY, ERROR_NO_DATA, ERROR_PIPE_NOT_CONNECTED = 231, 232, 233
ERROR_PIPE_CONNECTED, ERROR_OPERATION_ABORTED, ERROR_IO_PENDING = 535, 995, 997
ERROR_NO_TOKEN, ERROR_NOT_FOUND, ERROR_NONE_MAPPED = 1008, 1168, 1332
ERROR_BAD_IMPERSONATION_LEVEL, ERROR_CANNOT_IMPERSONATE = 1346, 1368
WAIT_OBJECT_0, WAIT_TIMEOUT, WAIT_FAILED, INFINITE = 0, 0x102, 0xFFFFFFFF, 0xFFFFFFFF
TOKEN_QUERY = 0x0008
TOKEN_USER_CLASS, TOKEN_GROUPS_CLASS = 1, 2  # TOKEN_INFORMATION_CLASS TokenUser, TokenGroups
SE_GROUP_ENABLED, SE_GROUP_USE_FOR_DENY_ONLY = 0x4, 0x10
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
SE_FILE_OBJECT, SE_KERNEL_OBJECT = 1, 6
OWNER_SECURITY_INFORMATION, DACL_SECURITY_INFORMATION = 0x1, 0x4
SDDL_REVISION_1 = 1
INVALID_HANDLE_VALUE = ctypes.c_void_p(-1).value

SYSTEM_SID = "S-1-5-18"
ADMINISTRATORS_SID = "S-1-5-32-544"
#: SYSTEM owns it; SYSTEM and Administrators full control; interactive users read, write
#: (FILE_WRITE_DATA only: no FILE_APPEND_DATA = FILE_CREATE_PIPE_INSTANCE) and read control.
#: 0x12008b = FILE_GENERIC_READ (0x120089) | FILE_WRITE_DATA (0x2).
RELAY_PIPE_SDDL = "O:SYD:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;0x12008b;;;IU)"
#: What the session asks for: exactly what the DACL grants interactive users.
CLIENT_ACCESS = GENERIC_READ | FILE_WRITE_DATA
CHUNK = 64 * 1024
FIRST_READ_MS = 15_000  # a client that connects and says nothing is dropped after this

_ERROR_NAMES = {
    ERROR_FILE_NOT_FOUND: "ERROR_FILE_NOT_FOUND", ERROR_ACCESS_DENIED: "ERROR_ACCESS_DENIED",
    ERROR_INVALID_HANDLE: "ERROR_INVALID_HANDLE", ERROR_BROKEN_PIPE: "ERROR_BROKEN_PIPE",
    ERROR_SEM_TIMEOUT: "ERROR_SEM_TIMEOUT", ERROR_INSUFFICIENT_BUFFER: "ERROR_INSUFFICIENT_BUFFER",
    ERROR_PIPE_BUSY: "ERROR_PIPE_BUSY", ERROR_NO_DATA: "ERROR_NO_DATA",
    ERROR_PIPE_NOT_CONNECTED: "ERROR_PIPE_NOT_CONNECTED",
    ERROR_PIPE_CONNECTED: "ERROR_PIPE_CONNECTED",
    ERROR_OPERATION_ABORTED: "ERROR_OPERATION_ABORTED", ERROR_IO_PENDING: "ERROR_IO_PENDING",
    ERROR_NO_TOKEN: "ERROR_NO_TOKEN", ERROR_NOT_FOUND: "ERROR_NOT_FOUND",
    ERROR_NONE_MAPPED: "ERROR_NONE_MAPPED",
    ERROR_BAD_IMPERSONATION_LEVEL: "ERROR_BAD_IMPERSONATION_LEVEL",
    ERROR_CANNOT_IMPERSONATE: "ERROR_CANNOT_IMPERSONATE",
}
_EOF_ERRORS = {ERROR_BROKEN_PIPE, ERROR_NO_DATA, ERROR_PIPE_NOT_CONNECTED}


# -- structures --------------------------------------------------------------------------------
class SECURITY_ATTRIBUTES(ctypes.Structure):
    _fields_ = [("nLength", w.DWORD), ("lpSecurityDescriptor", w.LPVOID),
                ("bInheritHandle", w.BOOL)]


class OVERLAPPED(ctypes.Structure):
    _fields_ = [("Internal", ctypes.c_size_t), ("InternalHigh", ctypes.c_size_t),
                ("Offset", w.DWORD), ("OffsetHigh", w.DWORD), ("hEvent", w.HANDLE)]


class SID_AND_ATTRIBUTES(ctypes.Structure):
    _fields_ = [("Sid", w.LPVOID), ("Attributes", w.DWORD)]


class TOKEN_GROUPS(ctypes.Structure):
    _fields_ = [("GroupCount", w.DWORD), ("Groups", SID_AND_ATTRIBUTES * 1)]


def prototypes() -> dict[str, dict[str, tuple[Any, list[Any]]]]:
    """{dll: {function: (restype, argtypes)}} for every call this module makes."""
    c = ctypes
    sa, ov, ptr = c.POINTER(SECURITY_ATTRIBUTES), c.POINTER(OVERLAPPED), c.POINTER(w.LPVOID)
    wbuf = c.POINTER(c.c_wchar)  # an output string buffer (LPWSTR the callee writes into)
    return {
        "kernel32": {
            "CreateNamedPipeW": (w.HANDLE, [w.LPCWSTR, w.DWORD, w.DWORD, w.DWORD, w.DWORD,
                                            w.DWORD, w.DWORD, sa]),
            "ConnectNamedPipe": (w.BOOL, [w.HANDLE, ov]),
            "DisconnectNamedPipe": (w.BOOL, [w.HANDLE]),
            "CreateFileW": (w.HANDLE, [w.LPCWSTR, w.DWORD, w.DWORD, sa, w.DWORD, w.DWORD,
                                       w.HANDLE]),
            "WaitNamedPipeW": (w.BOOL, [w.LPCWSTR, w.DWORD]),
            "ReadFile": (w.BOOL, [w.HANDLE, w.LPVOID, w.DWORD, w.LPDWORD, ov]),
            "WriteFile": (w.BOOL, [w.HANDLE, w.LPCVOID, w.DWORD, w.LPDWORD, ov]),
            "GetOverlappedResult": (w.BOOL, [w.HANDLE, ov, w.LPDWORD, w.BOOL]),
            "CancelIoEx": (w.BOOL, [w.HANDLE, ov]),
            "CreateEventW": (w.HANDLE, [sa, w.BOOL, w.BOOL, w.LPCWSTR]),
            "SetEvent": (w.BOOL, [w.HANDLE]),
            "WaitForMultipleObjects": (w.DWORD, [w.DWORD, c.POINTER(w.HANDLE), w.BOOL,
                                                 w.DWORD]),
            "CloseHandle": (w.BOOL, [w.HANDLE]),
            "GetNamedPipeClientProcessId": (w.BOOL, [w.HANDLE, w.PULONG]),
            "GetNamedPipeServerProcessId": (w.BOOL, [w.HANDLE, w.PULONG]),
            "OpenProcess": (w.HANDLE, [w.DWORD, w.BOOL, w.DWORD]),
            "GetCurrentProcess": (w.HANDLE, []),
            "GetCurrentThread": (w.HANDLE, []),
            "LocalFree": (w.HLOCAL, [w.HLOCAL]),
        },
        "advapi32": {
            "ConvertStringSecurityDescriptorToSecurityDescriptorW": (
                w.BOOL, [w.LPCWSTR, w.DWORD, ptr, w.PULONG]),
            "ConvertSecurityDescriptorToStringSecurityDescriptorW": (
                w.BOOL, [w.LPVOID, w.DWORD, w.DWORD, ptr, w.PULONG]),
            "ImpersonateNamedPipeClient": (w.BOOL, [w.HANDLE]),
            "RevertToSelf": (w.BOOL, []),
            "OpenThreadToken": (w.BOOL, [w.HANDLE, w.DWORD, w.BOOL, w.PHANDLE]),
            "OpenProcessToken": (w.BOOL, [w.HANDLE, w.DWORD, w.PHANDLE]),
            "GetTokenInformation": (w.BOOL, [w.HANDLE, c.c_int, w.LPVOID, w.DWORD,
                                             w.PDWORD]),
            "LookupAccountSidW": (w.BOOL, [w.LPCWSTR, w.LPVOID, wbuf, w.LPDWORD, wbuf,
                                           w.LPDWORD, c.POINTER(c.c_int)]),
            "ConvertSidToStringSidW": (w.BOOL, [w.LPVOID, ptr]),
            "GetSecurityInfo": (w.DWORD, [w.HANDLE, c.c_int, w.DWORD, ptr, ptr, ptr, ptr,
                                          ptr]),
            "GetNamedSecurityInfoW": (w.DWORD, [w.LPCWSTR, c.c_int, w.DWORD, ptr, ptr, ptr,
                                                ptr, ptr]),
        },
    }


def bind(load: Callable[[str], Any]) -> dict[str, Any]:
    """Load each DLL with *load* and declare every function's prototype on it."""
    return win32.bind(load, prototypes())


def _get_last_error() -> int:
    return int(ctypes.get_last_error())  # type: ignore[attr-defined, unused-ignore]


# -- errors -------------------------------------------------------------------------------------
class Win32Error(OSError):
    """A Win32 call failed; ``code`` is its GetLastError (or returned) error code."""

    def __init__(self, func: str, code: int) -> None:
        name = _ERROR_NAMES.get(code, "")
        super().__init__(f"{func} failed: Windows error {code}" + (f" ({name})" if name else ""))
        self.func, self.code = func, code


class Aborted(Win32Error):
    """An operation was cancelled because its connection or server is stopping."""


class ImpersonationStuck(RuntimeError):
    """RevertToSelf failed: this thread still runs as the pipe's client and must not go on."""


class ServerNotTrusted(PermissionError):
    """The pipe is not served by SYSTEM (someone may have taken the relay's pipe name)."""


@dataclass(frozen=True)
class Identity:
    """The pipe client's account, from its token."""

    sid: str
    account: str  # DOMAIN\\user (the SID when the name cannot be looked up)
    groups: tuple[str, ...]  # enabled group SIDs (not deny-only)
    pid: int = 0


# -- security descriptors (SDDL), for checks -------------------------------------------------
SDDL_SIDS = {"SY": SYSTEM_SID, "BA": ADMINISTRATORS_SID, "BU": "S-1-5-32-545",
             "BG": "S-1-5-32-546", "IU": "S-1-5-4", "AU": "S-1-5-11", "WD": "S-1-1-0",
             "AN": "S-1-5-7", "NU": "S-1-5-2", "CO": "S-1-3-0", "CG": "S-1-3-1",
             "OW": "S-1-3-4", "LS": "S-1-5-19", "NS": "S-1-5-20", "SU": "S-1-5-6",
             "BO": "S-1-5-32-551", "PU": "S-1-5-32-547", "RD": "S-1-5-32-555"}
_RIGHTS = {"GA": GENERIC_ALL, "GR": GENERIC_READ, "GW": GENERIC_WRITE, "GX": GENERIC_EXECUTE,
           "FA": FILE_ALL_ACCESS, "FR": FILE_GENERIC_READ, "FW": FILE_GENERIC_WRITE,
           "FX": FILE_GENERIC_EXECUTE, "RC": READ_CONTROL, "SD": DELETE, "WD": WRITE_DAC,
           "WO": WRITE_OWNER, "CC": 0x1, "DC": 0x2, "LC": 0x4, "SW": 0x8, "RP": 0x10,
           "WP": 0x20, "DT": 0x40, "LO": 0x80, "CR": 0x100}
#: Rights over a folder that let someone replace what is in it, or its ACL.
FOLDER_WRITE = (FILE_WRITE_DATA | FILE_APPEND_DATA | FILE_WRITE_EA | FILE_DELETE_CHILD
                | FILE_WRITE_ATTRIBUTES | DELETE | WRITE_DAC | WRITE_OWNER)


def file_rights(mask: int) -> int:
    """*mask* with the generic rights mapped as for files and pipes."""
    out = mask & ~(GENERIC_ALL | GENERIC_READ | GENERIC_WRITE | GENERIC_EXECUTE)
    for generic, specific in ((GENERIC_ALL, FILE_ALL_ACCESS), (GENERIC_READ, FILE_GENERIC_READ),
                              (GENERIC_WRITE, FILE_GENERIC_WRITE),
                              (GENERIC_EXECUTE, FILE_GENERIC_EXECUTE)):
        if mask & generic:
            out |= specific
    return out


@dataclass(frozen=True)
class Ace:
    kind: str   # "A" allow, "D" deny, ...
    flags: str  # "OICI", "ID", "IO", ...
    rights: int  # generic rights mapped as for files
    sid: str

    @property
    def effective(self) -> bool:
        """False for an inherit-only ACE (it applies to children, not to this object)."""
        return "IO" not in [self.flags[i:i + 2] for i in range(0, len(self.flags), 2)]


def _sid(text: str) -> str:
    return SDDL_SIDS.get(text, text)


def dacl(sddl: str) -> tuple[bool, list[Ace]]:
    """(protected, ACEs) of the DACL in *sddl*; ValueError when it has none."""
    m = re.search(r"D:([A-Z]*)((?:\([^)]*\))*)", sddl)
    if m is None:
        raise ValueError(f"no DACL in {sddl!r}")
    aces = []
    for body in re.findall(r"\(([^)]*)\)", m.group(2)):
        parts = body.split(";")
        if len(parts) < 6:
            raise ValueError(f"bad ACE ({body}) in {sddl!r}")
        kind, flags, rights_text, sid = parts[0], parts[1], parts[2], parts[5]
        if rights_text.lower().startswith("0x"):
            rights = int(rights_text, 16)
        else:
            tokens = [rights_text[i:i + 2] for i in range(0, len(rights_text), 2)]
            if any(t not in _RIGHTS for t in tokens):
                raise ValueError(f"unknown rights {rights_text!r} in {sddl!r}")
            rights = functools.reduce(lambda acc, t: acc | _RIGHTS[t], tokens, 0)
        aces.append(Ace(kind, flags, file_rights(rights), _sid(sid)))
    return "P" in m.group(1), aces


def others_with(sddl: str, mask: int, trusted: frozenset[str] = frozenset(
        {SYSTEM_SID, ADMINISTRATORS_SID})) -> list[str]:
    """SIDs other than *trusted* that an allow ACE of *sddl* grants any right in *mask*."""
    _, aces = dacl(sddl)
    return sorted({a.sid for a in aces
                   if a.kind == "A" and a.effective and a.rights & mask and a.sid not in trusted})


# -- the calls ----------------------------------------------------------------------------------
class PipeApi:
    """The real calls: named pipes, tokens and security descriptors."""

    def __init__(self, load: Callable[[str], Any] = _windll,
                 last_error: Callable[[], int] = _get_last_error) -> None:
        libs = bind(load)
        self.k, self.a = libs["kernel32"], libs["advapi32"]
        self._last_error = last_error

    def _fail(self, func: str) -> Win32Error:
        return Win32Error(func, self._last_error())

    @staticmethod
    def _handle(value: int | None) -> int:
        return int(value or 0)

    def _valid(self, value: int | None) -> bool:
        return bool(value) and value != INVALID_HANDLE_VALUE

    # -- handles and events ----------------------------------------------------------------
    def close(self, handle: int) -> None:
        if handle and not self.k.CloseHandle(handle):
            raise self._fail("CloseHandle")

    def new_event(self) -> int:
        """A manual-reset, unsignalled event."""
        h = self.k.CreateEventW(None, True, False, None)
        if not h:
            raise self._fail("CreateEventW")
        return self._handle(h)

    def set_event(self, event: int) -> None:
        if not self.k.SetEvent(event):
            raise self._fail("SetEvent")

    def _begun(self, func: str, ok: int) -> None:
        """*func* (an overlapped call that returned *ok*) is under way or done."""
        if not ok:
            code = self._last_error()
            if code != ERROR_IO_PENDING:
                raise Win32Error(func, code)

    def _complete(self, func: str, handle: int, ov: OVERLAPPED, stop: int,
                  timeout_ms: int = INFINITE) -> int:
        """Wait for the overlapped operation in *ov*: its byte count. Stopped (*stop*
        signalled), timed out or the wait failed: cancelled, then collected all the same, so
        the kernel never writes into an OVERLAPPED or a buffer that is gone."""
        events = (w.HANDLE * 2)(ov.hEvent, stop)
        woke = self.k.WaitForMultipleObjects(2 if stop else 1, events, False, timeout_ms)
        if woke != WAIT_OBJECT_0:
            self.k.CancelIoEx(handle, ctypes.byref(ov))  # ERROR_NOT_FOUND: it had finished
        got = w.DWORD(0)
        if not self.k.GetOverlappedResult(handle, ctypes.byref(ov), ctypes.byref(got), True):
            code = self._last_error()
            if code == ERROR_OPERATION_ABORTED and woke == WAIT_TIMEOUT:
                raise TimeoutError(f"{func}: nothing within {timeout_ms} ms")
            if code == ERROR_OPERATION_ABORTED:
                raise Aborted(func, code)
            raise Win32Error(func, code)
        return int(got.value)

    def read(self, handle: int, size: int, stop: int, timeout_ms: int = INFINITE) -> bytes:
        """Up to *size* bytes; b"" when the other end has closed."""
        event = self.new_event()
        try:
            ov, buf = OVERLAPPED(hEvent=event), ctypes.create_string_buffer(size)
            ok = self.k.ReadFile(handle, buf, size, None, ctypes.byref(ov))
            try:
                self._begun("ReadFile", ok)
                got = self._complete("ReadFile", handle, ov, stop, timeout_ms)
            except Win32Error as exc:
                if exc.code in _EOF_ERRORS:
                    return b""
                raise
            return buf.raw[:got]
        finally:
            self.close(event)

    def write(self, handle: int, data: bytes, stop: int) -> None:
        event = self.new_event()
        try:
            buf = (ctypes.c_char * max(len(data), 1)).from_buffer_copy(data or b"\0")
            done = 0
            while done < len(data):
                ov = OVERLAPPED(hEvent=event)
                ok = self.k.WriteFile(handle, ctypes.addressof(buf) + done, len(data) - done,
                                      None, ctypes.byref(ov))
                try:
                    self._begun("WriteFile", ok)
                    n = self._complete("WriteFile", handle, ov, stop)
                except Win32Error as exc:
                    if exc.code in _EOF_ERRORS:
                        raise BrokenPipeError(f"WriteFile: the other end closed ({exc})") from exc
                    raise
                if n == 0:
                    raise BrokenPipeError("WriteFile wrote nothing")
                done += n
        finally:
            self.close(event)

    # -- the server end --------------------------------------------------------------------
    def create_server(self, name: str, sddl: str, first: bool) -> int:
        """One instance of pipe *name* with the DACL *sddl*. *first*: only if the pipe does
        not exist yet (FILE_FLAG_FIRST_PIPE_INSTANCE; ERROR_ACCESS_DENIED if it does)."""
        sd = w.LPVOID()
        if not self.a.ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl, SDDL_REVISION_1, ctypes.byref(sd), None):
            raise self._fail("ConvertStringSecurityDescriptorToSecurityDescriptorW")
        try:
            sa = SECURITY_ATTRIBUTES(ctypes.sizeof(SECURITY_ATTRIBUTES), sd.value, False)
            mode = PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED
            if first:
                mode |= FILE_FLAG_FIRST_PIPE_INSTANCE
            h = self.k.CreateNamedPipeW(
                name, mode, PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT
                | PIPE_REJECT_REMOTE_CLIENTS, PIPE_UNLIMITED_INSTANCES, CHUNK, CHUNK, 0,
                ctypes.byref(sa))
            if not self._valid(h):
                raise self._fail("CreateNamedPipeW")
            return self._handle(h)
        finally:
            self.k.LocalFree(sd.value)

    def connect(self, handle: int, stop: int) -> None:
        """Wait for a client on this instance."""
        event = self.new_event()
        try:
            ov = OVERLAPPED(hEvent=event)
            if self.k.ConnectNamedPipe(handle, ctypes.byref(ov)):
                return  # overlapped ConnectNamedPipe returns 0; accept nonzero as connected
            code = self._last_error()
            if code == ERROR_PIPE_CONNECTED:
                # The client came between CreateNamedPipe and ConnectNamedPipe: "there is a
                # good connection between client and server, even though the function
                # returns zero" (ConnectNamedPipe).
                return
            if code != ERROR_IO_PENDING:
                raise Win32Error("ConnectNamedPipe", code)
            self._complete("ConnectNamedPipe", handle, ov, stop)
        finally:
            self.close(event)

    def disconnect(self, handle: int) -> None:
        if not self.k.DisconnectNamedPipe(handle):
            raise self._fail("DisconnectNamedPipe")

    def client_pid(self, handle: int) -> int:
        pid = w.ULONG(0)
        if not self.k.GetNamedPipeClientProcessId(handle, ctypes.byref(pid)):
            raise self._fail("GetNamedPipeClientProcessId")
        return int(pid.value)

    def client_identity(self, handle: int) -> Identity:
        """Who the connected client is, from its token. Call only after a read (the pipe
        file system impersonates "the last message read from the pipe")."""
        if not self.a.ImpersonateNamedPipeClient(handle):
            # Not impersonating: we must not carry on as if we knew who this is.
            raise self._fail("ImpersonateNamedPipeClient")
        token = w.HANDLE()
        opened, code = False, 0
        try:
            # OpenAsSelf=TRUE: the access check uses the relay's own (SYSTEM) context; with
            # FALSE an identification-level token cannot open the token at all.
            opened = bool(self.a.OpenThreadToken(self.k.GetCurrentThread(), TOKEN_QUERY, True,
                                                 ctypes.byref(token)))
            code = 0 if opened else self._last_error()
        finally:
            if not self.a.RevertToSelf():
                if opened:  # CloseHandle makes no access check: safe even as the client
                    self.k.CloseHandle(token.value)
                raise ImpersonationStuck(
                    f"RevertToSelf failed (Windows error {self._last_error()}): this thread "
                    "still runs as the pipe's client")
        if not opened:
            raise Win32Error("OpenThreadToken", code)
        try:
            sid, account, groups = self._token_identity(self._handle(token.value))
        finally:
            self.close(self._handle(token.value))
        return Identity(sid, account, groups)

    # -- the client end ----------------------------------------------------------------------
    def open_client(self, name: str, busy_wait_ms: int = 5000, attempts: int = 5) -> int:
        """Connect to pipe *name* (overlapped). The relay may identify this process but not
        act as it (SECURITY_IDENTIFICATION). Every instance busy: WaitNamedPipeW, again."""
        for _ in range(attempts):
            h = self.k.CreateFileW(name, CLIENT_ACCESS, 0, None, OPEN_EXISTING,
                                   FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT
                                   | SECURITY_IDENTIFICATION, None)
            if self._valid(h):
                return self._handle(h)
            code = self._last_error()
            if code != ERROR_PIPE_BUSY:
                raise Win32Error("CreateFileW", code)
            if not self.k.WaitNamedPipeW(name, busy_wait_ms):
                raise self._fail("WaitNamedPipeW")
        raise Win32Error("CreateFileW", ERROR_PIPE_BUSY)

    def server_pid(self, handle: int) -> int:
        pid = w.ULONG(0)
        if not self.k.GetNamedPipeServerProcessId(handle, ctypes.byref(pid)):
            raise self._fail("GetNamedPipeServerProcessId")
        return int(pid.value)

    def process_user_sid(self, pid: int) -> str | None:
        """The SID of the account process *pid* runs as; None when this process may not
        look (ERROR_ACCESS_DENIED: e.g. a SYSTEM process seen from a standard user)."""
        proc = self.k.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        if not proc:
            code = self._last_error()
            if code == ERROR_ACCESS_DENIED:
                return None
            raise Win32Error("OpenProcess", code)
        try:
            token = w.HANDLE()
            if not self.a.OpenProcessToken(proc, TOKEN_QUERY, ctypes.byref(token)):
                code = self._last_error()
                if code == ERROR_ACCESS_DENIED:
                    return None
                raise Win32Error("OpenProcessToken", code)
            try:
                return self._user_sid(self._handle(token.value))
            finally:
                self.close(self._handle(token.value))
        finally:
            self.close(self._handle(proc))

    def pipe_owner_sid(self, handle: int) -> str:
        owner_sid, sd = w.LPVOID(), w.LPVOID()
        rc = self.a.GetSecurityInfo(handle, SE_KERNEL_OBJECT, OWNER_SECURITY_INFORMATION,
                                    ctypes.byref(owner_sid), None, None, None,
                                    ctypes.byref(sd))
        if rc != 0:
            raise Win32Error("GetSecurityInfo", rc)
        try:
            return self._sid_string(owner_sid.value)
        finally:
            self.k.LocalFree(sd.value)

    # -- this process, files ---------------------------------------------------------------------
    def current_user_sid(self) -> str:
        token = w.HANDLE()
        if not self.a.OpenProcessToken(self.k.GetCurrentProcess(), TOKEN_QUERY,
                                       ctypes.byref(token)):
            raise self._fail("OpenProcessToken")
        try:
            return self._user_sid(self._handle(token.value))
        finally:
            self.close(self._handle(token.value))

    def file_sddl(self, path: str) -> str:
        """The owner and DACL of file or folder *path*, as SDDL."""
        sd = w.LPVOID()
        info = OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION
        rc = self.a.GetNamedSecurityInfoW(path, SE_FILE_OBJECT, info, None, None, None, None,
                                          ctypes.byref(sd))
        if rc != 0:
            raise Win32Error("GetNamedSecurityInfoW", rc)
        try:
            text = w.LPVOID()
            if not self.a.ConvertSecurityDescriptorToStringSecurityDescriptorW(
                    sd.value, SDDL_REVISION_1, info, ctypes.byref(text), None):
                raise self._fail("ConvertSecurityDescriptorToStringSecurityDescriptorW")
            try:
                return ctypes.wstring_at(text.value) if text.value else ""
            finally:
                self.k.LocalFree(text.value)
        finally:
            self.k.LocalFree(sd.value)

    # -- tokens and SIDs -----------------------------------------------------------------------
    def _token_info(self, token: int, cls: int) -> ctypes.Array[Any]:
        need = w.DWORD(0)
        self.a.GetTokenInformation(token, cls, None, 0, ctypes.byref(need))
        if not need.value:
            raise self._fail("GetTokenInformation")
        size = ctypes.sizeof(w.LPVOID)
        buf = (w.LPVOID * ((need.value + size - 1) // size))()  # pointer-aligned
        if not self.a.GetTokenInformation(token, cls, buf, ctypes.sizeof(buf),
                                          ctypes.byref(need)):
            raise self._fail("GetTokenInformation")
        return buf

    def _user_sid(self, token: int) -> str:
        user = SID_AND_ATTRIBUTES.from_buffer(self._token_info(token, TOKEN_USER_CLASS))
        return self._sid_string(user.Sid)

    def _token_identity(self, token: int) -> tuple[str, str, tuple[str, ...]]:
        user = SID_AND_ATTRIBUTES.from_buffer(self._token_info(token, TOKEN_USER_CLASS))
        sid = self._sid_string(user.Sid)
        account = self._account(user.Sid)
        if not account:
            log.warning("uplink relay: no account name for %s; using the SID", sid)
            account = sid
        buf = self._token_info(token, TOKEN_GROUPS_CLASS)
        count = TOKEN_GROUPS.from_buffer(buf).GroupCount
        groups = (SID_AND_ATTRIBUTES * count).from_buffer(buf, TOKEN_GROUPS.Groups.offset)
        return sid, account, tuple(
            self._sid_string(g.Sid) for g in groups
            if g.Attributes & SE_GROUP_ENABLED and not g.Attributes & SE_GROUP_USE_FOR_DENY_ONLY)

    def _sid_string(self, sid: int | None) -> str:
        text = w.LPVOID()
        if not self.a.ConvertSidToStringSidW(sid, ctypes.byref(text)):
            raise self._fail("ConvertSidToStringSidW")
        try:
            return ctypes.wstring_at(text.value) if text.value else ""
        finally:
            self.k.LocalFree(text.value)

    def _account(self, sid: int | None) -> str:
        """DOMAIN\\user for *sid* (looked up as the relay itself, not while impersonating);
        "" when it has no name."""
        size = 256
        for _ in range(2):
            name, domain = ctypes.create_unicode_buffer(size), ctypes.create_unicode_buffer(size)
            n, d, use = w.DWORD(size), w.DWORD(size), ctypes.c_int(0)
            if self.a.LookupAccountSidW(None, sid, name, ctypes.byref(n), domain,
                                        ctypes.byref(d), ctypes.byref(use)):
                return f"{domain.value}\\{name.value}" if domain.value else name.value
            code = self._last_error()
            if code != ERROR_INSUFFICIENT_BUFFER:
                log.info("LookupAccountSidW failed: Windows error %d", code)
                return ""
            size = max(int(n.value), int(d.value), size) + 1
        return ""


@functools.cache
def default_api() -> PipeApi:
    return PipeApi()


def verify_server(api: PipeApi, handle: int, name: str) -> None:
    """Refuse a pipe that SYSTEM does not serve (see the module docstring)."""
    pid = api.server_pid(handle)
    user = api.process_user_sid(pid)
    if user is not None and user != SYSTEM_SID:
        raise ServerNotTrusted(
            f"{name} is served by process {pid} running as {user}, not SYSTEM ({SYSTEM_SID}): "
            "nothing was sent (another program may have taken the relay's pipe name)")
    pipe_owner = api.pipe_owner_sid(handle)
    if pipe_owner != SYSTEM_SID:
        raise ServerNotTrusted(
            f"{name} is owned by {pipe_owner}, not SYSTEM ({SYSTEM_SID}): nothing was sent "
            "(another program may have created the relay's pipe before the relay started)")


# -- asyncio over the pipe ----------------------------------------------------------------------
class PipeReader:
    """Bytes a pipe's reader thread received, for one asyncio consumer (``readexactly``, as
    ``asyncio.StreamReader``). The thread waits while more than *high* bytes are unread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, high: int = 1 << 20) -> None:
        self._loop, self._high = loop, high
        self._buf = bytearray()
        self._eof = False
        self._want = 0
        self._waiter: asyncio.Future[None] | None = None
        self._room = threading.Event()
        self._room.set()

    # the reader thread
    def feed_threadsafe(self, data: bytes) -> bool:
        try:
            self._loop.call_soon_threadsafe(self.feed_data, data)
        except RuntimeError:  # the loop is closed
            return False
        self._room.wait()
        return True

    def eof_threadsafe(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self.feed_eof)

    def release(self) -> None:
        """Never leave the thread waiting for room (closing)."""
        self._room.set()

    # the event loop
    def feed_data(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= max(self._high, self._want):
            self._room.clear()
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._room.set()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def readexactly(self, n: int) -> bytes:
        self._want = n
        while len(self._buf) < n:
            if self._eof:
                partial = bytes(self._buf)
                self._buf.clear()
                raise asyncio.IncompleteReadError(partial, n)
            self._room.set()  # a frame larger than `high` still arrives whole
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self._want = 0
        if len(self._buf) < self._high:
            self._room.set()
        return data


class PipeConnection:
    """One connected pipe handle as the writer half of an asyncio (reader, writer) pair:
    ``write``/``drain``/``close``/``wait_closed`` like ``asyncio.StreamWriter``. A thread pumps
    what arrives into :attr:`reader`; writes run on a one-thread executor of their own."""

    def __init__(self, api: PipeApi, handle: int, loop: asyncio.AbstractEventLoop, *,
                 server: bool, first: bytes = b"", pid: int = 0, linger: float = 5.0) -> None:
        self.api, self.handle, self.server, self.pid = api, handle, server, pid
        self.loop, self.linger = loop, linger
        self.stop = api.new_event()
        self.reader = PipeReader(loop)
        if first:
            self.reader.feed_data(first)
        self._out = bytearray()
        self._lock = asyncio.Lock()
        self._eof = asyncio.Event()
        self._writes = concurrent.futures.ThreadPoolExecutor(1, "vigil-pipe-write")
        self._thread = threading.Thread(target=self._pump, name="vigil-pipe-read", daemon=True)
        self._closing: asyncio.Task[None] | None = None
        self.closed = threading.Event()

    def start(self) -> PipeConnection:
        self._thread.start()
        return self

    def _pump(self) -> None:
        try:
            while data := self.api.read(self.handle, CHUNK, self.stop):
                if not self.reader.feed_threadsafe(data):
                    break
        except OSError as exc:
            log.debug("pipe read ended: %s", exc)
        finally:
            self.reader.eof_threadsafe()
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._eof.set)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"pid": self.pid, "handle": self.handle}.get(name, default)

    def write(self, data: bytes) -> None:
        self._out += data

    async def drain(self) -> None:
        async with self._lock:
            if not self._out:
                return
            data = bytes(self._out)
            self._out.clear()
            try:
                await self.loop.run_in_executor(self._writes, self.api.write, self.handle,
                                                data, self.stop)
            except OSError as exc:
                raise ConnectionResetError(f"uplink pipe: {exc}") from exc

    def is_closing(self) -> bool:
        return self._closing is not None

    def close(self) -> None:
        if self._closing is None:
            self._closing = self.loop.create_task(self._aclose())

    async def wait_closed(self) -> None:
        if self._closing is not None:
            await asyncio.shield(self._closing)

    async def _aclose(self) -> None:
        try:
            with contextlib.suppress(OSError):  # ConnectionError is an OSError
                await self.drain()
            if self.server:
                # The session closes its end once it has read the last frame; disconnecting
                # before then would discard what it has not read (DisconnectNamedPipe). A
                # session that never closes is cut off after `linger` seconds; FlushFileBuffers
                # is not used because it would wait on such a session for ever.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._eof.wait(), self.linger)
            self._abort()
            await asyncio.to_thread(self._finish)
        except asyncio.CancelledError:
            self._abort()
            self._finish()
            raise

    def _abort(self) -> None:
        with contextlib.suppress(OSError):
            self.api.set_event(self.stop)
        self.reader.release()

    def _finish(self) -> None:
        if self.closed.is_set():
            return
        if self._thread.is_alive() or self._thread.ident is not None:
            self._thread.join()
        self._writes.shutdown(wait=True)
        if self.server:
            with contextlib.suppress(OSError):
                self.api.disconnect(self.handle)
        with contextlib.suppress(OSError):
            self.api.close(self.handle)
        with contextlib.suppress(OSError):
            self.api.close(self.stop)
        self.closed.set()


Handler = Callable[[PipeReader, PipeConnection, Callable[[], Identity]], Awaitable[None]]


def _die(exc: BaseException) -> None:
    log.critical("uplink relay: %s; exiting (the scheduled task restarts the relay)", exc)
    logging.shutdown()
    os._exit(70)


class PipeServer:
    """Serves pipe *name*: a listener thread keeps one instance waiting for a client; each
    client's first bytes are read and its token identified on a thread of its own (which then
    reverts), then *handler* runs on the event loop with the (reader, writer) pair and a
    function returning the client's :class:`Identity` (raising PermissionError when it could
    not be established). The first instance is created with FILE_FLAG_FIRST_PIPE_INSTANCE:
    when the name already exists, :meth:`start` fails instead of joining someone else's pipe.
    """

    def __init__(self, api: PipeApi, name: str, sddl: str, handler: Handler, *,
                 on_fatal: Callable[[BaseException], None] = _die,
                 first_read_ms: int = FIRST_READ_MS) -> None:
        self.api, self.name, self.sddl, self.handler = api, name, sddl, handler
        self.on_fatal, self.first_read_ms = on_fatal, first_read_ms
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = 0
        self._stopping = threading.Event()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._threads: set[threading.Thread] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._conns: set[PipeConnection] = set()
        self._lock = threading.Lock()
        self._listener: threading.Thread | None = None

    async def start(self) -> PipeServer:
        self._loop = asyncio.get_running_loop()
        self._stop = self.api.new_event()
        self._listener = threading.Thread(target=self._listen, name="vigil-pipe-listen",
                                          daemon=True)
        self._listener.start()
        await self._loop.run_in_executor(None, self._started.wait)
        if self._error is not None:
            await self.stop()
            raise self._error
        return self

    def _listen(self) -> None:
        first = True
        while not self._stopping.is_set():
            try:
                h = self.api.create_server(self.name, self.sddl, first)
            except OSError as exc:
                if first:
                    self._error = PermissionError(
                        f"cannot create {self.name}: {exc}; if it already exists another "
                        "program created it first (see who serves it before restarting)")
                    self._started.set()
                    return
                log.error("uplink relay: cannot create another instance of %s: %s",
                          self.name, exc)
                self._stopping.wait(1.0)
                continue
            if first:
                first = False
                self._started.set()
            try:
                self.api.connect(h, self._stop)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    self.api.close(h)
                if isinstance(exc, Aborted) or self._stopping.is_set():
                    return
                log.info("uplink relay: a client did not connect: %s", exc)
                continue
            t = threading.Thread(target=self._accept, args=(h,), name="vigil-pipe-accept",
                                 daemon=True)
            with self._lock:
                self._threads.add(t)
            t.start()

    def _accept(self, h: int) -> None:
        try:
            try:
                pid = self.api.client_pid(h)
            except OSError:
                pid = 0
            result: Identity | PermissionError
            try:
                first = self.api.read(h, CHUNK, self._stop, self.first_read_ms)
            except OSError as exc:
                log.info("uplink relay: client %d sent nothing: %s", pid, exc)
                first = b""
            if not first:
                with contextlib.suppress(OSError):
                    self.api.close(h)
                return
            try:
                ident = self.api.client_identity(h)
                result = Identity(ident.sid, ident.account, ident.groups, pid)
            except ImpersonationStuck as exc:
                # Still running as the client: do nothing more on this thread.
                self.on_fatal(exc)
                return
            except OSError as exc:
                result = PermissionError(f"could not identify the client (pid {pid}): {exc}")
            loop = self._loop
            try:
                if loop is None or self._stopping.is_set():
                    raise RuntimeError("stopping")
                asyncio.run_coroutine_threadsafe(self._run(h, first, result, pid), loop)
            except RuntimeError:
                with contextlib.suppress(OSError):
                    self.api.close(h)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    async def _run(self, h: int, first: bytes, result: Identity | PermissionError,
                   pid: int) -> None:
        task = asyncio.current_task()
        assert task is not None and self._loop is not None
        if self._stopping.is_set():  # handed over just as the server stopped
            with contextlib.suppress(OSError):
                self.api.close(h)
            return
        conn = PipeConnection(self.api, h, self._loop, server=True, first=first, pid=pid)
        self._tasks.add(task)
        self._conns.add(conn)
        conn.start()

        def identify() -> Identity:
            if isinstance(result, PermissionError):
                raise result
            return result

        try:
            await self.handler(conn.reader, conn, identify)
        finally:
            conn.close()
            await conn.wait_closed()
            self._conns.discard(conn)
            self._tasks.discard(task)

    async def stop(self) -> None:
        self._stopping.set()
        if self._stop:
            self.api.set_event(self._stop)
        loop = asyncio.get_running_loop()
        if self._listener is not None:
            await loop.run_in_executor(None, self._listener.join)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            await loop.run_in_executor(None, thread.join)
        for conn in list(self._conns):
            conn._abort()  # its reads end: the handler sees the session go
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._stop:
            with contextlib.suppress(OSError):
                self.api.close(self._stop)
            self._stop = 0


async def open_pipe(api: PipeApi, name: str, *,
                    busy_wait_ms: int = 5000) -> tuple[PipeReader, PipeConnection]:
    """Connect to the relay's pipe and check that SYSTEM serves it, before anything is sent."""
    loop = asyncio.get_running_loop()

    def connect() -> int:
        h = api.open_client(name, busy_wait_ms)
        try:
            verify_server(api, h, name)
        except BaseException:
            with contextlib.suppress(OSError):
                api.close(h)
            raise
        return h

    fut = loop.run_in_executor(None, connect)
    try:
        h = await asyncio.shield(fut)
    except asyncio.CancelledError:
        def close_later(f: asyncio.Future[int]) -> None:
            if not f.cancelled() and f.exception() is None:
                with contextlib.suppress(OSError):
                    api.close(f.result())
        fut.add_done_callback(close_later)
        raise
    conn = PipeConnection(api, h, loop, server=False).start()
    return conn.reader, conn
