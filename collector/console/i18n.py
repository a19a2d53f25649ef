"""The console's words in English and Welsh.

Templates write every user-visible string as ``{{ _("Text with {name}", name=...) }}``; Python
code that builds text for a page uses :func:`translator`. English is the text itself; other
languages look it up in ``i18n_<lang>.toml`` beside this module (a missing entry falls back to
the English text, and tests/console check that no template string is missing in Welsh).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["LANGUAGES", "Translate", "catalog", "translator"]

#: language code -> its own name, as the language picker shows it
LANGUAGES: dict[str, str] = {"en": "English", "cy": "Cymraeg"}
Translate = Callable[..., str]


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


def translator(lang: str) -> Translate:
    words = catalog(lang)

    def _(text: str, **values: Any) -> str:
        out = words.get(text, text)
        return out.format(**values) if values else out

    return _
