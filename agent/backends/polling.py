"""OS-neutral logic shared by the Windows and macOS backends (pure, tested on Linux).

* :class:`PollingWindowSource`: reads the focused window on a wake-up (an OS event) or every
  *interval* seconds, and reports each new (window, title) once. Every exception from the OS
  layer is caught and reported: a ctypes ``ArgumentError`` or a pyobjc error must not end the
  window thread quietly. A read that keeps failing raises, so the monitor's supervisor
  restarts the source and ``status`` shows why.
* :class:`PollingMediaSource`: diffs snapshots of the removable volumes (on an OS device
  event or every *interval* seconds), watches each volume for files written, including the
  volumes already present at start, and handles a different volume appearing at the same
  mount point (E:\\ swapped for another stick between two polls).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..sources import MediaEvent, WindowInfo

__all__ = ["MAX_READ_FAILURES", "PollingMediaSource", "PollingWindowSource", "Volume",
           "diff_volumes", "watchdog_watch"]

log = logging.getLogger(__name__)

#: Consecutive failed reads after which a source gives up and lets the supervisor restart it.
MAX_READ_FAILURES = 20


class _Failures:
    """Counts consecutive failures; logs each new kind once; raises past the limit."""

    def __init__(self, what: str, limit: int) -> None:
        self.what, self.limit, self.count, self.last = what, limit, 0, ""

    def ok(self) -> None:
        self.count, self.last = 0, ""

    def failed(self, exc: BaseException) -> None:
        self.count += 1
        text = f"{type(exc).__name__}: {exc}"
        if text != self.last:
            log.warning("%s failed (%d in a row): %s", self.what, self.count, text)
            self.last = text
        if self.count >= self.limit:
            raise RuntimeError(f"{self.what} failed {self.count} times in a row: {text}") from exc


class PollingWindowSource:
    """Calls *read* when *wake* is set, or every *interval* seconds; reports each new
    (window, title) once."""

    def __init__(self, read: Callable[[], WindowInfo | None], interval: float = 0.25,
                 wake: threading.Event | None = None,
                 max_failures: int = MAX_READ_FAILURES) -> None:
        self.read, self.interval, self.wake = read, interval, wake
        self.max_failures = max_failures

    def run(self, on_change: Callable[[WindowInfo], None], stop: threading.Event) -> None:
        last: WindowInfo | None = None
        failures = _Failures("reading the focused window", self.max_failures)
        while not stop.is_set():
            if self.wake is not None:
                self.wake.clear()
            try:
                info = self.read()
            except Exception as exc:  # ArgumentError, pyobjc errors, OSError: all reported
                failures.failed(exc)
                info = None
            else:
                failures.ok()
            if info is not None and info != last:
                last = info
                on_change(info)
            if self._sleep(stop):
                return

    def _sleep(self, stop: threading.Event) -> bool:
        """Wait for the next read; True when stopping."""
        if self.wake is None:
            return stop.wait(self.interval)
        self.wake.wait(self.interval)
        return stop.is_set()


@dataclass(frozen=True)
class Volume:
    mount_point: str  # "E:\\" or "/Volumes/STICK"
    label: str = ""
    fstype: str = ""
    size_bytes: int = 0
    #: What makes this the same volume (a serial number, a volume UUID); "" when unknown.
    volume_id: str = ""


def diff_volumes(old: dict[str, Volume], new: dict[str, Volume]) -> list[MediaEvent]:
    """Unmount, then mount events between two snapshots of the removable volumes.

    Unmounts come first: a volume replaced at the same mount point (same drive letter, another
    stick) is unmounted before the new one is mounted, so the new one's watcher survives."""
    events = [MediaEvent("unmounted", v.mount_point, v.label, v.fstype, 0)
              for k, v in old.items() if k not in new or new[k] != v]
    events += [MediaEvent("mounted", v.mount_point, v.label, v.fstype, v.size_bytes)
               for k, v in new.items() if k not in old or old[k] != v]
    return events


