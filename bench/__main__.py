"""Run benchmarks and record them in docs/benchmarks.md.

    python -m bench                 # every area
    python -m bench rules agent     # some areas
    python -m bench --quick rules   # reduced sizes (what CI runs, so the harness cannot rot)

Each area is a module ``bench/<area>.py`` with ``main(argv) -> dict`` and
``markdown(results) -> str``. Results go to ``bench/results/<area>.json``; the markdown
replaces the area's block in docs/benchmarks.md.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = Path(__file__).resolve().parent / "results"
AREAS = ["rules", "agent", "collector", "console", "scale"]


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("areas", nargs="*", help=f"areas to run (default: all of {AREAS})")
    parser.add_argument("--quick", action="store_true", help="reduced sizes, for CI")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args, rest = parser.parse_known_args(argv)
    areas = args.areas or [a for a in AREAS if (Path(__file__).parent / f"{a}.py").exists()]
    RESULTS.mkdir(exist_ok=True)
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    for area in areas:
        mod = importlib.import_module(f"bench.{area}")
        area_argv = [*rest, *(["--quick"] if args.quick else [])]
        print(f"==> bench {area} {' '.join(area_argv)}", flush=True)
        results = mod.main(area_argv)
        results["machine"] = machine()
        results["command"] = "python -m bench " + " ".join([area, *area_argv])
        (RESULTS / f"{area}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        block = mod.markdown(results)
        print(block)
        if not args.no_doc and not args.quick:
            doc = splice(doc, area, block)
            DOC.write_text(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
