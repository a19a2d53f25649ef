"""The running agent: spool, rules, monitor and uplink wired together from a data dir + config.

``AgentRuntime(data, config).run(stop)`` is what ``vigil-agent run`` does. Backends and the
channel factory are injectable so tests can run a real agent in-process against a real X
display and a real TLS server.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import os
import platform
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proto import vigil_pb2 as pb
from rules.scorer import Scorer

from . import __version__
from .aio import wait_event
from .capture import CaptureBuilder, grab_screenshot, window_screenshot
from .config import MAX_CONTEXT_CHARS, Config
from .enrol import Device, load_device
from .modelfetch import ModelFetcher
from .monitor import Monitor
from .paths import DataDir
from .platform import Backends, guarded_screenshot, select_backends
from .relay import session_channel_factory
from .rulestate import ActiveRules
from .spool import Spool
from .uplink import ChannelFactory, Uplink

__all__ = ["NOTICE", "AgentRuntime", "monitored"]

log = logging.getLogger(__name__)

NOTICE = ("Vigil agent is running: monitoring window titles, typed phrases, removable media; "
          "see vigil-agent status")


def monitored(config: Config) -> list[str]:
    out = []
    if config.watch_window:
        out.append("window titles")
    if config.watch_keys:
        out.append("typed phrases (matched in memory, never stored)")
        out.append("pasted text (read only when pasted, matched in memory, never stored)")
    if config.watch_media:
        out.append("removable media")
    return out


def _load_scorer(config: Config, folder: Path | None = None,
                 load: Callable[[Path], Scorer] | None = None) -> tuple[Scorer | None, str]:
    """The scorer, or None and why not. A missing or corrupt model never stops the agent:
    the phrase and context rules keep working and ``status`` says the scorer is off.
    ``folder``: the artefact the active bundle names, when it is already on disk."""
    if not config.scorer:
        return None, "disabled in the configuration (scorer = false)"
    try:
        from rules.scorer import DEFAULT_MODEL, load_scorer

        chosen = Path(config.scorer_model) if config.scorer_model else folder
        return (load or load_scorer)(chosen or DEFAULT_MODEL), ""
    except Exception as exc:  # ImportError (no onnxruntime), RuleError (corrupt artefact)
        log.error("learned scorer unavailable, matching with rules only: %s", exc)
        return None, str(exc)


class AgentRuntime:
    def __init__(self, data: DataDir, config: Config, *, backends: Backends | None = None,
                 channel_factory: ChannelFactory | None = None,
                 os_user: str | None = None, hostname: str | None = None,
                 screenshot: Callable[[], bytes] = grab_screenshot,
                 on_capture: Callable[[pb.Capture], None] | None = None,
                 shipped_model: Path | None = None,
                 scorer_loader: Callable[[Path], Scorer] | None = None) -> None:
        self.data = data.ensure()
        self.config = config
        self._base_config = config  # collector config applies on top of this, never stacks
        self._last_state: dict[str, Any] = {}
        self._last_state_write = 0.0
        self.os_user = os_user or getpass.getuser()
        self.hostname = hostname or socket.gethostname()
        self.spool = Spool(data.spool, config.spool_max_bytes)
        library = Path(config.rules_library) if config.rules_library else None
        self.rules = ActiveRules(data, library).load()
        self.device: Device | None = load_device(data)
        self.collector = config.collector or (self.device.collector if self.device else "")
        if self.device and self.device.group and not config.group:
            self.config = config = config.replace(group=self.device.group)
        self.builder = CaptureBuilder(
            self.spool, os_user=self.os_user, hostname=self.hostname,
            rules_version=lambda: self.rules.version, screenshot=screenshot,
            merge_seconds=config.merge_seconds,
            screenshot_min_severity=config.screenshot_min_severity, on_capture=on_capture)
        # The model follows the signed bundle unless the config pins a folder (scorer_model).
        self.models: ModelFetcher | None = None
        folder: Path | None = None
        if config.scorer and not config.scorer_model:
            from rules.scorer import DEFAULT_MODEL, load_scorer

            shipped = shipped_model or DEFAULT_MODEL
            self.models = ModelFetcher(
                data, None, load=scorer_loader or load_scorer, on_scorer=self._swap_scorer,
                shipped=shipped, in_use=None, backoff_initial=config.backoff_initial_seconds,
                backoff_max=config.backoff_max_seconds * 5)
            folder = self.models.local(self.rules.model) or shipped
        self.scorer, self.scorer_error = _load_scorer(config, folder, scorer_loader)
        if self.models is not None:
            self.models.in_use_folder = folder if self.scorer is not None else None
        self.monitor = Monitor(config, self.rules, self.builder, scorer=self.scorer)
        self._backends = backends
        self.backend_name = backends.name if backends else ""
        self.uplink: Uplink | None = None
        if channel_factory is None and self.device is not None and self.collector:
            # a machine-wide identity goes through the root-only uplink relay (agent.relay)
            channel_factory = session_channel_factory(data, self.collector)
        if self.models is not None:
            self.models.channel_factory = channel_factory
            self.rules.subscribe_model(self.models.want)
            self.models.want(self.rules.model)
        if channel_factory is not None:
            self.uplink = Uplink(
                self.spool, self.rules, channel_factory, heartbeat=self.heartbeat,
                on_config=self.apply_agent_config, batch_size=config.batch_size,
                heartbeat_seconds=config.heartbeat_seconds,
                backoff_initial=config.backoff_initial_seconds,
                backoff_max=config.backoff_max_seconds)
            self.spool.on_put = self.uplink.notify

    def heartbeat(self) -> pb.Heartbeat:
        st = self.spool.stats()
        sources = [pb.SourceHealth(name=h.name, state=h.state, restarts=h.restarts,
                                   last_event_unix_ms=int(h.last_event_unix * 1000),
                                   error=h.error if h.state != "running" else "")
                   for h in self.monitor.health.values()
                   if h.state != "stopped" or h.restarts or h.error]
        return pb.Heartbeat(agent_version=__version__, rules_version=self.rules.version,
                            spool_depth=st.depth, spool_bytes=st.bytes, drops=st.drops,
                            os_user=self.os_user, hostname=self.hostname,
                            os=platform.system().lower(), sources=sources)

    def apply_agent_config(self, msg: pb.AgentConfig) -> None:
        changes: dict[str, Any] = {}
        if msg.heartbeat_seconds:
            changes["heartbeat_seconds"] = int(msg.heartbeat_seconds)
        if msg.context_chars:
            wanted = int(msg.context_chars)
            changes["context_chars"] = min(MAX_CONTEXT_CHARS, max(10, wanted))
            if wanted > MAX_CONTEXT_CHARS:
                log.warning("collector asked for %d characters of context; the agent's bound "
                            "is %d", wanted, MAX_CONTEXT_CHARS)
        if msg.screenshot_min_severity:
            changes["screenshot_min_severity"] = min(6, int(msg.screenshot_min_severity))
        if msg.excluded_windows:
            changes["excluded_windows"] = (*self._base_config.excluded_windows,
                                           *msg.excluded_windows)
        if msg.excluded_processes:
            changes["excluded_processes"] = (*self._base_config.excluded_processes,
                                             *msg.excluded_processes)
        if msg.group:
            changes["group"] = msg.group
        self.config = self.config.replace(**changes)
        self.monitor.apply_config(self.config)
        if self.uplink is not None and msg.heartbeat_seconds:
            self.uplink.heartbeat_seconds = float(msg.heartbeat_seconds)
        log.info("collector config applied: %s", ", ".join(sorted(changes)) or "no changes")

    def _state(self, running: bool) -> dict[str, Any]:
        return {
            "pid": os.getpid(), "running": running,
            "backend": self.backend_name, "monitoring": monitored(self.config),
            "collector": self.collector,
            "connected": bool(self.uplink and self.uplink.connected),
            "last_error": self.uplink.last_error if self.uplink else "not enrolled",
            "group": self.config.group, "context_chars": self.config.context_chars,
            "scorer": self._scorer_text(),
            "scorer_worker": ("running" if self.monitor.boundary.alive
                              else "stopped" if running else "not started"),
            "sources": self.monitor.source_health() if running else {},
            "keys_excluded": self.monitor.keys_excluded if running else "",
            "screenshot_scope": self.config.screenshot_scope,
        }

    def _swap_scorer(self, scorer: Scorer, ref: Any) -> None:
        """A verified model the active bundle names is loaded: use it from now on."""
        self.scorer, self.scorer_error = scorer, ""
        self.monitor.set_scorer(scorer)

    def _scorer_text(self) -> str:
        text = (f"model {self.scorer.version}" if self.scorer is not None
                else f"off: {self.scorer_error}")
        if self.models is not None:
            if self.models.in_use and self.scorer is not None:
                text += f" ({self.models.in_use[:12]})"
            if self.models.describe():
                text += f"; update: {self.models.describe()}"
        return text

    def write_state(self, running: bool) -> None:
        """Write state.json (read by ``vigil-agent status``)."""
        state = self._state(running)
        self._last_state, self._last_state_write = state, time.monotonic()
        tmp = self.data.state_json.with_name("state.json.tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps({**state, "updated_unix": time.time()}, indent=2))
            os.replace(tmp, self.data.state_json)

    async def run(self, stop: asyncio.Event) -> None:
        backends = self._backends or select_backends(self.config)
        self.backend_name = backends.name
        if self.builder.screenshot is grab_screenshot and self.config.screenshot_scope == "window":
            # the focused window only; a backend that cannot say where it is takes none
            rect = backends.focused_rect
            self.builder.screenshot = (window_screenshot(rect) if rect is not None
                                       else lambda: b"")
        if backends.screenshot_blocked is not None:  # e.g. macOS without Screen Recording
            self.builder.screenshot = guarded_screenshot(self.builder.screenshot,
                                                         backends.screenshot_blocked)
        self.monitor.start(backends.window, backends.keys, backends.media, backends.selection,
                           backends.fields)
        log.warning(NOTICE)
        if self.uplink is None:
            log.warning("not enrolled or no collector address: captures stay in the spool "
                        "(run vigil-agent enroll)")
        self.write_state(True)
        states = asyncio.create_task(self._state_loop(stop))
        models = (asyncio.create_task(self.models.run(stop), name="models")
                  if self.models is not None else None)
        try:
            if self.uplink is not None:
                await self.uplink.run(stop)
            else:
                await stop.wait()
        finally:
            states.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await states
            if models is not None:
                models.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await models
            self.monitor.stop()
            self.write_state(False)
            self.spool.close()

    async def _state_loop(self, stop: asyncio.Event) -> None:
        # Check often, write only on a change (or every 60 s): status stays current and an
        # idle agent does not touch the disk.
        while not stop.is_set():
            if (self._state(True) != self._last_state
                    or time.monotonic() - self._last_state_write > 60):
                self.write_state(True)
            await wait_event(stop, 2.0)
