"""Checks shared by rule validation (rules/validate.py) and its v2 fields (rules/weights.py)."""

from __future__ import annotations

from .model import RuleError
from .normalise import normalise

__all__ = ["check_terms", "err"]


def err(
    file: str, line: int | None, rid: str | None, hint: str, key: str | None = None
) -> RuleError:
    """A :class:`RuleError` that remembers its key, so the file loader can point at the
    key's line."""
    error = RuleError(file, line, rid, hint)
    error.key = key  # type: ignore[attr-defined]
    return error


def check_terms(
    key: str, vals: tuple[str, ...], file: str, line: int | None, rid: str | None,
    seen: set[tuple[str, bool]] | None = None,
) -> None:
    """Every phrase in ``vals`` has 2+ letters after normalising and none duplicates
    another (or one already in ``seen``)."""
    seen = set() if seen is None else seen
    what = "exclusion" if key == "exclusions" else "phrase"
    where = "" if key in ("phrases", "exclusions") else f" in {key}"
    for p in vals:
        core = normalise(p[:-1] if p.endswith("*") else p)
        if len(core.replace(" ", "")) < 2:
            raise err(file, line, rid, key=key,
                      hint=f"{what} {p!r}{where} has fewer than 2 letters after "
                      "normalising: make it longer")
        key_ = (normalise(p[:-1] if p.endswith("*") else p, collapse=False), p.endswith("*"))
        if key_ in seen:
            raise err(file, line, rid, key=key,
                      hint=f"{what} {p!r}{where} duplicates another one after "
                      "normalising (case, leetspeak, separators): remove it")
        seen.add(key_)
