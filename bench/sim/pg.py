"""A PostgreSQL server for benchmarks, the OS page cache, and CPU of process trees.

:class:`BenchPg` is tests.support.postgres.PgServer (a real server in a temp dir, on a free
port, as the ``postgres`` user) with durability ON: ``fsync``, ``synchronous_commit`` and
``full_page_writes`` at PostgreSQL's defaults, so an acknowledged capture is on disk as in a
deployment (the test server turns all three off). ``shared_buffers`` is 256 MB, a modest
production-like size for a small server (PostgreSQL's default is 128 MB).

"Cold" is made, not assumed: :meth:`BenchPg.restart_cold` stops the server (fast shutdown:
shared buffers gone), asks the kernel to drop every file of the cluster from the page cache
(``posix_fadvise(POSIX_FADV_DONTNEED)``) and starts it again. :func:`drop_cache` does the
same for any files (the SQLite database, WAL and shared-memory files). :func:`resident`
says how much of a set of files is still in the page cache (``fincore``), so the report can
show that the drop worked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import psutil

from tests.support.postgres import PgServer

__all__ = ["BenchPg", "TreeMeter", "drop_cache", "resident", "tree_cpu_s"]

DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
           "shared_buffers": "256MB", "max_wal_size": "2GB", "checkpoint_timeout": "15min"}


class BenchPg(PgServer):
    """PgServer with durability on (see the module docstring)."""

    @staticmethod
    def _spawn(prefix: list[str], bin_dir: Path, root: Path, port: int
               ) -> subprocess.Popen[bytes]:
        settings = {
            "listen_addresses": "127.0.0.1", "port": str(port),
            "unix_socket_directories": str(root), "max_connections": "200",
            "dynamic_shared_memory_type": "mmap", "logging_collector": "off",
            "log_min_messages": "warning", "max_locks_per_transaction": "256", **DURABLE,
        }
        args = [*prefix, str(bin_dir / "postgres"), "-D", str(root / "data")]
        for k, v in settings.items():
            args += ["-c", f"{k}={v}"]
        log = open(root / "server.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=root)
        finally:
            log.close()

    @property
    def settings(self) -> dict[str, str]:
        return dict(DURABLE)

    def files(self) -> list[Path]:
        return [p for p in (self.root / "data").rglob("*") if p.is_file()]

    def restart_cold(self) -> dict[str, float]:
        """Fast shutdown, drop the cluster's files from the page cache, start again on the
        same port. Returns the share of the cluster's bytes resident before and after."""
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            self.proc.wait(timeout=60)
        before = resident(self.files())
        drop_cache(self.files())
        after = resident(self.files())
        self.proc = self._spawn(self._prefix, self.bin_dir, self.root, self.port)
        self._wait_ready()
        return {"resident_before": before, "resident_after_drop": after}

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            super().stop()
        shutil.rmtree(self.root, ignore_errors=True)


def drop_cache(paths: Iterable[Path]) -> int:
    """``posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)`` on every file (after ``fdatasync``,
    so dirty pages can go too); returns how many files were advised."""
    n = 0
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            with contextlib.suppress(OSError):
                os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            n += 1
        finally:
            os.close(fd)
    return n


def resident(paths: Iterable[Path]) -> float | None:
    """Share (0..1) of these files' bytes in the page cache, by util-linux ``fincore``
    (None when it is not installed)."""
    exe = shutil.which("fincore")
    files = [str(p) for p in paths if p.exists() and p.stat().st_size > 0]
    if exe is None or not files:
        return None
    total = cached = 0
    for k in range(0, len(files), 200):
        r = subprocess.run([exe, "--bytes", "--noheadings", "--raw", "-o", "RES,SIZE",
                            *files[k:k + 200]], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                cached += int(parts[0])
                total += int(parts[1])
    return cached / total if total else None


def tree_cpu_s(pids: Iterable[int]) -> float:
    """User + system CPU seconds of these processes and all their descendants, including
    children that have already exited and been waited for (PostgreSQL backends)."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
    return total


def tree_rss_mib(pids: Iterable[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += psutil.Process(pid).memory_info().rss
    return total / 2**20


class TreeMeter:
    """``with TreeMeter({"collectors": [pid, ...], "postgresql": [pid]}) as m: ...`` then
    ``m.result``: CPU % of one core per group over the window."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.result: dict[str, float] = {}

    def __enter__(self) -> TreeMeter:
        import time

        self._t0 = time.monotonic()
        self._c0 = {k: tree_cpu_s(v) for k, v in self.groups.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        import time

        wall = time.monotonic() - self._t0
        self.result = {"seconds": wall}
        for k, v in self.groups.items():
            self.result[f"{k}_cpu_s"] = tree_cpu_s(v) - self._c0[k]
            self.result[f"{k}_cpu_percent"] = self.result[f"{k}_cpu_s"] / wall * 100
