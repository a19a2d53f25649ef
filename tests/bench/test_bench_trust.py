"""The trust benchmark harness runs in reduced form and produces complete, consistent results.

Nothing here asserts on speed: only that every measurement ran for real on both backends
(every capture sent through gRPC was acknowledged AND is in the store, one and two collector
processes, every agent's RulesAck stored, the cold page requests really had their files
dropped from the page cache) and that the markdown block renders every part, with the
targets and the sizing table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.postgres import PgUnavailable, find_bin_dir

ROOT = Path(__file__).resolve().parents[2]


def _have_postgres() -> bool:
    try:
        find_bin_dir()
    except PgUnavailable:
        return False
    return True


@pytest.mark.skipif(not _have_postgres(), reason="needs PostgreSQL server binaries")
def test_quick_trust_run_is_complete_and_consistent(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-doc", "--results-dir", str(tmp_path),
         "trust"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    r = json.loads((tmp_path / "trust.json").read_text())
    assert r["quick"] is True and r["command"].startswith("python -m bench trust")
    assert r["postgresql"]["settings"]["fsync"] == "on"
    assert len(r["load_average_start"]) == 3

    # a: the store alone, both backends, with and without screenshots, beside the ceilings
    cases = {(c["backend"], bool(c["screenshot_bytes"])): c for c in r["ingest"]["cases"]}
    assert set(cases) == {(b, s) for b in ("sqlite", "postgresql") for s in (False, True)}
    for (_, shots), c in cases.items():
        run = c["runs"][0]
        assert run["captures"] > 0 and c["median_per_s"] > 0
        if shots:  # about 7 % carry one, and every one became a file
            assert 0.03 < run["screenshots"] / run["captures"] < 0.12
            assert run["screenshot_files"] == run["screenshots"]
    for k in ("raw_sqlite", "raw_postgresql_copy", "raw_postgresql_executemany"):
        assert r["ingest"][k]["median_per_s"] > 0
    assert r["ingest"]["raw_screenshots"]["files_per_s"] > 0

    # b: through gRPC; every acknowledged capture is in the store, nothing more
    by = {c["label"]: c for c in r["grpc"]["cases"]}
    assert set(by) == {"sqlite-1", "postgresql-1", "postgresql-2"}
    for c in by.values():
        sent = sum(x["captures"] for x in c["runs"])
        assert c["acked"] == sent == c["stored"] > 0, c["label"]
        assert c["streams"] == 50 and c["collectors_cpu_percent"] > 0
    assert by["postgresql-2"]["processes"] == 2 and len(by["postgresql-2"]["pids"]) == 2
    assert by["postgresql-1"]["postgresql_cpu_us_per_capture"] > 0
    assert r["grpc"]["scaling_ratio"] > 0

    # c: fan-out, clock stopped when every ack is stored
    [st] = r["fanout"]["stages"]
    [fan] = st["fanout"]["runs"]
    assert fan["acked"] == st["n"] == 200
    assert 0 < fan["all_acked_s"] <= fan["all_stored_s"]
    assert st["idle"]["rss_mib"] > r["fanout"]["rss_base_mib"] > 0

    # d: pages on both backends, warm and cold; the cold ones really were cold
    for be in ("sqlite", "postgresql"):
        pages = r["pages"][be]
        assert {"queue", "queue_all", "deep", "pupil_filter"} <= set(pages)
        for k in ("queue", "deep"):
            assert pages[k]["warm"]["median_ms"] > 0 and pages[k]["cold"]["n"] == 2
        ev = pages["cold_evidence"]
        if ev["max_resident_after_drop"] is not None:  # fincore is installed
            assert ev["max_resident_after_drop"] < 0.05 < ev["first"]["resident_before"]

    # e: the markdown has every part, the targets and the sizing arithmetic
    from bench import trust

    block = trust.markdown(r)
    for heading in ("#### Targets", "#### The store alone", "#### Through gRPC",
                    "#### Rule fan-out", "#### Console pages", "#### Sizing"):
        assert heading in block, heading
    assert "Scaling ratio" in block and "collector processes (= cores) for 100,000" in block


def test_every_part_can_be_skipped(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-doc", "--results-dir", str(tmp_path),
         "trust", "--parts", "fanout"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    r = json.loads((tmp_path / "trust.json").read_text())
    assert "fanout" in r and not {"ingest", "grpc", "pages", "postgresql"} & set(r)
    from bench import trust

    assert "#### Rule fan-out" in trust.markdown(r)
