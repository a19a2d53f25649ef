"""``vigil-agent install-check`` on Windows and macOS: what the agent can see in this session.

Each probe is one small OS call, injected (``probes``) so the report logic is tested on Linux
with probes that answer as the OS would. A probe that raises counts as a failed check and its
error is printed: install-check never prints OK for something it did not check.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

__all__ = ["macos_probes", "os_checks", "windows_probes"]

Probe = Callable[[], Any]


def windows_probes() -> dict[str, Probe]:
    def hook() -> bool:
        from pynput import keyboard

        listener = keyboard.Listener(on_press=lambda key: None)
        listener.start()
        listener.wait()
        alive = bool(listener.is_alive())
        listener.stop()
        listener.join(timeout=5)
        return alive

    def foreground() -> int:
        from .win32 import Win32

        return Win32().foreground()

    def drives() -> list[str]:
        from .win32 import Win32
        from .windows import removable_volumes

        return sorted(removable_volumes(Win32()))

    def timeout() -> float:
        from .hookwatch import windows_hook_timeout

        return windows_hook_timeout()

    return {"foreground": foreground, "hook": hook, "hook_timeout": timeout,
            "removable": drives, "enrolled": _enrolled}


def macos_probes() -> dict[str, Probe]:
    def accessibility() -> bool:
        from .cocoa import Cocoa

        return Cocoa.shared().ax_trusted()

    def input_monitoring() -> int:
        iokit = ctypes.CDLL("/System/Library/Frameworks/IOKit.framework/IOKit")
        iokit.IOHIDCheckAccess.restype, iokit.IOHIDCheckAccess.argtypes = (ctypes.c_uint32,
                                                                           [ctypes.c_uint32])
        return int(iokit.IOHIDCheckAccess(1))  # kIOHIDRequestTypeListenEvent; 0 = granted

    def screen_recording() -> bool:
        from .cocoa import Cocoa

        return Cocoa.shared().screen_capture_allowed()

    def secure_input() -> bool:
        carbon = ctypes.CDLL("/System/Library/Frameworks/Carbon.framework/Carbon")
        carbon.IsSecureEventInputEnabled.restype = ctypes.c_bool
        return bool(carbon.IsSecureEventInputEnabled())

    def drives() -> list[str]:
        from .cocoa import Cocoa
        from .macos import removable_volumes

        return sorted(removable_volumes(Cocoa.shared()))

    return {"accessibility": accessibility, "input_monitoring": input_monitoring,
            "screen_recording": screen_recording, "secure_input": secure_input,
            "removable": drives, "enrolled": _enrolled}


def _enrolled() -> str:
    from ..enrol import load_device
    from ..paths import DataDir

    device = load_device(DataDir.resolve(None))
    return device.device_id if device else ""


def _try(probe: Probe) -> tuple[Any, str]:
    try:
        return probe(), ""
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def os_checks(name: str, probes: dict[str, Probe] | None = None) -> tuple[bool, list[str]]:
    """(all OK, report lines) for the "windows" or "macos" backend."""
    probes = probes or (windows_probes() if name == "windows" else macos_probes())
    lines: list[str] = []
    ok = True

    def line(label: str, good: bool, text: str) -> None:
        nonlocal ok
        ok = ok and good
        lines.append(f"{label}: {'OK' if good else 'PROBLEM'}: {text}")

    results = {k: _try(p) for k, p in probes.items()}
    if name == "windows":
        fg, err = results["foreground"]
        line("Window titles", bool(fg), "event-driven (SetWinEventHook), foreground window "
             "found" if fg else err or "no foreground window: run this in the pupil's desktop "
             "session, not as SYSTEM or in session 0")
        hook, err = results["hook"]
        timeout, _ = results["hook_timeout"]
        installed = f"low-level hook installed (OS timeout {(timeout or 0) * 1000:.0f} ms, watched)"
        line("Keyboard hook", bool(hook), installed if hook else err or "the hook did not start")
    else:
        ax, err = results["accessibility"]
        line("Accessibility (window titles)", bool(ax), "granted" if ax else err or
             "not granted: titles are not read; approve it (or pre-approve it with the PPPC "
             "profile) in System Settings > Privacy & Security > Accessibility")
        im, err = results["input_monitoring"]
        line("Input Monitoring (typed phrases)", im == 0, "granted" if im == 0 else err or
             "not granted: approve Vigil in System Settings > Privacy & Security > Input "
             "Monitoring (MDM cannot pre-approve it)")
        sr, err = results["screen_recording"]
        line("Screen Recording (screenshots)", True, "granted" if sr else err or
             "not granted: severe captures carry no screenshot (a screenshot would show only "
             "the wallpaper); everything else works")
        secure, err = results["secure_input"]
        line("Secure keyboard entry", not secure, "off" if not secure and not err else err or
             "ON: an application has enabled secure input, so no keys are seen until it is "
             "turned off")
    vols, err = results["removable"]
    now = "removable volumes now: " + (", ".join(vols or ()) or "none")
    line("Media detection", not err, err or now)
    device, err = results["enrolled"]
    line("Enrolment", bool(device), f"device {device}" if device else err or
         "this device is not enrolled yet: captures are kept in the spool until it is")
    return ok, lines
