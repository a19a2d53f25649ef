"""``vigil-rules eval``: measure the detector on labelled corpus files. Thin: the figures
come from ``rules.evaluate``, the detector from ``rules.engine``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .corpus import CORPUS_DIR, SPLITS, Sample, load_corpus, split_digest
from .engine import Detector
from .evaluate import Report, evaluate
from .library import load_library
from .model import DEFAULT_LIBRARY, GROUPS, Hit
from .scorer import DEFAULT_MODEL, load_scorer

__all__ = ["add_parser", "run"]

LAYERS = ("phrases", "context", "model")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "eval", help="measure detection on labelled corpus files (recall, false positives)",
        description="Run the detector on labelled lines (rules/corpus/README.md format) and "
        "print recall overall, at severity >= 4 and per category; false positives overall and "
        "per trap family; severity fit; category confusion. -v lists misses and false "
        "positives. Exit status 0 (figures are reported, not judged).")
    p.add_argument("files", nargs="*", type=Path, default=[CORPUS_DIR],
                   help="corpus .tsv files or folders (default: the repository's corpus)")
    p.add_argument("--split", choices=[*SPLITS, "all"], default="all",
                   help="only lines of this split (default: all lines of the files)")
    p.add_argument("--rules", type=Path, default=DEFAULT_LIBRARY, help="rule library folder")
    p.add_argument("--model", default=str(DEFAULT_MODEL),
                   help="scorer artefact folder, or 'none' for rules only")
    p.add_argument("--layers", default=",".join(LAYERS),
                   help=f"comma-separated layers to run (default: {','.join(LAYERS)})")
    p.add_argument("--group", choices=GROUPS, default=None,
                   help="age band whose thresholds apply (default: unknown band, every rule)")
    p.add_argument("-v", "--verbose", action="store_true", help="list misses and false positives")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--markdown", action="store_true",
                   help="print the figures as Markdown tables (for docs/detection.md)")
    p.add_argument("--record", action="store_true",
                   help="write the headline figures into the model's manifest.json under "
                   "figures.<split> (what CI's quality floor checks against)")
    p.set_defaults(func=run)


def _detector(args: argparse.Namespace) -> tuple[Detector, set[str]]:
    layers = {x.strip() for x in args.layers.split(",") if x.strip()}
    bad = layers - set(LAYERS)
    if bad:
        raise ValueError(f"unknown layer(s) {', '.join(sorted(bad))}: use {', '.join(LAYERS)}")
    scorer = None
    if "model" in layers and args.model != "none":
        scorer = load_scorer(Path(args.model))
    return Detector(load_library(args.rules), scorer), layers


def _detect_fn(det: Detector, layers: set[str], group: str | None) -> Any:
    def detect(s: Sample) -> list[Hit]:
        if layers == set(LAYERS):  # exactly what the agent and CI's floor run
            return det.detect(s.text, s.source, group)
        hits: list[Hit] = []
        if "phrases" in layers:
            hits += det.ruleset.scan(s.text, s.source, group)
        if "context" in layers:
            hits += det.ruleset.evaluate(s.text, s.source, group)
        if det.scorer is not None and s.source in ("keys", "window"):
            hits += det.scorer.hits(s.text, s.source, group)
        return hits

    return detect


class _Bar:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self) -> None:
        self.on = sys.stderr.isatty()
        self.t0 = time.monotonic()

    def __call__(self, i: int, n: int) -> None:
        if not self.on or (i % 25 and i != n):
            return
        width = 30
        done = int(width * i / n)
        rate = i / max(time.monotonic() - self.t0, 1e-9)
        sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} {rate:.0f} lines/s")
        if i == n:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    samples = load_corpus(args.files, None if args.split == "all" else args.split)
    if not samples:
        raise ValueError("no lines to evaluate (check the files and --split)")
    det, layers = _detector(args)
    t0 = time.monotonic()
    rep = evaluate(samples, _detect_fn(det, layers, args.group), _Bar())
    secs = time.monotonic() - t0
    if args.record:
        _record(args, rep, det, layers, len(samples))
    if args.json:
        out = rep.as_dict()
        if not args.verbose:
            out.pop("misses")
            out.pop("false_positives")
        out["lines"], out["seconds"] = len(samples), round(secs, 2)
        out["model"] = det.scorer.version if det.scorer else None
        out["layers"] = sorted(layers)
        print(json.dumps(out, ensure_ascii=False, indent=2))
    elif args.markdown:
        print(markdown(rep))
    else:
        print(render(rep, len(samples), secs, det, layers, args.verbose))
    return 0


def _md_rate(t: Any) -> str:
    return f"{100 * t.rate:.1f} % | {t.hit}/{t.n}" if t.n else "- | 0"


def markdown(rep: Report) -> str:
    """The figures as Markdown tables."""
    out = ["| measure | rate | lines |", "|---|---:|---:|",
           f"| recall, all concerning | {_md_rate(rep.recall)} |",
           f"| recall, severity >= 4 | {_md_rate(rep.recall_sev4)} |",
           f"| false positives, all benign | {_md_rate(rep.fp)} |",
           f"| top alert's severity within one of the label | {_md_rate(rep.severity_fit)} |",
           f"| right category among the alerts | {_md_rate(rep.category_right)} |", ""]
    for title, table, what in (("Recall per category", rep.per_category, "recall"),
                               ("Recall per language", rep.per_lang, "recall"),
                               ("Recall per form", rep.per_form, "recall"),
                               ("Recall per source", rep.per_source, "recall"),
                               ("False positives per trap family", rep.fp_family, "FP")):
        out += [f"**{title}**", "", f"| | {what} | lines |", "|---|---:|---:|"]
        out += [f"| {k} | {_md_rate(table[k])} |" for k in sorted(table)]
        out.append("")
    return "\n".join(out).rstrip()


def headline(rep: Report) -> dict[str, Any]:
    """The figures a manifest records and CI's floor compares (rates, 4 decimals)."""
    return {
        "recall": round(rep.recall.rate, 4), "recall_sev4": round(rep.recall_sev4.rate, 4),
        "false_positive": round(rep.fp.rate, 4), "severity_fit": round(rep.severity_fit.rate, 4),
        "per_category": {k: round(v.rate, 4) for k, v in sorted(rep.per_category.items())},
        "fp_per_family": {k: round(v.rate, 4) for k, v in sorted(rep.fp_family.items())},
        "concerning": rep.recall.n, "benign": rep.fp.n,
    }


