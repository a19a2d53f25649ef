"""``vigil-agent status`` and ``install-check``: read-only reports for the pupil, the
technician and the DSL. Status reads the data dir only, so it works while ``run`` is going."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .config import Config
from .enrol import load_device
from .paths import DataDir
from .runtime import monitored
from .spool import read_stats

__all__ = ["install_check", "status_report"]


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    # Not os.kill(pid, 0): on Windows that sends CTRL_C_EVENT to the agent's console group.
    if pid <= 0:
        return False
    import psutil

    return bool(psutil.pid_exists(pid))


def status_report(data: DataDir, config: Config) -> str:
    state = _json(data.state_json)
    rules_state = _json(data.rules_json)
    device = load_device(data)
    stats = read_stats(data.spool)
    running = bool(state.get("running")) and _alive(int(state.get("pid", 0) or 0))
    lines = [
        "Vigil agent: " + (f"running (pid {state.get('pid')})" if running else "not running"),
        "Monitoring: " + ", ".join(state.get("monitoring") or monitored(config)),
        "Not monitored: screen contents (except a screenshot for some severe hits), "
        "web traffic, files on the laptop, password fields and excluded windows",
        f"Data dir: {data.root}",
        "Device id: " + (device.device_id if device else "not enrolled"),
        "Collector: " + (state.get("collector") or config.collector
                         or (device.collector if device else "") or "none"),
    ]
    if running:
        lines.append("Connection: " + ("connected" if state.get("connected") else
                                       f"not connected ({state.get('last_error') or '-'})"))
    lines.append(f"Rules version: {rules_state.get('version', 'none')} "
                 f"({rules_state.get('rules', 0)} rules)")
    if rules_state.get("last_error"):
        lines.append(f"Last rules error: {rules_state['last_error']}")
    if running:
        for name, h in sorted((state.get("sources") or {}).items()):
            if not isinstance(h, dict):
                continue
            last = float(h.get("last_event_unix") or 0)
            ago = f"last event {max(0, int(time.time() - last))} s ago" if last else "no events yet"
            line = f"Source {name}: {h.get('state')} ({ago}"
            if h.get("restarts"):
                line += f", restarted {h['restarts']} times"
            line += ")"
            if h.get("error") and h.get("state") != "running":
                line += f": {h['error']}"
            lines.append(line)
        down = [n for n, h in (state.get("sources") or {}).items()
                if isinstance(h, dict) and h.get("state") in ("restarting", "failed")
                and n != "password_fields"]
        if down:
            lines.append("WARNING: not monitoring " + ", ".join(sorted(down))
                         + " right now (the agent keeps retrying)")
        fields = (state.get("sources") or {}).get("password_fields")
        if isinstance(fields, dict):
            lines.append(_password_line(fields))
        if state.get("keys_excluded"):
            lines.append(f"Typed keys: not matched in the focused window "
                         f"({state['keys_excluded']})")
    scope = state.get("screenshot_scope") or config.screenshot_scope
    lines.append("Screenshots: " + ("the focused window only" if scope == "window" else
                                    "the whole screen")
                 + f", only for severe hits whose rule allows it (severity >= "
                 f"{config.screenshot_min_severity}); never for child sexual abuse material")
    if running and state.get("scorer"):
        lines.append(f"Learned scorer: {state['scorer']} (worker {state.get('scorer_worker')})")
    if stats is None:
        lines.append("Spool: empty (no spool file yet)")
        lines.append("Drops: none")
    else:
        lines.append(f"Spool: {stats.depth} captures waiting ({stats.bytes} bytes)")
        drops = ", ".join(f"{k}={v}" for k, v in sorted(stats.drops.items())) or "none"
        lines.append(f"Drops: {drops}")
    return "\n".join(lines)


def _password_line(h: dict[str, Any]) -> str:
    if h.get("state") == "running":
        return ("Password fields: told apart through the OS accessibility API (AT-SPI on "
                "Linux); keys typed into them are never matched")
    return ("Password fields: DEGRADED, cannot tell password fields apart ("
            + str(h.get("error") or h.get("state")) + "); sign-in pages are excluded by "
            "window title instead. Turn accessibility on (see docs/security.md)")


def install_check(config: Config, data: DataDir | None = None,
                  not_found: str | None = None) -> tuple[bool, str]:
    """Check this machine can run the agent: display server, keyboard access, media, and
    (with *data*) the enrolment and the agent there. *not_found* says where an agent was
    looked for when *data* holds none.

    Outside a desktop session (no display) the display and keyboard cannot be checked: that
    is said plainly and is not a failure of the install."""
    from .platform import backend_name

    name = backend_name()
    lines = [f"Backend: {name}"]
    ok = True
    in_session = True
    if name == "x11":
        try:
            from Xlib import display

            d = display.Display()
            has_record = d.has_extension("RECORD")
            wm = d.screen().root.get_full_property(d.intern_atom("_NET_ACTIVE_WINDOW"), 0)
            d.close()
            lines.append(f"Display server: X11 at {os.environ.get('DISPLAY')} OK")
            lines.append("Window titles: " + ("event-driven (_NET_ACTIVE_WINDOW)" if wm
                                              is not None else "input-focus fallback"))
            lines.append("Keyboard access: " + ("OK (RECORD extension)" if has_record else
                                                "MISSING: the X server has no RECORD extension"))
            ok = ok and has_record
        except Exception as exc:
            ok = False
            lines.append(f"Display server: cannot open X display ({exc})")
    elif name == "wayland":
        lines.append("Display server: Wayland: window titles and keys are not available to "
                     "ordinary programs; only removable media will be watched")
    elif name == "headless":
        in_session = False
        lines.append("Display server: none here: DISPLAY is not set, so this shell is not in "
                     "a desktop session. That is not a fault of the install: the agent runs "
                     "in each pupil's desktop session, so window titles and keys can only be "
                     "checked from there (run install-check in a terminal in that session, "
                     "or with DISPLAY set to its display)")
    elif name in ("windows", "macos"):
        from .backends.checks import os_checks

        os_ok, os_lines = os_checks(name)
        ok = ok and os_ok
        lines.extend(os_lines)
    else:
        lines.append(f"Display server: {name}: no backend for this OS")
        ok = False
    if name in ("x11", "wayland", "headless"):
        try:
            import select

            with open("/proc/self/mountinfo") as fh:
                p = select.poll()
                p.register(fh, select.POLLPRI)
            roots = [r for r in config.media_roots if Path(r).is_dir()]
            lines.append("Media detection: OK (/proc/self/mountinfo); media roots present: "
                         + (", ".join(roots) or "none"))
        except OSError as exc:
            ok = False
            lines.append(f"Media detection: cannot watch the mount table ({exc})")
    if data is not None:
        lines.extend(_data_dir_lines(data, enrolment=name in ("x11", "wayland", "headless")))
    if not_found:
        lines.append(not_found)
    if not ok:
        lines.append("Result: PROBLEMS FOUND")
    elif in_session:
        lines.append("Result: OK")
    else:
        lines.append("Result: OK for what can be checked outside a desktop session "
                     "(display and keyboard not checked)")
    return ok, "\n".join(lines)


def _data_dir_lines(data: DataDir, enrolment: bool) -> list[str]:
    """Enrolment (where the OS checks do not probe it) and the agent running from *data*."""
    lines: list[str] = []
    if enrolment:
        device = load_device(data)
        lines.append(f"Enrolment: device {device.device_id}, collector {device.collector} "
                     f"(identity in {data.identity})" if device else
                     f"Enrolment: not enrolled (no {data.device_json}): captures stay in the "
                     "spool until `vigil-agent enroll` is run")
    state = _json(data.state_json)
    if bool(state.get("running")) and _alive(int(state.get("pid", 0) or 0)):
        sources = state.get("sources") or {}
        health = ", ".join(f"{n} {h.get('state')}" for n, h in sorted(sources.items())
                           if isinstance(h, dict))
        lines.append(f"Agent: running (pid {state.get('pid')}) from {data.root}; "
                     + ("connected" if state.get("connected") else "not connected")
                     + (f"; sources: {health}" if health else ""))
    else:
        lines.append(f"Agent: not running from {data.root}")
    return lines
