"""The exclusion list: windows and processes where typed keys are never matched."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .sources import WindowInfo

__all__ = ["Exclusions"]


@dataclass(frozen=True)
class Exclusions:
    """Case-insensitive substrings of window titles and process names."""

    windows: tuple[str, ...] = ()
    processes: tuple[str, ...] = ()

    @classmethod
    def of(cls, windows: Iterable[str], processes: Iterable[str]) -> Exclusions:
        return cls(tuple(w.casefold() for w in windows if w),
                   tuple(p.casefold() for p in processes if p))

    def excludes(self, window: WindowInfo | None) -> bool:
        if window is None:
            return False
        if window.password_field:
            return True
        title, proc = window.title.casefold(), window.process.casefold()
        return any(w in title for w in self.windows) or any(p in proc for p in self.processes)
