"""Capture building: fields, merged repeats, screenshot policy (never for illegal categories)."""

from __future__ import annotations

from pathlib import Path

import rules
from agent.capture import CaptureBuilder, Where
from agent.spool import Spool
from proto import vigil_pb2 as pb


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def builder(tmp_path: Path, library: Path) -> tuple[CaptureBuilder, Spool, Clock, list[int]]:
    spool = Spool(tmp_path / "s.db")
    clock = Clock()
    shots: list[int] = []

    def shot() -> bytes:
        shots.append(1)
        return b"\x89PNG fake"

    b = CaptureBuilder(spool, os_user="pupil1", hostname="laptop-7", clock=clock,
                       rules_version=lambda: 3, screenshot=shot, merge_seconds=60,
                       screenshot_min_severity=4)
    return b, spool, clock, shots


def test_capture_fields_and_screenshot(tmp_path: Path, library: Path) -> None:
    b, spool, _, shots = builder(tmp_path, library)
    rs = rules.load_library(library)
    [hit] = rs.matcher("keys").scan("i want to cut myself today")
    cap = b.hit(hit, "keys", Where("Notes - Word", "winword"))
    assert cap is not None
    [stored] = spool.all()
    assert stored.id == cap.id and len(stored.id) == 36 and stored.id[14] == "7"  # uuid7
    assert (stored.os_user, stored.hostname, stored.rules_version) == ("pupil1", "laptop-7", 3)
    assert stored.source == pb.SOURCE_KEYS and stored.rule_id == "self_harm.test"
    assert stored.category == "self_harm" and stored.severity == 4
    assert stored.match == "cut myself" and "cut myself" in stored.context
    assert stored.window_title == "Notes - Word" and stored.process == "winword"
    assert stored.match_kind == pb.MATCH_KIND_EXACT and stored.count == 1
    assert stored.screenshot_png == b"\x89PNG fake" and shots == [1]


def test_no_screenshot_below_threshold_or_for_illegal(tmp_path: Path, library: Path) -> None:
    b, spool, _, shots = builder(tmp_path, library)
    rs = rules.load_library(library)
    for text in ("nobody likes you", "forbidden test phrase"):
        for hit in rs.matcher("keys").scan(text):
            b.hit(hit, "keys", Where("t", "p"))
    caps = {c.rule_id: c for c in spool.all()}
    assert set(caps) == {"bullying.test", "csam.test"}
    assert caps["csam.test"].severity == 5 and caps["csam.test"].screenshot_png == b""
    assert caps["bullying.test"].screenshot_png == b""
    assert shots == []


def test_repeats_in_same_window_merge_then_split(tmp_path: Path, library: Path) -> None:
    b, spool, clock, _ = builder(tmp_path, library)
    [hit] = rules.load_library(library).matcher("window").scan("unblocked games 66")
    assert b.hit(hit, "window", Where("unblocked games 66", "chrome")) is not None
    clock.t += 10
    assert b.hit(hit, "window", Where("unblocked games 66", "chrome")) is None
    clock.t += 5
    b.hit(hit, "window", Where("unblocked games 66", "firefox"))  # other window: new capture
    clock.t += 120
    b.hit(hit, "window", Where("unblocked games 66", "chrome"))  # past the interval: new
    caps = spool.all()
    assert [c.count for c in caps] == [2, 1, 1]
    assert caps[0].last_time_unix_ms - caps[0].time_unix_ms == 10_000
