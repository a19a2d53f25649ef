"""Detection benchmarks: the learned scorer's cost and the agent's memory with it loaded.

    python -m bench detection            # the shipped scorer, every test-split line
    python -m bench detection --quick    # 200 lines (CI: the harness must not rot)

* Scorer latency: one context at a time, one thread (the agent's worker), over the frozen
  test split's lines, which no choice was made on: unseen text, in corpus order. The first
  call after loading is reported on its own (cold), then median, mean and p99 of the rest.
* Whole detector per line: streaming phrases + context layer + scorer, as ``eval`` runs it.
* Resident memory, each in a fresh process: the agent's import floor (grpc, cryptography,
  protobuf, the rules package with the shipped library compiled), then the same plus the
  scorer loaded and one context scored. RSS is VmRSS after the work, in MiB.
* Artefact size on disk (model.onnx + vocab.txt + manifest.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

_FLOOR = """
import grpc, cryptography.x509, rules
from proto import vigil_pb2
rs = rules.load_library(rules.DEFAULT_LIBRARY).compiled()
rs.scan("warm up the matcher")
"""
_WITH = _FLOOR + """
from rules.scorer import load_scorer
load_scorer().score("is anyone else awake, i cannot sleep again")
"""
_RSS = """
for line in open("/proc/self/status"):
    if line.startswith("VmRSS"):
        print(int(line.split()[1]) / 1024)
"""


def _rss(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code + _RSS], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


def main(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench detection")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    import rules
    from rules.corpus import load_corpus
    from rules.engine import Detector
    from rules.scorer import DEFAULT_MODEL, load_scorer

    lines = [s.text for s in load_corpus(split="test")]
    if args.quick:
        lines = lines[:200]
    t0 = time.perf_counter()
    scorer = load_scorer()
    load_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    scorer.score(lines[0])
    cold_ms = (time.perf_counter() - t0) * 1000
    per: list[float] = []
    for text in lines[1:]:
        t0 = time.perf_counter()
        scorer.score(text)
        per.append((time.perf_counter() - t0) * 1000)
    det = Detector(rules.load_library(rules.DEFAULT_LIBRARY).compiled(), scorer)
    whole: list[float] = []
    for text in lines:
        t0 = time.perf_counter()
        det.detect(text)
        whole.append((time.perf_counter() - t0) * 1000)
    files = ("model.onnx", "vocab.txt", "manifest.json")
    size = sum((DEFAULT_MODEL / f).stat().st_size for f in files)
    man = json.loads((DEFAULT_MODEL / "manifest.json").read_text())
    return {
        "model": scorer.version, "lines": len(lines), "load_ms": round(load_ms, 1),
        "cold_ms": round(cold_ms, 2),
        "scorer_ms": {"median": round(statistics.median(per), 3),
                      "mean": round(statistics.fmean(per), 3), "p99": round(_pct(per, .99), 3)},
        "detector_ms": {"median": round(statistics.median(whole), 3),
                        "mean": round(statistics.fmean(whole), 3),
                        "p99": round(_pct(whole, .99), 3)},
        "rss_mib": {"import_floor": _rss(_FLOOR), "with_scorer": _rss(_WITH)},
        "artefact_mib": round(size / 2**20, 2),
        "figures": man.get("figures", {}),
    }


def markdown(r: dict[str, Any]) -> str:
    s, d, m = r["scorer_ms"], r["detector_ms"], r["rss_mib"]
    out = [
        "## Detection (learned scorer)", "",
        f"Model `{r['model']}`, {r['lines']} unseen lines (the frozen test split), one thread.",
        "",
        "| measure | median | mean | p99 | target |",
        "|---|---:|---:|---:|---:|",
        f"| scorer, one context | {s['median']} ms | {s['mean']} ms | {s['p99']} ms "
        "| ≤ 15 ms median |",
        f"| whole detector (phrases + context + scorer) | {d['median']} ms | {d['mean']} ms | "
        f"{d['p99']} ms | - |",
        "", "| measure | result | target |", "|---|---:|---:|",
        f"| load the scorer | {r['load_ms']} ms | - |",
        f"| first context after load (cold) | {r['cold_ms']} ms | - |",
        "| RSS, agent import floor (grpc, cryptography, rules + library) | "
        f"{m['import_floor']} MiB | - |",
        f"| RSS, the same with the scorer loaded | {m['with_scorer']} MiB | ≤ 130 MB |",
        f"| artefact on disk | {r['artefact_mib']} MiB | ≤ 30 MB |",
    ]
    test = r.get("figures", {}).get("test")
    if test:
        out += ["", "Quality on the frozen test split (recorded in the manifest by "
                "`vigil-rules eval --split test --record`; all layers):", "",
                "| recall | recall sev ≥ 4 | false positives | severity within one |",
                "|---:|---:|---:|---:|",
                f"| {100 * test['recall']:.1f} % | {100 * test['recall_sev4']:.1f} % | "
                f"{100 * test['false_positive']:.1f} % | {100 * test['severity_fit']:.1f} % |"]
    return "\n".join(out)
