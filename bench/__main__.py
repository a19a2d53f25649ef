"""Run benchmarks and record them in docs/benchmarks.md.

    python -m bench                 # every area (same as: python -m bench all)
    python -m bench rules agent     # some areas
    python -m bench --quick rules   # reduced sizes (what CI runs, so the harness cannot rot)

Each area is a module ``bench/<area>.py`` with ``main(argv) -> dict`` and
``markdown(results) -> str``. Results go to ``bench/results/<area>.json`` (with the machine,
date, command and wall time); the markdown replaces the area's block in docs/benchmarks.md.
A ``--quick`` run writes ``bench/results/quick/<area>.json`` and never touches the recorded
numbers or the doc. Options the dispatcher does not know are passed on to every area.
An area that fails is reported and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import re
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = Path(__file__).resolve().parent / "results"
AREAS = ["rules", "detection", "agent", "collector", "console", "scale", "trust"]


def machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def splice(doc: str, area: str, block: str) -> str:
    begin, end = f"<!-- BEGIN {area} -->", f"<!-- END {area} -->"
    new = f"{begin}\n{block.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if pattern.search(doc):
        return pattern.sub(lambda _m: new, doc)
    return doc.rstrip() + "\n\n" + new + "\n"


def stamped(block: str, results: dict[str, object]) -> str:
    """*block* with the machine, date and command it was measured with, unless it has them."""
    m = results.get("machine")
    if not isinstance(m, dict) or "Machine:" in block:
        return block
    line = (f"_Measured {m.get('date')} on {m.get('cpu')}, {m.get('cores')} cores, "
            f"Python {m.get('python')}, {m.get('os')}. "
            f"Command: `{results.get('command', 'python -m bench')}`._")
    return f"{block.rstrip()}\n\n{line}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("areas", nargs="*",
                        help=f"areas to run (default or 'all': every one of {AREAS})")
    parser.add_argument("--quick", action="store_true", help="reduced sizes, for CI")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--render", action="store_true",
                        help="do not run: re-render docs/benchmarks.md from the recorded "
                             "bench/results/<area>.json (after a markdown() change)")
    parser.add_argument("--results-dir", type=Path,
                        help="where to write <area>.json (default bench/results, "
                             "bench/results/quick with --quick)")
    args, rest = parser.parse_known_args(argv)
    present = [a for a in AREAS if (Path(__file__).parent / f"{a}.py").exists()]
    areas = present if not args.areas or args.areas == ["all"] else args.areas
    unknown = [a for a in areas if a not in AREAS]
    if unknown:
        parser.error(f"unknown area(s) {unknown}; choose from {AREAS} or 'all'")
    out_dir = args.results_dir or (RESULTS / "quick" if args.quick else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    failed = []
    for area in areas:
        area_argv = [*rest, *(["--quick"] if args.quick else [])]
        command = "python -m bench " + " ".join([area, *area_argv])
        print(f"==> {command}", flush=True)
        started = time.monotonic()
        if args.render:
            mod = importlib.import_module(f"bench.{area}")
            recorded = out_dir / f"{area}.json"
            if not recorded.exists():
                print(f"==> no {recorded}; run `python -m bench {area}` first", file=sys.stderr)
                failed.append(area)
                continue
            recorded_results = json.loads(recorded.read_text())
            block = stamped(mod.markdown(recorded_results), recorded_results)
            print(block)
            if not args.no_doc and not args.quick:
                doc = splice(doc, area, block)
                DOC.write_text(doc)
            continue
        try:
            mod = importlib.import_module(f"bench.{area}")
            results = mod.main(area_argv)
        except Exception:
            traceback.print_exc()
            print(f"==> bench {area} FAILED; its recorded numbers are unchanged", flush=True)
            failed.append(area)
            continue
        results["machine"] = machine()
        results["command"] = command
        results["wall_seconds"] = round(time.monotonic() - started, 1)
        (out_dir / f"{area}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        block = stamped(mod.markdown(results), results)
        print(block)
        if not args.no_doc and not args.quick:
            doc = splice(doc, area, block)
            DOC.write_text(doc)
    if failed:
        print(f"==> failed areas: {' '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
