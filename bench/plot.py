"""PNG plots of the scale benchmark (matplotlib, Agg backend: no display needed).

    python -m bench.plot [bench/results/scale.json] [--out docs]

* ``bench-latency.png``: ack latency (p50, p99) under load and rule fan-out time, against the
  number of connected agents N.
* ``bench-ingest.png``: stored captures/s against concurrent streams (and against store size
  when the growth part ran), with the raw SQLite ceiling and the 50k/s target.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["plot"]

ROOT = Path(__file__).resolve().parent.parent


def _latency(r: dict[str, Any], path: Path) -> bool:
    import matplotlib.pyplot as plt

    stages = r.get("fleet", {}).get("stages", [])
    if not stages:
        return False
    ns = [s["n"] for s in stages]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        ax1.plot(ns, [s["load"]["ack_latency"].get(key) for s in stages], marker="o",
                 label=label)
    ax1.set(xscale="log", xlabel="connected agents N", ylabel="capture ack latency (ms)",
            title="Ack latency under load", ylim=(0, None))
    ax1.legend()
    fan = [s["fanout"].get("median_all_stored_s") for s in stages]
    ax2.plot(ns, fan, marker="o", label="every ack stored (median)")
    ax2.axhline(5, color="red", linestyle="--", label="target at 10k: 5 s")
    ax2.set(xscale="log", xlabel="connected agents N", ylabel="seconds after rules publish",
            title="Rule fan-out", ylim=(0, None))
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _ingest(r: dict[str, Any], path: Path) -> bool:
    import matplotlib.pyplot as plt

    by = r.get("ingest", {}).get("by_streams", [])
    growth = r.get("growth", [])
    if not by and not growth:
        return False
    fig, axes = plt.subplots(1, 2 if growth and by else 1, figsize=(10 if growth and by else 5,
                                                                     4), squeeze=False)
    k = 0
    if by:
        ax = axes[0][k]
        k += 1
        xs = [g["streams"] for g in by]
        ax.plot(xs, [g["median_per_s"] for g in by], marker="o", label="collector (stored/s)")
        ax.plot(xs, [g["raw_median_per_s"] for g in by], marker="s", linestyle=":",
                label="raw executemany, same schema")
        if all("store_only" in g for g in by):
            ax.plot(xs, [g["store_only"]["captures_per_s"] for g in by], marker="^",
                    linestyle="--", label="Store.ingest alone (no gRPC)")
        ax.axhline(50_000, color="red", linestyle="--", label="target 50k/s")
        ax.set(xscale="log", xlabel="concurrent streams", ylabel="captures per second",
               title="Ingest vs streams", ylim=(0, None))
        ax.legend()
    if growth:
        ax = axes[0][k]
        sizes = [g["size"] for g in growth]
        ax.plot(sizes, [g["ingest"]["median_per_s"] for g in growth], marker="o",
                label="ingest stored/s")
        ax.set(xscale="log", xlabel="captures already stored", ylabel="captures per second",
               title="Ingest vs store size", ylim=(0, None))
        ax2 = ax.twinx()
        ax2.plot(sizes, [g["pages"]["queue"]["median_ms"] for g in growth], marker="s",
                 color="green", label="queue page median (ms)")
        ax2.set(ylabel="queue page (ms)", ylim=(0, None))
        handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write the PNGs that the results have data for; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in (("bench-latency.png", _latency), ("bench-ingest.png", _ingest)):
        if fn(results, out_dir / name):
            written.append(out_dir / name)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__)
    p.add_argument("results", nargs="?", default=str(ROOT / "bench" / "results" / "scale.json"))
    p.add_argument("--out", default=str(ROOT / "docs"))
    a = p.parse_args(argv)
    for path in plot(json.loads(Path(a.results).read_text()), Path(a.out)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
