"""Removable media on Linux: the mount table, watched with POLLPRI.

``/proc/self/mountinfo`` signals POLLPRI|POLLERR whenever the mount table changes, so the
source sleeps in ``poll()`` and diffs the table on each wake-up. A mount counts as removable
when its mount point is under one of the configured media roots (default ``/media``,
``/run/media``, ``/mnt``) or its source is a block device whose disk has
``/sys/block/<disk>/removable`` = 1. After a mount, a watchdog observer on the mount point
counts the files written (and reports each file name so media rules can match it); the count
goes out with the unmount event.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import MediaEvent, stop_fd

__all__ = ["LinuxMediaSource", "Mount", "is_removable", "parse_mountinfo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mount:
    mount_id: str
    mount_point: str
    fstype: str
    source: str


def _unescape(s: str) -> str:
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace(
        "\\134", "\\")


def parse_mountinfo(text: str) -> dict[str, Mount]:
    """Mount point -> Mount, from the text of /proc/*/mountinfo (see proc(5))."""
    mounts: dict[str, Mount] = {}
    for line in text.splitlines():
        parts = line.split()
        if "-" not in parts or len(parts) < 7:
            continue
        sep = parts.index("-")
        fstype = parts[sep + 1] if len(parts) > sep + 1 else ""
        source = parts[sep + 2] if len(parts) > sep + 2 else ""
        mp = _unescape(parts[4])
        mounts[mp] = Mount(parts[0], mp, fstype, _unescape(source))
    return mounts


def _disk_removable(source: str, sys_block: Path) -> bool:
    if not source.startswith("/dev/"):
        return False
    try:
        name = Path(os.path.realpath(source)).name
    except OSError:
        return False
    for disk in sys_block.glob("*"):
        if name == disk.name or (name.startswith(disk.name) and (disk / name).exists()):
            try:
                return (disk / "removable").read_text().strip() == "1"
            except OSError:
                return False
    return False


def is_removable(m: Mount, roots: tuple[str, ...], sys_block: Path = Path("/sys/block")) -> bool:
    mp = m.mount_point.rstrip("/") or "/"
    for root in roots:
        r = root.rstrip("/")
        if r and mp.startswith(r + "/"):
            return True
    return _disk_removable(m.source, sys_block)


def _label(m: Mount, by_label: Path = Path("/dev/disk/by-label")) -> str:
    if m.source.startswith("/dev/"):
        try:
            dev = os.path.realpath(m.source)
            for link in by_label.iterdir():
                if os.path.realpath(link) == dev:
                    return _unescape(link.name.replace("\\x20", " "))
        except OSError:
            pass
    return Path(m.mount_point).name


class _Writes:
    """Counts files written under one mount point (watchdog handler)."""

    def __init__(self, mount_point: str, on_file: Callable[[str], None]) -> None:
        self.mount_point = mount_point
        self.paths: set[str] = set()
        self.on_file = on_file
        self.lock = threading.Lock()

    def dispatch(self, event: Any) -> None:
        if event.is_directory or event.event_type not in ("created", "closed", "moved"):
            return
        path = event.dest_path if event.event_type == "moved" else event.src_path
        path = os.fsdecode(path)
        with self.lock:
            if path in self.paths:
                return
            self.paths.add(path)
        try:
            self.on_file(path)
        except Exception:
            # one bad file event must not end the watch of the whole volume (and with it
            # every later file written to it); the error is logged with its traceback
            log.exception("removable media: could not report a file written to %s",
                          self.mount_point)


class LinuxMediaSource:
    def __init__(self, roots: tuple[str, ...] = ("/media", "/run/media", "/mnt"),
                 mountinfo: Path = Path("/proc/self/mountinfo"),
                 sys_block: Path = Path("/sys/block"), watch_files: bool = True) -> None:
        self.roots = roots
        self.mountinfo = mountinfo
        self.sys_block = sys_block
        self.watch_files = watch_files
        #: Set once the mount table has been read at start (mounts before that are not new).
        self.ready = threading.Event()

    def _read(self, fh: Any) -> dict[str, Mount]:
        fh.seek(0)
        return {mp: m for mp, m in parse_mountinfo(fh.read()).items()
                if is_removable(m, self.roots, self.sys_block)}

    def run(self, on_event: Callable[[MediaEvent], None], stop: threading.Event) -> None:
        watchers: dict[str, tuple[Any, _Writes]] = {}
        # surrogateescape: a stick labelled in a legacy encoding is mounted at a non-UTF-8
        # path; it must be reported, not end the media watch (captures clean the text).
        with open(self.mountinfo, encoding="utf-8", errors="surrogateescape") as fh:
            poller = select.poll()
            poller.register(fh, select.POLLPRI | select.POLLERR)
            sfd = stop_fd(stop)
            if sfd is not None:
                poller.register(sfd, select.POLLIN)
            known = self._read(fh)  # already mounted at start: not reported again
            for mp in known:
                watchers[mp] = self._watch(mp, on_event)
            self.ready.set()
            while not stop.is_set():
                ready = poller.poll(500 if sfd is None else 60_000)
                if stop.is_set():
                    break
                if not any(fd != sfd for fd, _ in ready):
                    continue
                current = self._read(fh)
                for mp, m in current.items():
                    if mp in known and known[mp].mount_id == m.mount_id:
                        continue
                    size = 0
                    with contextlib.suppress(OSError):
                        size = shutil.disk_usage(mp).total
                    # watch first, so files written right after the mount are counted
                    watchers[mp] = self._watch(mp, on_event)
                    on_event(MediaEvent("mounted", mp, _label(m), m.fstype, size,
                                        device=m.source))
                for mp, m in known.items():
                    if mp in current and current[mp].mount_id == m.mount_id:
                        continue
                    observer, writes = watchers.pop(mp, (None, None))
                    count = len(writes.paths) if writes is not None else 0
                    if observer is not None:
                        observer.stop()
                        observer.join(timeout=5)
                    on_event(MediaEvent("unmounted", mp, _label(m), m.fstype, 0,
                                        files_written=count, device=m.source))
                known = current
        for observer, _ in watchers.values():
            if observer is not None:
                observer.stop()
                observer.join(timeout=5)

    def _watch(self, mp: str, on_event: Callable[[MediaEvent], None]) -> tuple[Any, _Writes]:
        writes = _Writes(mp, lambda path: on_event(MediaEvent(
            "file_written", mp, file_name=os.path.basename(path))))
        if not self.watch_files:
            return None, writes
        try:
            from watchdog.observers import Observer

            observer = Observer()
            observer.schedule(writes, mp, recursive=True)  # type: ignore[arg-type]
            observer.daemon = True
            observer.start()
            return observer, writes
        except Exception as exc:
            log.warning("cannot watch %s for written files: %s", mp, exc)
            return None, writes
