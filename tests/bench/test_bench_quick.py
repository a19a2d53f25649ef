"""The scale benchmark harness runs in reduced form and produces well-formed results.

Nothing here asserts on speed: only that every measurement ran for real (every capture sent
was acknowledged and stored, every agent acknowledged the published rules, latencies exist
and are positive), that the markdown block renders, and that the plots are real PNGs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.x11 import have_x_tools

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def test_quick_scale_run_is_complete_and_consistent(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-doc", "--results-dir", str(tmp_path),
         "scale", "--parts", "fleet,ingest,growth,others", "--plots-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    r = json.loads((tmp_path / "scale.json").read_text())
    assert r["quick"] is True and r["machine"]["cores"] >= 1
    assert r["command"].startswith("python -m bench scale")

    # enrolment over the wire and minted identities add up to the fleet
    assert r["enrolment"]["enrolled"] == r["enrolment"]["n"] > 0
    assert r["enrolment"]["errors"] == 0
    [st] = r["fleet"]["stages"]
    assert st["n"] == 100 == r["enrolment"]["enrolled"] + r["mint"]["n"]
    assert st["connect"]["connected"] == 100 and st["connect"]["failed"] == 0
    assert st["idle"]["alive"] == 100 and st["idle"]["rss_mib"] > 0
    load = st["load"]
    assert load["sent"] > 0 and load["acked"] == load["sent"]
    assert load["ack_latency"]["n"] == load["sent"]
    assert 0 < load["ack_latency"]["p50_ms"] <= load["ack_latency"]["p99_ms"]
    [fan] = st["fanout"]["runs"]
    assert fan["acked"] == 100 and fan["version"] >= 2
    assert 0 < fan["first_bundle_s"] <= fan["all_acked_s"] <= fan["all_stored_s"]
    assert st["errors"] == []

    for g in r["ingest"]["by_streams"]:
        for run in g["runs"]:
            assert run["acked"] == run["captures"] == g["streams"] * (run["captures"]
                                                                       // g["streams"])
            assert run["captures_per_s"] > 0 and run["batch_ack_latency"]["p50_ms"] > 0
        assert g["raw_median_per_s"] > 0 and g["ratio"] > 0
    assert [g["streams"] for g in r["ingest"]["by_streams"]] == [10, 100]

    [gp] = r["growth"]
    run = gp["ingest"]["runs"][0]
    assert run["acked"] == run["captures"] > 0
    assert gp["captures_after"] == gp["fill"]["captures"] + run["captures"]
    assert gp["pages"]["queue"]["median_ms"] > 0

    # the markdown block renders every part; the plots are real PNG files
    from bench import scale

    block = scale.markdown(r)
    assert block.startswith("## Scale")
    assert "stored captures/s, 100 concurrent streams" in block
    assert "| 100 |" in block and "#### Growth" in block
    for name in ("bench-latency.png", "bench-ingest.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG


@pytest.mark.x11
@pytest.mark.skipif(not have_x_tools(), reason="needs Xvfb, openbox, xterm, xdotool")
def test_end_to_end_typed_phrases_reach_the_store() -> None:
    from bench.sim.endtoend import measure_end_to_end

    r = measure_end_to_end(samples=3)
    assert r["stored"] == 3 and r["lost"] == 0
    assert 0 < r["lower_ms"]["p50_ms"] <= r["upper_ms"]["p50_ms"]
    assert r["key_to_capture_ms"]["max_ms"] < r["upper_ms"]["max_ms"]