def _record(args: argparse.Namespace, rep: Report, det: Detector, layers: set[str],
            lines: int) -> None:
    if det.scorer is None or args.split == "all":
        raise ValueError("--record needs a model and one --split (train, dev or test)")
    path = det.scorer.folder / "manifest.json"
    man = json.loads(path.read_text(encoding="utf-8"))
    man.setdefault("figures", {})[args.split] = {
        **headline(rep), "lines": lines, "layers": sorted(layers),
        "test_split_digest": split_digest(load_corpus(args.files), "test"),
        "rules_content_hash": det.ruleset.content_hash, "group": args.group}
    path.write_text(json.dumps(man, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _pct(t: Any) -> str:
    return f"{100 * t.rate:5.1f} %  ({t.hit}/{t.n})" if t.n else "    -"


def render(rep: Report, lines: int, secs: float, det: Detector, layers: set[str],
           verbose: bool) -> str:
    """The human-readable report."""
    model = det.scorer.version if det.scorer else "none"
    out = [f"{lines} lines in {secs:.1f} s; layers {','.join(sorted(layers))}; model {model}",
           "",
           f"recall (all)            {_pct(rep.recall)}",
           f"recall (severity >= 4)  {_pct(rep.recall_sev4)}",
           f"false positives         {_pct(rep.fp)}",
           f"severity within one     {_pct(rep.severity_fit)}",
           f"right category          {_pct(rep.category_right)}", ""]
    for title, table in (("recall per category", rep.per_category),
                         ("recall per language", rep.per_lang),
                         ("recall per form", rep.per_form),
                         ("recall per source", rep.per_source),
                         ("false positives per trap family", rep.fp_family)):
        out.append(title)
        for k in sorted(table):
            out.append(f"  {k:<28} {_pct(table[k])}")
        out.append("")
    wrong = [(a, b, n) for (a, b), n in rep.confusion.items() if a != b and b != "none"]
    if wrong:
        out.append("category confusion (label -> top alert)")
        for a, b, n in sorted(wrong, key=lambda r: -r[2])[:20]:
            out.append(f"  {a:<22} -> {b:<22} {n}")
        out.append("")
    if verbose:
        out.append("misses")
        for o in rep.misses:
            out.append(f"  {o.sample.file}:{o.sample.line} [{o.sample.category} "
                       f"{o.sample.severity}] {o.sample.text}")
        out.append("")
        out.append("false positives")
        for o in rep.false_positives:
            why = "; ".join(f"{h.rule.id}: {', '.join(h.reasons) or h.match}" for h in o.alerts)
            out.append(f"  {o.sample.file}:{o.sample.line} [{o.sample.family}] "
                       f"{o.sample.text}  <- {why}")
    return "\n".join(out).rstrip()


def add_calibrate_parser(sub: Any) -> None:
    p = sub.add_parser(
        "calibrate", help="choose the scorer's threshold on the dev split, beside the rules",
        description="Pick the scorer's thresholds so that rules OR scorer stays within the "
        "false-positive target on dev lines they were not chosen on (cross-validated within "
        "the dev split), and write them into the artefact's manifest. Reads only the dev "
        "split; never the frozen test split.")
    p.add_argument("files", nargs="*", type=Path, default=[CORPUS_DIR],
                   help="corpus .tsv files or folders (default: the repository's corpus)")
    p.add_argument("--rules", type=Path, default=DEFAULT_LIBRARY, help="rule library folder")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="scorer artefact folder")
    p.add_argument("--target-fp", type=float, default=0.03,
                   help="the false-positive rate rules and scorer together may have on dev "
                        "lines the thresholds were not chosen on, estimated by "
                        "cross-validation (default 0.03; docs/detection.md says why)")
    p.add_argument("--folds", type=int, default=5,
                   help="cross-validation folds within dev for choosing the method and the "
                        "in-sample budget (default 5; 1 = the in-sample greedy fit alone)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the calibration without writing it into the manifest")
    p.set_defaults(func=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import calibrate, write_thresholds

    dev = load_corpus(args.files, "dev")
    scorer = load_scorer(args.model)
    if args.folds < 1:
        raise SystemExit("vigil-rules calibrate: --folds must be 1 or more")
    cal = calibrate(dev, load_library(args.rules), scorer, args.target_fp, args.folds)
    if not args.dry_run:
        write_thresholds(scorer, cal, args.target_fp)
    print(json.dumps(cal.__dict__, indent=2))
    return 0