Watch = Callable[[str, Callable[[str], None]], Callable[[], None]]


class PollingMediaSource:
    """Diffs *list_volumes* on each *wake* (an OS device event) or every *interval* seconds;
    counts files written while mounted with *watch* (watchdog).

    Volumes present at start are watched but not reported as new mounts (as on Linux)."""

    def __init__(self, list_volumes: Callable[[], dict[str, Volume]], interval: float = 1.0,
                 watch: Watch | None = None, wake: threading.Event | None = None,
                 max_failures: int = MAX_READ_FAILURES) -> None:
        self.list_volumes, self.interval, self.watch = list_volumes, interval, watch
        self.wake, self.max_failures = wake, max_failures
        self._stoppers: dict[str, Callable[[], None]] = {}
        self._lock = threading.Lock()

    def release(self, mount_point: str) -> bool:
        """Stop watching *mount_point* now (the OS asks to eject it: an open directory handle
        would block "Safely Remove"). True when a watcher was stopped."""
        with self._lock:
            stopper = self._stoppers.pop(mount_point, None)
        if stopper is not None:
            stopper()
        return stopper is not None

    def run(self, on_event: Callable[[MediaEvent], None], stop: threading.Event) -> None:
        failures = _Failures("listing removable volumes", self.max_failures)
        known = self._list(failures)
        written: dict[str, set[str]] = {}
        for mp in known:
            self._start_watch(mp, written, on_event)
        try:
            while not self._sleep(stop):
                current = self._list(failures, fallback=known)
                for ev in diff_volumes(known, current):
                    mp = ev.mount_point
                    if ev.event == "mounted":
                        self._start_watch(mp, written, on_event)
                        on_event(ev)
                    else:
                        self.release(mp)
                        count = len(written.pop(mp, set()))
                        on_event(MediaEvent("unmounted", mp, ev.label, ev.fstype, 0,
                                            files_written=count))
                known = current
        finally:
            for mp in list(self._stoppers):
                self.release(mp)

    def _list(self, failures: _Failures,
              fallback: dict[str, Volume] | None = None) -> dict[str, Volume]:
        try:
            vols = self.list_volumes()
        except Exception as exc:
            failures.failed(exc)
            return dict(fallback or {})
        failures.ok()
        return vols

    def _sleep(self, stop: threading.Event) -> bool:
        if self.wake is None:
            return stop.wait(self.interval)
        self.wake.wait(self.interval)
        self.wake.clear()
        return stop.is_set()

    def _start_watch(self, mp: str, written: dict[str, set[str]],
                     on_event: Callable[[MediaEvent], None]) -> None:
        written[mp] = set()
        if self.watch is None:
            return
        try:
            stopper = self.watch(mp, self._writer(mp, written, on_event))
        except Exception as exc:  # an unreadable volume: report mounts, count nothing
            log.warning("cannot watch %s for files written: %s", mp, exc)
            return
        with self._lock:
            self._stoppers[mp] = stopper

    @staticmethod
    def _writer(mp: str, written: dict[str, set[str]],
                on_event: Callable[[MediaEvent], None]) -> Callable[[str], None]:
        def on_file(path: str) -> None:
            files = written.setdefault(mp, set())
            if path not in files:
                files.add(path)
                on_event(MediaEvent("file_written", mp,
                                    file_name=path.replace("\\", "/").rsplit("/", 1)[-1]))
        return on_file


def watchdog_watch(mp: str, on_file: Callable[[str], None]) -> Callable[[], None]:
    """Start a watchdog observer on *mp*; return a function that stops it."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.is_directory or event.event_type not in ("created", "closed", "moved"):
                return
            path = event.dest_path if event.event_type == "moved" else event.src_path
            on_file(str(path))

    observer = Observer()
    observer.schedule(Handler(), mp, recursive=True)
    observer.daemon = True
    observer.start()

    def stop() -> None:
        observer.stop()
        observer.join(timeout=5)

    return stop
