"""One-off: convert the shared seed corpus (plain text files) into rules/corpus/seed_*.tsv.

The seed files carry only category, severity and text; form, language and source are
inferred here by simple, documented heuristics (a person re-labelled the doubtful ones).
Run: python -m rules.tools.import_seed ../shared/detection/seed-corpus
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from rules.corpus import CORPUS_DIR, HEADER

_CAT = {"eating_disorder": "eating_disorders"}
_WINDOW = re.compile(r" - (YouTube|Google Search|Reddit|Wikipedia|BBC|TikTok|Discord|Bing)|"
                     r"\.(docx|pdf|pptx|mp4)\b|^r/|\| ", re.I)
_OBF = re.compile(r"[a-z][0-9@$*!#][a-z]|\b(u|ur|rn|ngl|fr|idk|tbh|kms|kys|wanna|gonna|pls|"
                  r"plz|unalive|sewerslide|cuz|coz|bc)\b|\b\w( \w){3,}\b", re.I)
_CY = re.compile(r"\b(dw i|dwi|yn|fy|wedi|ddim|eisiau|isio|mae|efo|gyda|dy|chi|ti'n|i'n|"
                 r"ydw|dydw|hefyd|achos|bod|rhaid|gallu|lladd|marw)\b", re.I)
_PL = re.compile(r"[łśżźćńąę]|\b(nie|się|jestem|chcę|mnie|mój|moja|żeby)\b", re.I)
_UR = re.compile(r"\b(mujhe|mera|meri|hai|nahi|nahin|kya|main|mein|hoon|karna|tum|aap|"
                 r"yaar|bhai|kar|raha|rahi|ghar|abbu|ammi)\b", re.I)


def _lang(text: str) -> str:
    scores = {"cy": len(_CY.findall(text)), "pl": len(_PL.findall(text)),
              "ur": len(_UR.findall(text))}
    best = max(scores, key=lambda k: scores[k])
    return best if scores[best] >= 2 else "en"


def _row(cat: str, sev: str, text: str, family: str) -> str:
    source = "window" if _WINDOW.search(text) else "keys"
    form = "embedded" if len(text) > 90 else "obfuscated" if _OBF.search(text) else "plain"
    return "\t".join((cat, sev, form, _lang(text), source, family, text))


def main(seed: Path) -> None:
    concerning: list[str] = []
    for f in sorted((seed / "concerning").glob("*.txt")):
        for ln in f.read_text(encoding="utf-8").splitlines():
            if not ln.strip():
                continue
            parts = ln.split("\t")
            if len(parts) == 3:
                cat, sev, text = parts
            else:
                cat, (sev, text) = f.stem, parts
            cat = _CAT.get(cat, cat)
            concerning.append(_row(cat, sev, text.strip(), "seed_" + f.stem))
    benign = [_row("none", "0", ln.strip(), f.stem)
              for f in sorted((seed / "benign").glob("*.txt"))
              for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
    for name, rows in (("seed_concerning.tsv", concerning), ("seed_benign.tsv", benign)):
        (CORPUS_DIR / name).write_text("\t".join(HEADER) + "\n" + "\n".join(rows) + "\n",
                                       encoding="utf-8")
        print(f"{name}: {len(rows)} lines")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
