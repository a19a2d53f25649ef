"""The learned sentence scorer: a fine-tuned MiniLM, int8 ONNX, run on the device.

It reads the bounded current context (in memory, never stored), cut into windows of at most
:data:`WINDOW_CHARS` characters, and gives per window a probability for each category (and
"none") and for each severity. A window fires when ``1 - P(none)`` reaches the threshold of
its most likely category for the pupil's age band; only firing windows become hits, and the
hit says why (category, score, model version). The artefact is a folder::

    manifest.json   labels, thresholds, max_len, hashes, training figures
    model.onnx      int8 weights
    vocab.txt       WordPiece vocabulary

``onnxruntime`` and ``numpy`` are imported when a scorer is loaded, never at import time.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .model import CATEGORIES, GROUPS, Hit, Rule, RuleError
from .wordpiece import WordPiece

__all__ = [
    "DEFAULT_MODEL",
    "MIN_TITLE_WORDS",
    "MODEL_RULE_PREFIX",
    "WINDOW_CHARS",
    "Score",
    "Scorer",
    "load_scorer",
    "model_rule",
    "windows",
]

#: The scorer shipped with Vigil (inside the package, so inside the wheel).
DEFAULT_MODEL: Path = Path(__file__).resolve().parent / "models" / "vigil-minilm"
#: Scorer hits carry rule ids ``model.<category>``.
MODEL_RULE_PREFIX = "model."
WINDOW_CHARS = 280
_STRIDE = 140
#: A window title of fewer words than this is never the scorer's to alert on. Alone, the
#: name of an app, folder or settings page ("Downloads", "Photos", "Settings", "Google
#: Chrome", "Second window") carries no concern, yet the scorer, trained on titles such as
#: "hide photos from parents" or "proxy settings to get round the filter", gave them 0.96-0.998
#: (pornography, circumvention): an alert on every pupil's screen every day. Rules still read
#: short titles. Measured on dev: the scorer alone caught 4 of 21 concerning lines of two
#: words or fewer (of any source), so the cost in recall is small and named here.
MIN_TITLE_WORDS = 3
_WORD = re.compile(r"\w+")


def windows(text: str, size: int = WINDOW_CHARS, stride: int = _STRIDE) -> list[str]:
    """Cut ``text`` into overlapping windows of at most ``size`` characters, at spaces."""
    text = " ".join(text.split())
    if len(text) <= size:
        return [text] if text else []
    out: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.rfind(" ", start + size // 2, end)
            end = cut if cut > start else end
        out.append(text[start:end].strip())
        if end >= len(text):
            break
        nxt = text.find(" ", start + stride, end)
        start = (nxt + 1) if nxt > start else start + stride
    return [w for w in out if w]


def model_rule(category: str, severity: int) -> Rule:
    """The rule a scorer hit is reported under (no phrases: the model is the rule). Its
    severity is the scorer's; ``Rule`` still forces no screenshot for illegal categories."""
    return Rule(id=f"{MODEL_RULE_PREFIX}{category}", category=category, severity=severity,
                phrases=())


@dataclass(frozen=True)
class Score:
    """The scorer's view of one window."""

    category: str
    score: float  # 1 - P(none)
    severity: int
    window: str


