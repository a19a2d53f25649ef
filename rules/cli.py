"""``vigil-rules``: check, scan, compile and sign rule libraries. Thin: logic lives elsewhere."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from . import evalcli, traincli
from .bundle import BundleError, compile_bundle, generate_signing_key
from .context import merge_by_rule
from .engine import SCORED_SOURCES
from .library import load_library
from .model import CATEGORIES, DEFAULT_LIBRARY, GROUPS, SOURCES, RuleError
from .scorer import DEFAULT_MODEL, load_scorer

__all__ = ["main"]


class _Fail(Exception):
    """A user error: printed as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), not usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _check(args: argparse.Namespace) -> int:
    ruleset = load_library(args.dir)
    per: dict[str, list[int]] = {}
    for r in ruleset.rules:
        row = per.setdefault(r.category, [0, 0, 0, 0])
        row[0] += 1
        row[1] += len(r.phrases)
        row[2] += len(r.exclusions)
        row[3] += len(r.weights) + len(r.combos)
    print(f"{'category':<22} {'rules':>5} {'phrases':>8} {'exclusions':>10} {'weighted':>8}")
    for cat in sorted(per, key=list(CATEGORIES).index):
        n, p, x, w = per[cat]
        print(f"{cat:<22} {n:>5} {p:>8} {x:>10} {w:>8}")
    tot = [sum(v[i] for v in per.values()) for i in range(4)]
    print(f"{'total':<22} {tot[0]:>5} {tot[1]:>8} {tot[2]:>10} {tot[3]:>8}")
    missing = [c for c in CATEGORIES if c not in per]
    if missing:
        print(f"note: no rules for {', '.join(missing)}")
    print(f"ok: {args.dir} is valid (content hash {ruleset.content_hash[:16]})")
    return 0


def _scan(args: argparse.Namespace) -> int:
    ruleset = load_library(args.rules)
    matcher = ruleset.matcher(args.source, args.group)
    scorer = (None if args.model == "none" else
              load_scorer(DEFAULT_MODEL if args.model == "shipped" else Path(args.model)))
    # Bytes that are not UTF-8 are replaced rather than crashing a long scan.
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace", newline="")
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(encoding="utf-8")
    for n, line in enumerate(stdin, 1):
        text = line.rstrip("\r\n")
        hits = merge_by_rule(matcher.scan(text), ruleset.evaluate(text, args.source, args.group))
        if scorer is not None and args.source in SCORED_SOURCES:
            hits += scorer.hits(text, args.source, args.group)
        row = [{"rule": h.rule.id, "category": h.rule.category, "severity": h.rule.severity,
                "match": h.match, "score": h.score, "reasons": list(h.reasons)} for h in hits]
        sys.stdout.write(json.dumps({"line": n, "hits": row}, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    return 0


def _bundle_version(path: Path) -> int | None:
    try:
        payload = json.loads(json.loads(path.read_bytes())["payload"])
        return int(payload["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _compile(args: argparse.Namespace) -> int:
    ruleset = load_library(args.dir)
    try:
        key = Path(args.key).read_bytes()
    except OSError as e:
        raise _Fail(f"cannot read signing key {args.key}: {e.strerror}; "
                    "make one with `vigil-rules keygen`") from None
    out = Path(args.output)
    previous = _bundle_version(out) if out.exists() else None
    version = args.version if args.version is not None else (previous or 0) + 1
    if previous is not None and version <= previous:
        raise _Fail(f"{out} already holds version {previous}; versions only increase: "
                    f"use --version {previous + 1} or more")
    data = compile_bundle(ruleset, key, version)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    print(f"wrote {out}: version {version}, {len(ruleset.rules)} rules, "
          f"content hash {ruleset.content_hash[:16]}")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    private, public = Path(args.private), Path(args.public)
    for p in (private, public):
        if p.exists() and not args.force:
            raise _Fail(f"{p} already exists: pass --force to replace it (agents trusting the "
                        "old key will refuse bundles signed by the new one)")
    priv_pem, pub_pem = generate_signing_key()
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(priv_pem)
    public.write_bytes(pub_pem)
    print(f"private key: {private} (keep it secret)\npublic key: {public} (give it to agents)")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vigil-rules", description="Check, scan, compile and sign "
                                "Vigil rule libraries (folders of TOML rule files).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sub.add_parser("check", help="validate a library and print a summary per category",
                       description="Validate every rule file in DIR; print a summary per "
                       "category (weighted = v2 weights and combos), or every problem with "
                       "file, line, rule id and the fix.")
    c.add_argument("dir", metavar="DIR", help="folder of *.toml rule files")
    c.set_defaults(func=_check)
    s = sub.add_parser("scan", help="match stdin lines; one JSON object per line to stdout",
                       description="Read text from stdin, one input per line, matched as if "
                       "typed then Enter, by the streaming phrase matcher and the context "
                       "layer (weights, combos, obfuscations). Writes {\"line\": N, \"hits\": "
                       "[{\"rule\", \"category\", \"severity\", \"match\", \"score\", "
                       "\"reasons\"}]} per input line, in order, one hit per rule.")
    s.add_argument("--rules", default=str(DEFAULT_LIBRARY), metavar="DIR",
                   help="rule library folder (default: the built-in library)")
    s.add_argument("--group", choices=GROUPS, help="only rules for this group (default: all)")
    s.add_argument("--source", choices=SOURCES, default="keys",
                   help="match as this source (default: keys)")
    s.add_argument("--model", default="none", metavar="DIR",
                   help="also run the learned scorer: 'shipped' or an artefact folder "
                   "(default: none, the rule layers only; `vigil-rules eval` runs all three)")
    s.set_defaults(func=_scan)
    k = sub.add_parser("compile", help="compile and sign a library into a bundle",
                       description="Validate DIR and write a signed, versioned bundle.")
    k.add_argument("dir", metavar="DIR", help="folder of *.toml rule files")
    k.add_argument("--key", required=True, metavar="KEYFILE", help="Ed25519 private key PEM")
    k.add_argument("-o", "--output", required=True, metavar="BUNDLE", help="bundle file to write")
    k.add_argument("--version", type=int, metavar="N",
                   help="bundle version (default: the existing bundle's version + 1, else 1)")
    k.set_defaults(func=_compile)
    g = sub.add_parser("keygen", help="make an Ed25519 rule-signing key pair",
                       description="Write a new Ed25519 signing key pair as PEM files.")
    g.add_argument("--private", default="rules-signing.key", metavar="FILE",
                   help="private key file (default: rules-signing.key, mode 0600)")
    g.add_argument("--public", default="rules-signing.pub", metavar="FILE",
                   help="public key file (default: rules-signing.pub)")
    g.add_argument("--force", action="store_true", help="replace existing key files")
    g.set_defaults(func=_keygen)
    evalcli.add_parser(sub)
    evalcli.add_calibrate_parser(sub)
    traincli.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vigil-rules``; returns the exit status (2 on bad input)."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # e.g. `vigil-rules scan | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except RuleError as e:
        for err in e.errors if args.command == "check" else (e,):
            msg = err.one_line() if args.command == "check" else str(err)
            print(f"vigil-rules {args.command}: {msg}", file=sys.stderr)
        return 2
    except (BundleError, _Fail, OSError, ValueError) as e:
        print(f"vigil-rules {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
