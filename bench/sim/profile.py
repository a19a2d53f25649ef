"""Sample a running process with py-spy while a measurement runs, and summarise where the
time went (which functions are on the stack in what share of the samples).

    with Profile(collector_pid, out_dir / "ingest-50.txt") as prof:
        ... the burst ...
    prof.summary   # {"threads": {name: {"busy_samples", "idle_samples", "top": [...]}}}

``py-spy`` (pip) must be installed and allowed to ptrace the process (root here); when it is
not, ``summary`` says so and the measurement still runs.
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["Profile", "summarise"]


def _py_spy() -> str | None:
    exe = Path(sys.executable).with_name("py-spy")
    return str(exe) if exe.exists() else shutil.which("py-spy")


_IDLE = ("EpollSelector.select", "_worker (concurrent/futures/thread.py:81)",
         "Thread.run (threading.py", "Condition.wait", "_poll_wrapper")


def summarise(collapsed: str, top: int = 8, duration: float | None = None,
              rate: int = 200) -> dict[str, Any]:
    """Per thread, from py-spy's ``raw`` (collapsed stack) output: samples, the share that
    was waiting (event-loop select, idle pool worker), and the busiest leaf frames with their
    line (``ingest (collector/store/sqlite.py:371)``) as shares of the thread's busy samples.
    With ``duration``, ``busy_of_wall`` is the thread's busy samples / possible samples."""
    threads: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    idle: collections.Counter[str] = collections.Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread, leaf = frames[0], frames[-1]
        if any(leaf.startswith(i) or i in leaf for i in _IDLE):
            idle[thread] += int(count)
        else:
            threads[thread][leaf] += int(count)
    out: dict[str, Any] = {}
    for thread in sorted(set(threads) | set(idle), key=lambda t: -sum(threads[t].values())):
        busy = sum(threads[thread].values())
        entry: dict[str, Any] = {"busy_samples": busy, "idle_samples": idle[thread],
                                 "top": [[round(n / busy, 3), f] for f, n
                                         in threads[thread].most_common(top)] if busy else []}
        if duration:
            entry["busy_of_wall"] = round(busy / (duration * rate), 3)
        out[thread] = entry
    return {"threads": out}


class Profile:
    def __init__(self, pid: int, out: Path | None, rate: int = 200) -> None:
        self.pid, self.out, self.rate = pid, out, rate
        self.summary: dict[str, Any] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profile:
        exe = _py_spy()
        if self.out is None:
            return self
        if exe is None:
            self.summary = {"missing": "py-spy is not installed (pip install py-spy)"}
            return self
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._t0 = time.monotonic()
        self._proc = subprocess.Popen(
            [exe, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format",
             "raw", "--output", str(self.out), "--threads", "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(self, *exc: Any) -> None:
        p = self._proc
        if p is None:
            return
        p.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            _, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        if self.out is not None and self.out.exists():
            self.summary = {"file": str(self.out), **summarise(
                self.out.read_text(), duration=time.monotonic() - self._t0, rate=self.rate)}
        else:
            self.summary = {"missing": f"py-spy wrote nothing: {err.decode()[-300:]}"}