class Scorer:
    """A loaded scorer. Thread-safe: ``score`` may be called from any worker thread."""

    def __init__(self, folder: Path) -> None:
        import numpy as np
        import onnxruntime as ort

        self._np = np
        self.folder = folder
        man = _read_manifest(folder)
        self.manifest = man
        self.version: str = man["version"]
        self.labels: list[str] = man["labels"]
        self.max_len: int = int(man["max_len"])
        self.thresholds: dict[str, dict[str, float]] = man["thresholds"]
        self.tokenizer = WordPiece.from_file(folder / "vocab.txt")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(str(folder / "model.onnx"), opts,
                                             providers=["CPUExecutionProvider"])
        self._lock = threading.Lock()

    def threshold(self, category: str, group: str | None) -> float:
        per = self.thresholds.get(category) or self.thresholds["default"]
        if group is None:  # band unknown: the most sensitive band decides
            return min(per.values())
        return per.get(group, min(per.values()))

    def probabilities(self, texts: Sequence[str]) -> tuple[Any, Any]:
        """Category and severity probabilities for each text (numpy arrays)."""
        np = self._np
        enc = [self.tokenizer.encode(t, self.max_len) for t in texts]
        width = max(len(e) for e in enc)
        ids = np.zeros((len(enc), width), dtype=np.int64)
        mask = np.zeros((len(enc), width), dtype=np.int64)
        for i, e in enumerate(enc):
            ids[i, : len(e)] = e
            mask[i, : len(e)] = 1
        with self._lock:
            cat, sev = self._session.run(None, {"input_ids": ids, "attention_mask": mask})
        return cat, sev

    def score(self, text: str) -> list[Score]:
        """Scores for each window of ``text`` (empty text: no scores)."""
        wins = windows(text)
        if not wins:
            return []
        cat, sev = self.probabilities(wins)
        out = []
        none = self.labels.index("none")
        for w, pc, ps in zip(wins, cat, sev, strict=True):
            pc = pc.copy()
            s = float(1.0 - pc[none])
            pc[none] = -1.0
            out.append(Score(category=self.labels[int(pc.argmax())], score=s,
                             severity=int(ps.argmax()) + 1, window=w))
        return out

    @staticmethod
    def reads(text: str, source: str) -> bool:
        """Whether the scorer may alert on *text* from *source* at all (see
        :data:`MIN_TITLE_WORDS`)."""
        return source != "window" or len(_WORD.findall(text)) >= MIN_TITLE_WORDS

    def hits(self, text: str, source: str = "keys", group: str | None = None,
             context_chars: int = 120) -> list[Hit]:
        """Hits for the windows that fire: at most one per category, the best window."""
        best: dict[str, Score] = {}
        for s in self.score(text) if self.reads(text, source) else ():
            fires = s.score >= self.threshold(s.category, group)
            if fires and (s.category not in best or s.score > best[s.category].score):
                best[s.category] = s
        return [Hit(rule=model_rule(s.category, s.severity),
                    match=s.window[:context_chars], context=s.window[:context_chars],
                    match_kind="normalised", score=round(s.score, 4),
                    reasons=(f"model {self.version}: {s.category} {s.score:.2f}",))
                for s in best.values()]


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / "manifest.json"
    try:
        man: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RuleError(str(path), None, None, f"cannot read the scorer manifest ({e}): "
                        "reinstall Vigil or re-run vigil-rules train") from None
    for key in ("version", "labels", "max_len", "thresholds", "files"):
        if key not in man:
            raise RuleError(str(path), None, None, f"manifest has no {key!r}: re-run training")
    for name, digest in man["files"].items():
        try:
            got = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        except OSError as e:
            raise RuleError(str(folder / name), None, None, f"missing ({e})") from None
        if got != digest:
            raise RuleError(str(folder / name), None, None,
                            f"sha256 {got[:12]}… does not match the manifest ({digest[:12]}…): "
                            "the artefact is corrupt or was changed without retraining")
    unknown = [c for c in man["labels"] if c != "none" and c not in CATEGORIES]
    if unknown:
        raise RuleError(str(path), None, None, f"unknown categories {unknown}")
    for cat, per in man["thresholds"].items():
        if set(per) - set(GROUPS):
            raise RuleError(str(path), None, None, f"thresholds for {cat!r} name unknown bands")
    return man


_LOADED: dict[Path, Scorer] = {}
_LOAD_LOCK = threading.Lock()


def load_scorer(folder: Path | None = None) -> Scorer:
    """Load the scorer in ``folder`` (default: the shipped one), once per process. Only the
    two most recently loaded stay cached: a model replaced by an update is freed once its
    last user lets go of it."""
    folder = (folder or DEFAULT_MODEL).resolve()
    with _LOAD_LOCK:
        got = _LOADED.pop(folder, None)
        if got is None:
            got = Scorer(folder)
        _LOADED[folder] = got  # most recent last
        while len(_LOADED) > 2:
            del _LOADED[next(iter(_LOADED))]
        return got
