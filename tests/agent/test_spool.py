"""The spool keeps captures durably, bounded, and never drops severity 4-5 or drops silently."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.spool import SCHEMA_VERSION, Spool, read_stats
from proto import vigil_pb2 as pb


def cap(i: int, severity: int, pad: int = 400) -> pb.Capture:
    return pb.Capture(id=f"c{i:04d}", severity=severity, rule_id="r", count=1,
                      context="x" * pad)


def test_survives_reopen_and_is_versioned_wal(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    s = Spool(path)
    s.put(cap(1, 3))
    s.count_drop("rejected:bad")
    s.close()
    s2 = Spool(path)
    assert [c.id for c in s2.all()] == ["c0001"]
    assert s2.stats().drops == {"rejected:bad": 1}
    s2.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION


def test_deleted_only_on_ack_and_inflight_returns_after_restart(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db")
    for i in range(3):
        s.put(cap(i, 2))
    batch = s.next_batch(10)
    assert len(batch) == 3
    assert s.next_batch(10) == []  # in flight, not sent twice on one stream
    assert s.ack(["c0000"]) == 1
    s.close()
    s = Spool(tmp_path / "s.db")  # a new process: unacked ones are sent again
    assert sorted(c.id for c in s.next_batch(10)) == ["c0001", "c0002"]


def test_full_spool_drops_lowest_severity_first_and_counts(tmp_path: Path) -> None:
    one = len(cap(0, 1).SerializeToString())
    s = Spool(tmp_path / "s.db", max_bytes=one * 4 + 10)
    s.put(cap(1, 1))
    s.put(cap(2, 3))
    s.put(cap(3, 2))
    s.put(cap(4, 5))
    assert s.put(cap(5, 4))  # no room: the severity-1 capture goes
    ids = {c.id for c in s.all()}
    assert "c0001" not in ids and {"c0002", "c0003", "c0004", "c0005"} <= ids
    assert not s.put(cap(6, 1))  # a new lowest-severity capture is itself the one dropped
    assert s.stats().drops == {"spool_full": 2}


def test_severity_4_and_5_are_never_dropped(tmp_path: Path) -> None:
    one = len(cap(0, 4).SerializeToString())
    s = Spool(tmp_path / "s.db", max_bytes=one * 2)
    for i in range(5):
        assert s.put(cap(i, 4 + i % 2))
    assert len(s.all()) == 5
    assert s.stats().drops == {"over_bound": 3}
    assert not s.put(cap(9, 3))  # lower severity cannot displace them
    assert len(s.all()) == 5
    assert read_stats(tmp_path / "s.db").drops == {"over_bound": 3, "spool_full": 1}


def test_reject_drops_and_counts_by_reason(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db")
    s.put(cap(1, 2))
    s.reject("c0001", "bad_rule")
    assert s.all() == []
    assert s.stats().drops == {"rejected:bad_rule": 1}


def test_bump_merges_only_unsent(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db")
    s.put(cap(1, 2))
    assert s.bump("c0001", 1234)
    assert s.all()[0].count == 2 and s.all()[0].last_time_unix_ms == 1234
    s.next_batch(10)
    assert not s.bump("c0001", 2000)  # already on the wire: a new capture is needed
