"""macOS backend: the logic, over a small seam (:class:`Api`). NOT YET RUN ON A REAL MAC.

The pyobjc calls live in :mod:`agent.backends.cocoa`; tests drive this module with a fake
:class:`Api` that behaves as Apple documents.

* Main thread: ``NSWorkspace`` state and its notifications are only updated while the *main*
  run loop runs (Apple: ``runningApplications``/``frontmostApplication`` "are updated only
  when the main run loop runs in a common mode"). ``agent.platform.run_agent`` therefore
  turns a Cocoa run loop on the main thread and runs asyncio in a worker
  (:mod:`agent.backends.mainloop`). A window source started without it refuses to run and
  says why, instead of reporting the first application all day.
* Window: the application comes from ``NSWorkspaceDidActivateApplicationNotification``
  (its ``NSWorkspaceApplicationKey``), not from re-reading ``frontmostApplication``. The title
  comes from the Accessibility API (``AXUIElementCreateApplication`` → ``AXFocusedWindow`` →
  ``AXTitle``), which an MDM PPPC profile can pre-approve (TCC service ``Accessibility``),
  instead of ``CGWindowListCopyWindowInfo``'s ``kCGWindowName``, which needs Screen Recording,
  which a profile can only deny. Titles are re-read every *title_interval* seconds for
  changes inside one application. A focused ``AXSecureTextField`` marks a password field.
  Without Accessibility the application name is still reported, and status says why.
* Screenshots: without Screen Recording macOS returns the desktop wallpaper and menu bar only;
  :func:`screenshot_blocked` says so and no image is taken.
* Media: mounted volumes with their ``NSURLVolume*`` resource values and the DiskArbitration
  device protocol: disk images, network shares and internal disks are not removable media;
  USB and SD volumes are. Each Cocoa poll runs in an autorelease pool.
* Keys: pynput's event tap, with its keyboard-layout (TIS/TSM) calls moved to the main
  thread (:mod:`agent.backends.mackeys`), wrapped in
  :class:`~agent.backends.hookwatch.WatchedKeySource`.
* Password fields: :mod:`agent.sources.a11y_macos` (focused ``AXSecureTextField``, and
  ``IsSecureEventInputEnabled``), on its own thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..sources import FieldSource, KeySource, WindowInfo
from .polling import PollingMediaSource, Volume, watchdog_watch

__all__ = ["AX_API_DISABLED", "Api", "Focused", "MacMediaSource", "MacVolume",
           "MacWindowSource", "fields", "is_removable", "keys", "read_window", "removable_volumes",
           "screenshot_blocked"]

log = logging.getLogger(__name__)

AX_SUCCESS = 0
AX_API_DISABLED = -25211  # kAXErrorAPIDisabled: this process is not trusted for Accessibility
AX_NO_VALUE = -25212  # kAXErrorNoValue: the application has no focused window
AX_CANNOT_COMPLETE = -25204  # kAXErrorCannotComplete: the application did not answer

#: DiskArbitration DADeviceProtocol values of removable media, and of things that are not.
_REMOVABLE_PROTOCOLS = frozenset({"USB", "Secure Digital", "FireWire"})
_NOT_MEDIA_PROTOCOLS = frozenset({"Disk Image", "Virtual Interface"})


@dataclass(frozen=True)
class Focused:
    """What the Accessibility API says about an application's focused window."""

    error: int = AX_SUCCESS  # an AXError; AX_SUCCESS when the title was read
    title: str = ""
    rect: tuple[int, int, int, int] | None = None  # left, top, width, height (points)
    secure_field: bool = False  # the focused element's subrole is AXSecureTextField


@dataclass(frozen=True)
class MacVolume:
    """One mounted volume and its NSURL resource values (None: not reported)."""

    path: str
    is_symlink: bool = False
    removable: bool | None = None  # NSURLVolumeIsRemovableKey
    ejectable: bool | None = None  # NSURLVolumeIsEjectableKey
    internal: bool | None = None  # NSURLVolumeIsInternalKey
    local: bool | None = None  # NSURLVolumeIsLocalKey
    protocol: str = ""  # DiskArbitration DADeviceProtocol ("USB", "Disk Image", ...)
    label: str = ""
    fstype: str = ""
    size: int = 0
    uuid: str = ""


class Api(Protocol):
    def main_loop_running(self) -> bool: ...
    def observe_activation(self, on_app: Callable[[int, str], None]) -> Callable[[], None]:
        """Call ``on_app(pid, name)`` (on the main thread) at each application activation;
        return a function that stops it."""
    def frontmost(self) -> tuple[int, str]: ...  # current only while the main run loop runs
    def ax_trusted(self) -> bool: ...  # AXIsProcessTrusted (never prompts)
    def focused(self, pid: int) -> Focused: ...
    def screen_capture_allowed(self) -> bool: ...  # CGPreflightScreenCaptureAccess
    def volumes(self) -> list[MacVolume]: ...


