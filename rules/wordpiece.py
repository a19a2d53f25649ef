"""BERT's uncased WordPiece tokenizer, in plain Python (what the scorer's model reads).

The same algorithm as Hugging Face's ``BertTokenizer`` with ``do_lower_case=True``: clean
control characters, split CJK characters, lowercase and strip accents, split on whitespace
and punctuation, then greedy longest-match-first word pieces with ``##`` continuations.
Written here so the agent needs no tokenizer library; training checks it against
``transformers`` token for token.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

__all__ = ["WordPiece"]

_MAX_WORD = 100


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _basic(text: str) -> list[str]:
    out: list[str] = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C")
                                        and ch not in "\t\n\r"):
            continue
        if ch in " \t\n\r" or unicodedata.category(ch) == "Zs":
            out.append(" ")
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    words: list[str] = []
    for tok in "".join(out).lower().split():
        tok = "".join(c for c in unicodedata.normalize("NFD", tok)
                      if unicodedata.category(c) != "Mn")
        cur: list[str] = []
        for ch in tok:
            if _is_punct(ch):
                if cur:
                    words.append("".join(cur))
                    cur = []
                words.append(ch)
            else:
                cur.append(ch)
        if cur:
            words.append("".join(cur))
    return words


class WordPiece:
    """Turn text into token ids: ``[CLS] pieces… [SEP]``, cut to ``max_len`` ids."""

    def __init__(self, vocab: dict[str, int]) -> None:
        self.vocab = vocab
        self.unk, self.cls, self.sep = vocab["[UNK]"], vocab["[CLS]"], vocab["[SEP]"]
        self.pad = vocab.get("[PAD]", 0)
        self._cache: dict[str, tuple[int, ...]] = {}

    @classmethod
    def from_file(cls, path: Path) -> WordPiece:
        lines = path.read_text(encoding="utf-8").split("\n")
        return cls({tok: i for i, tok in enumerate(lines) if tok})

    def _word(self, word: str) -> tuple[int, ...]:
        got = self._cache.get(word)
        if got is not None:
            return got
        ids: list[int] = []
        if len(word) > _MAX_WORD:
            ids = [self.unk]
        else:
            start = 0
            while start < len(word):
                end, piece = len(word), None
                while start < end:
                    sub = word[start:end] if start == 0 else "##" + word[start:end]
                    if sub in self.vocab:
                        piece = self.vocab[sub]
                        break
                    end -= 1
                if piece is None:
                    ids = [self.unk]
                    break
                ids.append(piece)
                start = end
        result = tuple(ids)
        if len(self._cache) < 50_000:
            self._cache[word] = result
        return result

    def encode(self, text: str, max_len: int = 64) -> list[int]:
        ids = [self.cls]
        for w in _basic(text):
            ids.extend(self._word(w))
            if len(ids) >= max_len - 1:
                break
        return [*ids[: max_len - 1], self.sep]
