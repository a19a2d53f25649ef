"""The shipped scorer is the one that was measured, and it still measures the same.

Quality floor, not a speed test: the artefact's files hash to what its manifest says, the
corpus's frozen test split is the one the manifest was measured on, and re-running the full
detector (phrases + context layer + scorer, inference only) on that split gives at least the
figures recorded in the manifest by ``vigil-rules eval --split test --record``. A change to
the library, the corpus, the scorer code or the artefact that makes any of these worse fails
here and says which figure moved.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import rules
from rules.corpus import load_corpus, split_digest
from rules.engine import Detector
from rules.evalcli import headline
from rules.evaluate import evaluate
from rules.scorer import DEFAULT_MODEL, load_scorer

# Rates are recomputed exactly (inference is deterministic on one thread); the slack only
# absorbs last-digit rounding between onnxruntime builds.
SLACK = 0.003


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    man: dict[str, Any] = json.loads((DEFAULT_MODEL / "manifest.json").read_text())
    return man


def test_artefact_files_match_their_manifest() -> None:
    scorer = load_scorer()  # refuses any file whose sha256 differs from the manifest
    assert scorer.version and (DEFAULT_MODEL / "model.onnx").stat().st_size < 30 * 2**20


def test_test_split_is_frozen(manifest: dict[str, Any]) -> None:
    """The test split is the one the recorded figures were measured on. If this fails, the
    corpus changed: re-run `vigil-rules eval --split test --record` (after training, never
    to choose anything) and commit the manifest with the corpus change."""
    samples = load_corpus()
    assert split_digest(samples, "test") == manifest["figures"]["test"]["test_split_digest"]


def test_detector_meets_the_recorded_floor_on_the_frozen_test_split(
        manifest: dict[str, Any]) -> None:
    recorded = manifest["figures"]["test"]
    det = Detector(rules.load_library(rules.DEFAULT_LIBRARY), load_scorer())
    samples = load_corpus(split="test")
    rep = evaluate(samples, lambda s: det.detect(s.text, s.source))
    now = headline(rep)
    assert now["concerning"] == recorded["concerning"] and now["benign"] == recorded["benign"]
    worse = [f"{k}: {now[k]:.4f} < recorded {recorded[k]:.4f}"
             for k in ("recall", "recall_sev4", "severity_fit") if now[k] < recorded[k] - SLACK]
    if now["false_positive"] > recorded["false_positive"] + SLACK:
        worse.append(f"false_positive: {now['false_positive']:.4f} > recorded "
                     f"{recorded['false_positive']:.4f}")
    for cat, rate in recorded["per_category"].items():
        if now["per_category"].get(cat, 0.0) < rate - SLACK:
            worse.append(f"recall {cat}: {now['per_category'].get(cat, 0.0):.4f} < {rate:.4f}")
    assert worse == [], "detection got worse on the frozen test split:\n" + "\n".join(worse)
