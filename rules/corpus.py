"""The labelled detection corpus: load, validate and split it (see rules/corpus/README.md).

Each line is a :class:`Sample`. The split is a hash of the line's *normalised* text with
every separator removed, so a line and its respelling ("kill myself", "K1LL  my-self") land
in the same split. Near-copies (the same sentence with a word or two changed, found by word
overlap) are grouped and the whole group takes the split of its first member in hash order,
so a near-copy of a training line never sits in the test split. The test split is frozen:
:func:`split_digest` hashes its membership, the model manifest records that digest, and a
test fails if it changes without a new manifest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from .model import CATEGORIES, RuleError
from .normalise import normalise

__all__ = [
    "AFTER_FREEZE_PREFIX",
    "BENIGN",
    "CORPUS_DIR",
    "FORMS",
    "HEADER",
    "LANGS",
    "SPLITS",
    "Sample",
    "load_corpus",
    "split_digest",
    "split_of",
]

#: The folder of the corpus shipped with the repository (not installed into wheels).
CORPUS_DIR: Path = Path(__file__).resolve().parent / "corpus"
HEADER: tuple[str, ...] = ("category", "severity", "form", "lang", "source", "family", "text")
BENIGN = "none"
FORMS: frozenset[str] = frozenset({"plain", "obfuscated", "embedded"})
LANGS: frozenset[str] = frozenset({"en", "cy", "pl", "ur", "pa", "ro", "ar", "so", "lt", "pt", "bn",
                                  "tr", "gu", "mixed"})
SOURCES: frozenset[str] = frozenset({"keys", "window"})
SPLITS: tuple[str, ...] = ("train", "dev", "test")
# Percent boundaries of the split: [0, 70) train, [70, 85) dev, [85, 100) test.
_TRAIN_END, _DEV_END = 70, 85
_SALT = b"vigil-corpus-split-v1:"
_SALT_LATER = b"vigil-corpus-after-freeze-v1:"
#: Corpus files written after the test split was frozen: train/dev only (see _after_freeze).
AFTER_FREEZE_PREFIX = "w2_"


@dataclass(frozen=True)
class Sample:
    """One labelled line. ``category`` is :data:`BENIGN` and ``severity`` 0 for benign."""

    text: str
    category: str
    severity: int
    form: str
    lang: str
    source: str
    family: str
    file: str
    line: int

    @property
    def concerning(self) -> bool:
        return self.category != BENIGN

    split: str = ""  # set by load_corpus (near-copies share one split)


def _key(text: str) -> str:
    return normalise(text).replace(" ", "").replace(".", "")


def _bucket(text: str) -> int:
    digest = hashlib.sha256(_SALT + _key(text).encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100


def split_of(text: str) -> str:
    """``train``, ``dev`` or ``test`` of a line on its own: a stable hash of its normalised
    text (``load_corpus`` then moves near-copies to their group's split)."""
    bucket = _bucket(text)
    return "train" if bucket < _TRAIN_END else "dev" if bucket < _DEV_END else "test"


_WORD = re.compile(r"[^\W_]{3,}")
NEAR = 0.7  # word-set Jaccard at or above which two lines are near-copies


def _near_groups(texts: list[str]) -> list[int]:
    """For each text, the index of its group's representative (union-find over pairs whose
    word sets overlap by at least :data:`NEAR`; candidates share a word used by <= 40 lines)."""
    words = [frozenset(_WORD.findall(t.casefold())) for t in texts]
    index: dict[str, list[int]] = {}
    for i, ws in enumerate(words):
        for w in ws:
            index.setdefault(w, []).append(i)
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, ws in enumerate(words):
        if len(ws) < 3:
            continue
        seen: set[int] = set()
        for w in ws:
            posting = index[w]
            if len(posting) > 40:
                continue
            for j in posting:
                if j <= i or j in seen:
                    continue
                seen.add(j)
                other = words[j]
                if len(ws & other) >= NEAR * len(ws | other):
                    a, b = find(i), find(j)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(len(texts))]


