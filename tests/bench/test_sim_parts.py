"""The simulator's pure parts: the capture mix is valid on the wire and has the intended
shape, and the profile summary attributes samples to the right thread and line."""

from __future__ import annotations

import collections
import time

from bench.sim.ingest import split
from bench.sim.mix import SEVERITY_WEIGHTS, CaptureMix
from bench.sim.profile import summarise
from collector.store.base import DeviceRow
from collector.validate import Limits, to_new_capture
from proto import vigil_pb2 as pb


def test_mix_is_accepted_by_the_collector_and_mostly_low_severity() -> None:
    now = int(time.time() * 1000)
    dev = DeviceRow("d-x", "default", "secondary", "secondary", "sim-1", "linux", "sim", 1, 0,
                    0, {}, "", "s", now, now, None)
    mix = CaptureMix(7, hostname="sim-1")
    caps = [mix.capture(now) for _ in range(5000)]
    assert len({c.id for c in caps}) == 5000
    for c in caps[:500]:
        assert not isinstance(to_new_capture(c, dev, now, Limits()), str)
    sev = collections.Counter(c.severity for c in caps)
    for s, share in SEVERITY_WEIGHTS.items():
        assert abs(sev[s] / 5000 - share) < 0.03, (s, sev[s])
    assert {c.os_user for c in caps} == {mix.os_user}  # one pupil per laptop
    first, data = mix.batch_bytes(3, now)
    msg = pb.AgentMessage.FromString(data)
    assert msg.captures.captures[0].id == first and len(msg.captures.captures) == 3


def test_split_spreads_streams_over_workers() -> None:
    assert split(1000, 2) == [500, 500]
    assert split(5, 2) == [3, 2] and sum(split(7, 3)) == 7


def test_profile_summary_per_thread() -> None:
    raw = "\n".join([
        "thread (1): MainThread;run (a.py:1);select (selectors.py:468) 50",
        "thread (1): MainThread;run (a.py:1);EpollSelector.select (selectors.py:468) 30",
        "thread (1): MainThread;run (a.py:1);handle (b.py:7) 20",
        "thread (2): writer;ingest (c.py:3);insert (c.py:9) 60",
        "thread (2): writer;ingest (c.py:3);update (c.py:12) 40",
    ])
    s = summarise(raw, duration=1.0, rate=100)["threads"]
    w = s["thread (2): writer"]
    assert w["busy_samples"] == 100 and w["busy_of_wall"] == 1.0
    assert w["top"][0] == [0.6, "insert (c.py:9)"]
    m = s["thread (1): MainThread"]
    assert m["idle_samples"] == 30 and m["busy_samples"] == 70