def read_window(api: Api, pid: int, name: str, trusted: bool) -> tuple[WindowInfo | None, int]:
    """The window for application *pid*, and the AX error (so callers can report it)."""
    if not pid:
        return None, AX_SUCCESS
    if not trusted:
        return WindowInfo("", name, pid), AX_API_DISABLED
    f = api.focused(pid)
    return WindowInfo(f.title if f.error == AX_SUCCESS else "", name, pid, f.secure_field), f.error


class MacWindowSource:
    """Application switches from NSWorkspace notifications; titles through Accessibility."""

    def __init__(self, api: Api | None = None, title_interval: float = 1.0,
                 start_timeout: float = 5.0) -> None:
        self._api = api
        self.title_interval, self.start_timeout = title_interval, start_timeout
        self.pid, self.name = 0, ""
        #: Why titles are not read ("" when they are): shown by install-check and the log.
        self.title_problem = ""

    @property
    def api(self) -> Api:
        if self._api is None:
            from .cocoa import Cocoa

            self._api = Cocoa.shared()
        return self._api

    def focused_rect(self) -> tuple[int, int, int, int] | None:
        """The focused window's rectangle, for window-only screenshots."""
        return self.api.focused(self.pid).rect if self.pid else None

    def run(self, on_change: Callable[[WindowInfo], None], stop: threading.Event) -> None:
        api = self.api
        for _ in range(int(self.start_timeout * 10)):  # the main thread may still be starting
            if api.main_loop_running() or stop.wait(0.1):
                break
        if not api.main_loop_running():
            raise RuntimeError("no Cocoa run loop on the main thread: NSWorkspace would report "
                               "the first application all session (start the agent through "
                               "vigil-agent run, which runs one)")
        apps: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()
        unsubscribe = api.observe_activation(lambda pid, name: apps.put((pid, name)))
        try:
            self.pid, self.name = api.frontmost()
            last: WindowInfo | None = None
            while not stop.is_set():
                info, error = read_window(api, self.pid, self.name, api.ax_trusted())
                self._note(error)
                if info is not None and info != last:
                    last = info
                    on_change(info)
                try:
                    pid, name = apps.get(timeout=self.title_interval)
                    while True:  # several switches since the last read: the latest counts
                        try:
                            pid, name = apps.get_nowait()
                        except queue.Empty:
                            break
                    self.pid, self.name = pid, name
                except queue.Empty:
                    pass
        finally:
            unsubscribe()

    def _note(self, error: int) -> None:
        if error == AX_CANNOT_COMPLETE:
            return  # a busy application: the next read tries again
        if error in (AX_SUCCESS, AX_NO_VALUE):
            problem = ""
        elif error == AX_API_DISABLED:
            problem = ("Accessibility is not granted to the agent: window titles are not "
                       "read, only application names")
        else:
            problem = f"the Accessibility API failed (AXError {error})"
        if problem != self.title_problem:
            if problem:
                log.warning("window titles: %s", problem)
            else:
                log.info("window titles: readable again")
            self.title_problem = problem


def screenshot_blocked(api: Api) -> str:
    """Why a screenshot would be useless here ("" when it would show the screen)."""
    try:
        allowed = api.screen_capture_allowed()
    except Exception as exc:
        return f"cannot tell whether Screen Recording is granted ({exc})"
    if allowed:
        return ""
    return ("Screen Recording is not granted: macOS would return only the wallpaper and menu "
            "bar, so no screenshot is taken")


def is_removable(v: MacVolume) -> bool:
    """USB sticks, SD cards, external disks: yes. The boot volume, internal disks, disk
    images, network shares: no."""
    if v.is_symlink or v.local is False:
        return False  # "Macintosh HD" -> /, or an SMB/AFP/NFS share
    if v.protocol in _NOT_MEDIA_PROTOCOLS:
        return False
    if v.protocol in _REMOVABLE_PROTOCOLS:
        return True
    if v.internal:
        return bool(v.removable)  # a built-in SD slot is internal but its media removable
    return bool(v.removable or v.ejectable)


def removable_volumes(api: Api) -> dict[str, Volume]:
    return {v.path: Volume(v.path, v.label, v.fstype, v.size, v.uuid)
            for v in api.volumes() if is_removable(v)}


class MacMediaSource(PollingMediaSource):
    def __init__(self, api: Api | None = None, interval: float = 1.0) -> None:
        self._api = api
        super().__init__(lambda: removable_volumes(self.api), interval, watchdog_watch)

    @property
    def api(self) -> Api:
        if self._api is None:
            from .cocoa import Cocoa

            self._api = Cocoa.shared()
        return self._api


def keys() -> KeySource:
    """pynput's event tap, its TIS/TSM layout calls made on the main thread
    (:mod:`agent.backends.mackeys`), watched for a tap macOS disabled."""
    from .hookwatch import MACOS_TAP_TIMEOUT, WatchedKeySource
    from .mackeys import MacKeySource

    return WatchedKeySource(MacKeySource(), MACOS_TAP_TIMEOUT)


def fields() -> FieldSource:
    """Password fields: the focused element's AXSecureTextField subrole, and secure input."""
    from ..sources.a11y_macos import MacFieldSource

    return MacFieldSource()
