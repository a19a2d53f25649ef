"""The console's words in English and Welsh.

Templates write every user-visible string as ``{{ _("Text with {name}", name=...) }}``; Python
code that builds text for a page uses :func:`translator`. English is the text itself; other
languages look it up in ``i18n_<lang>.toml`` beside this module (a missing entry falls back to
the English text, and tests/console/test_welsh*.py check that no template string is missing
in Welsh).

Text built by the services (an action's label "Status: Closed", a four-eyes history line
"Four-eyes: approved (access until ...)") reaches a template already formatted. The
translator matches such text against the catalogue's keys with placeholders, so the key
``"Status: {status}"`` translates "Status: Closed" with its value translated in turn; the
services keep one English wording, shared with the exports and the CLI.

The safeguarding lead's title depends on the site (DSL in England, DSP in Wales: see
collector/domain/vocabulary.py); :func:`lead_namer` gives templates a function of the site.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Collection, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from collector.domain.vocabulary import LANGUAGES, lead_title, role_label

__all__ = ["LANGUAGES", "Translate", "best_language", "catalog", "lead_namer", "translator"]

Translate = Callable[..., str]
_FIELD = re.compile(r"\{(\w+)\}")


@lru_cache(maxsize=8)
def catalog(lang: str) -> dict[str, str]:
    """English text -> translation, for ``lang`` (empty for English or an unknown code)."""
    if lang == "en" or lang not in LANGUAGES:
        return {}
    path = Path(__file__).with_name(f"i18n_{lang}.toml")
    if not path.exists():
        return {}
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in data.get("strings", {}).items()}


@lru_cache(maxsize=8)
def _patterns(lang: str) -> list[tuple[re.Pattern[str], str, tuple[str, ...]]]:
    """(regex of an English key with placeholders, its translation, the placeholders),
    longest key first, for keys that start or end with literal text."""
    out = []
    for key, text in catalog(lang).items():
        names = tuple(_FIELD.findall(key))
        literal = _FIELD.sub("", key)
        if not names or len(literal.strip()) < 3:
            continue  # "{h} h" or "{start} to {end}" would match far too much
        seen: set[str] = set()
        rx = ""
        for i, part in enumerate(_FIELD.split(key)):
            if i % 2 == 0:
                rx += re.escape(part)
            else:  # a placeholder used twice matches the same text twice
                rx += f"(?P={part})" if part in seen else f"(?P<{part}>.+?)"
                seen.add(part)
        out.append((re.compile(rx + r"\Z", re.S), text, tuple(dict.fromkeys(names))))
    out.sort(key=lambda p: -len(p[0].pattern))
    return out


def translator(lang: str) -> Translate:
    """``_(text, **values)``: ``text`` in ``lang``, formatted with ``values``."""
    words = catalog(lang)

    def _(text: str, **values: Any) -> str:
        if not words:
            return text.format(**values) if values else text
        out = words.get(text)
        if out is None:
            if values:
                return text.format(**values)
            return _built(text) if text else text
        return out.format(**values) if values else out

    def _built(text: str, depth: int = 0) -> str:
        """Text a service formatted from a catalogue key (see the module docstring)."""
        if text in words:
            return words[text]
        if depth > 2:
            return text
        for rx, welsh, names in _patterns(lang):
            m = rx.match(text)
            if m:
                return welsh.format(**{n: _built(m.group(n), depth + 1) for n in names})
        return text

    return _


def lead_namer(_: Translate, wales_sites: Collection[str],
               user_sites: Iterable[str] = ()) -> Callable[..., str]:
    """``lead(site=None, long=False)`` for templates: the safeguarding lead's title at
    ``site`` (a site id), translated. Without a site: the user's own sites' title (DSP when
    every one of them is in Wales)."""
    mine = [s for s in user_sites if s != "*"]
    default = bool(mine) and all(s in wales_sites for s in mine)

    def lead(site: str | None = None, long: bool = False, role: str | None = None) -> str:
        wales = default if site is None else site in wales_sites
        if role is not None:
            return _(role_label(role, wales))
        return _(lead_title(wales, long=long))

    return lead


def best_language(accept_language: str) -> str:
    """The console language an ``Accept-Language`` header prefers (Welsh when it ranks
    cy above en; English otherwise)."""
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(accept_language.split(",")[:20]):
        tag, _sep, params = part.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            k, _e, v = p.strip().partition("=")
            if k == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        code = tag.strip().lower().split("-")[0]
        if code in LANGUAGES and q > 0:
            ranked.append((-q, i, code))
    return min(ranked)[2] if ranked else "en"
