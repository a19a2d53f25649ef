"""OS-neutral polling logic shared by the Windows and macOS backends (pure, tested here)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..sources import MediaEvent, WindowInfo

__all__ = ["PollingMediaSource", "PollingWindowSource", "Volume", "diff_volumes"]


class PollingWindowSource:
    """Calls *read* every *interval* seconds; reports each new (window, title) once."""

    def __init__(self, read: Callable[[], WindowInfo | None], interval: float = 0.25) -> None:
        self.read, self.interval = read, interval

    def run(self, on_change: Callable[[WindowInfo], None], stop: threading.Event) -> None:
        last: WindowInfo | None = None
        while True:
            try:
                info = self.read()
            except OSError:
                info = None
            if info is not None and info != last:
                last = info
                on_change(info)
            if stop.wait(self.interval):
                return


@dataclass(frozen=True)
class Volume:
    mount_point: str  # "E:\\" or "/Volumes/STICK"
    label: str = ""
    fstype: str = ""
    size_bytes: int = 0


def diff_volumes(old: dict[str, Volume], new: dict[str, Volume]) -> list[MediaEvent]:
    """Mount/unmount events between two snapshots of the removable volumes."""
    events = [MediaEvent("mounted", v.mount_point, v.label, v.fstype, v.size_bytes)
              for k, v in new.items() if k not in old or old[k] != v]
    events += [MediaEvent("unmounted", v.mount_point, v.label, v.fstype, 0)
               for k, v in old.items() if k not in new or new[k] != v]
    return events


class PollingMediaSource:
    """Polls *list_volumes*; counts files written while mounted with *watch* (watchdog)."""

    def __init__(self, list_volumes: Callable[[], dict[str, Volume]], interval: float = 1.0,
                 watch: Callable[[str, Callable[[str], None]], Callable[[], None]] | None = None
                 ) -> None:
        self.list_volumes, self.interval, self.watch = list_volumes, interval, watch

    def run(self, on_event: Callable[[MediaEvent], None], stop: threading.Event) -> None:
        known = self.list_volumes()
        written: dict[str, set[str]] = {}
        stoppers: dict[str, Callable[[], None]] = {}
        while not stop.wait(self.interval):
            current = self.list_volumes()
            for ev in diff_volumes(known, current):
                mp = ev.mount_point
                if ev.event == "mounted":
                    written[mp] = set()
                    if self.watch is not None:
                        stoppers[mp] = self.watch(mp, self._writer(mp, written, on_event))
                    on_event(ev)
                else:
                    stopper = stoppers.pop(mp, None)
                    if stopper is not None:
                        stopper()
                    count = len(written.pop(mp, set()))
                    on_event(MediaEvent("unmounted", mp, ev.label, ev.fstype, 0,
                                        files_written=count))
            known = current
        for stopper in stoppers.values():
            stopper()

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