def split_digest(samples: Iterable[Sample], split: str = "test") -> str:
    """A hash of which lines (and labels) are in ``split``: changes if the split changes."""
    rows = sorted({f"{_key(s.text)}\t{s.category}\t{s.severity}" for s in samples
                   if s.split == split})
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _parse_file(path: Path) -> Iterator[Sample]:
    name = str(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RuleError(name, None, None, f"cannot read corpus file ({e}): is it UTF-8?") from None
    if not lines or tuple(lines[0].split("\t")) != HEADER:
        raise RuleError(name, 1, None, "first line must be the header: " + "\\t".join(HEADER))
    for n, raw in enumerate(lines[1:], 2):
        if not raw.strip():
            continue
        cols = raw.split("\t")
        if len(cols) != len(HEADER):
            raise RuleError(name, n, None, f"{len(cols)} tab-separated columns, need "
                            f"{len(HEADER)}: {', '.join(HEADER)}")
        cat, sev, form, lang, source, family, text = (c.strip() for c in cols)
        problem = _problem(cat, sev, form, lang, source, family, text)
        if problem:
            raise RuleError(name, n, None, problem)
        yield Sample(text=text, category=cat, severity=int(sev), form=form, lang=lang,
                     source=source, family=family, file=path.name, line=n)


def _problem(cat: str, sev: str, form: str, lang: str, source: str, family: str,
             text: str) -> str | None:
    if cat != BENIGN and cat not in CATEGORIES:
        return f"category {cat!r} is unknown: use {BENIGN!r} or one of {', '.join(CATEGORIES)}"
    if sev not in {"0", "1", "2", "3", "4", "5"} or (sev == "0") != (cat == BENIGN):
        return f"severity {sev!r}: use 0 for {BENIGN!r} and 1-5 for a concerning line"
    if form not in FORMS:
        return f"form {form!r}: use one of {', '.join(sorted(FORMS))}"
    if lang not in LANGS:
        return f"lang {lang!r}: use one of {', '.join(sorted(LANGS))}"
    if source not in SOURCES:
        return f"source {source!r}: use one of {', '.join(sorted(SOURCES))}"
    if not family:
        return "family is empty: name the sub-kind (concerning) or trap family (benign)"
    if not text:
        return "text is empty"
    return None


def load_corpus(paths: Iterable[Path] = (CORPUS_DIR,), split: str | None = None) -> list[Sample]:
    """Every sample in the given files or folders (``*.tsv``, sorted), optionally one split.

    A line that appears twice (same normalised text) is kept once; if the two copies
    disagree on the label, that is an error naming both places.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        files += sorted(p.glob("*.tsv")) if p.is_dir() else [p]
    if not files:
        raise RuleError(", ".join(str(p) for p in paths), None, None, "no *.tsv corpus files")
    seen: dict[str, Sample] = {}
    for f in files:
        for s in _parse_file(f):
            k = _key(s.text)
            first = seen.get(k)
            if first is not None:
                if first.concerning != s.concerning:
                    raise RuleError(str(f), s.line, None,
                                    f"same line as {first.file}:{first.line} with a different "
                                    "label (benign vs concerning): fix one of them")
                continue
            seen[k] = s
    frozen = [s for s in seen.values() if not s.file.startswith(AFTER_FREEZE_PREFIX)]
    later = [s for s in seen.values() if s.file.startswith(AFTER_FREEZE_PREFIX)]
    # groups are formed in hash order, so a group's split is its lowest-hash member's
    ordered = sorted(frozen, key=lambda s: (_bucket(s.text), _key(s.text)))
    reps = _near_groups([s.text for s in ordered])
    out = [replace(s, split=split_of(ordered[r].text)) for s, r in zip(ordered, reps,
                                                                         strict=True)]
    out += _after_freeze(out, later)
    out.sort(key=lambda s: (s.file, s.line))
    return [s for s in out if split is None or s.split == split]


def _after_freeze(frozen: list[Sample], later: list[Sample]) -> list[Sample]:
    """Lines written after the test split was frozen (files named ``w2_*.tsv``): they go to
    train or dev only (70:15), so the frozen test split never changes. A later line that is a
    near-copy of a frozen line takes that line's split, and one near a frozen TEST line is
    left out altogether (it would leak the test set into training)."""
    if not later:
        return []
    ordered = sorted(later, key=lambda s: (_bucket(s.text), _key(s.text)))
    texts = [s.text for s in frozen] + [s.text for s in ordered]
    reps = _near_groups(texts)
    groups: dict[int, set[str]] = {}
    for i, s in enumerate(frozen):
        groups.setdefault(reps[i], set()).add(s.split)
    out = []
    for j, s in enumerate(ordered):
        old = groups.get(reps[len(frozen) + j], set())
        if "test" in old:
            continue
        if old:
            out.append(replace(s, split=sorted(old)[0]))
            continue
        rep = texts[reps[len(frozen) + j]]
        b = int.from_bytes(hashlib.sha256(_SALT_LATER + _key(rep).encode()).digest()[:4],
                           "big") % 85
        out.append(replace(s, split="train" if b < _TRAIN_END else "dev"))
    return out
