"""Agent configuration: defaults in code < TOML file < command-line flags.

Every key is typed; a wrong key, a wrong type or a missing file raises :class:`ConfigError`
naming the file, the key and the fix.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_EXCLUDED_PROCESSES", "DEFAULT_EXCLUDED_WINDOWS",
           "DEFAULT_SEARCH_PAGE_TITLES", "MAX_CONTEXT_CHARS",
           "Config", "ConfigError",
           "load_config"]

#: The most context around a hit the agent will ever keep or send, whatever a config file or
#: the collector asks for: the privacy bound is enforced on the laptop, not on the server.
MAX_CONTEXT_CHARS = 500

#: Window-title entries (whole words, case-insensitive; see agent/exclusion.py) where typed
#: keys are never matched.
DEFAULT_EXCLUDED_WINDOWS: tuple[str, ...] = (
    "password", "passwort", "keepass", "keepassxc", "1password", "bitwarden", "lastpass",
    "dashlane", "sign in", "signin", "log in", "login", "logon",
)
#: Title fragments of search results pages, where title entries do not apply.
DEFAULT_SEARCH_PAGE_TITLES: tuple[str, ...] = (
    " - google search", " - bing", " at duckduckgo", " - duckduckgo", " - ecosia",
    " - yahoo search", " - search",
)
#: Process names (whole words, case-insensitive) where typed keys are never matched.
DEFAULT_EXCLUDED_PROCESSES: tuple[str, ...] = (
    "keepass", "keepassxc", "1password", "bitwarden", "lastpass", "dashlane", "pinentry",
    "gnome-keyring", "seahorse", "polkit", "ssh-askpass",
)


class ConfigError(Exception):
    """A configuration problem, with the file, the key and what to do about it."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None,
                 hint: str = "") -> None:
        self.file, self.key, self.hint = file, key, hint
        where = ""
        if file:
            where += f"{file}: "
        if key:
            where += f"key '{key}': "
        super().__init__(f"{where}{message}" + (f" ({hint})" if hint else ""))


@dataclass(frozen=True)
class Config:
    """Every agent setting, with its default. Documented in docs/configuration.md."""

    #: Collector stream address HOST:PORT (mTLS). Empty: the one recorded at enrolment.
    collector: str = ""
    #: Age band for rule selection; empty until enrolment/AgentConfig sets it.
    group: str = ""
    #: Maximum characters of context kept around a hit.
    context_chars: int = 120
    #: Screenshots only for rules that allow them and at or above this severity (1..5; 6 = off).
    screenshot_min_severity: int = 4
    heartbeat_seconds: int = 30
    #: Same rule in the same window within this many seconds merges into one capture while
    #: it waits in the spool (once sent, the collector's queue counts repeats in one item).
    merge_seconds: int = 60
    #: Typing context resets after this many seconds without a key.
    idle_reset_seconds: int = 30
    #: After this many seconds without a key, a phrase complete on screen is released (and
    #: the scorer sees the text) without ending the context.
    idle_release_seconds: float = 2.0
    #: After a key that may move the focus (Tab, Enter, a click), keys wait at most this
    #: long for the accessibility API to say whether a password field now has focus.
    focus_settle_seconds: float = 0.5
    #: Most characters of a paste read from the clipboard/primary selection (in memory).
    paste_max_chars: int = 2000
    #: What a screenshot shows: "window" (the focused window only) or "screen" (everything).
    screenshot_scope: str = "window"
    spool_max_bytes: int = 50 * 1024 * 1024
    batch_size: int = 100
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    excluded_windows: tuple[str, ...] = DEFAULT_EXCLUDED_WINDOWS
    excluded_processes: tuple[str, ...] = DEFAULT_EXCLUDED_PROCESSES
    #: Title fragments of search results pages: window-title exclusions do not apply there.
    search_page_titles: tuple[str, ...] = DEFAULT_SEARCH_PAGE_TITLES
    media_roots: tuple[str, ...] = ("/media", "/run/media", "/mnt")
    #: Rule library folder used until the first signed bundle arrives (empty: shipped one).
    rules_library: str = ""
    #: Run the learned sentence scorer at each boundary (in memory, on the laptop).
    scorer: bool = True
    #: Scorer artefact folder (empty: the one shipped in the package).
    scorer_model: str = ""
    watch_window: bool = True
    watch_keys: bool = True
    watch_media: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in dataclasses.fields(Config) if f.name != "extra"}
_DEFAULTS = Config()
_OTHER_TABLES = frozenset({"agent", "enroll"})


def _coerce(name: str, value: Any, file: str | None) -> Any:
    default = getattr(_DEFAULTS, name)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {value!r}", file=file, key=name,
                              hint="write it as true or false without quotes")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"expected a whole number >= 0, got {value!r}", file=file,
                              key=name, hint=f"the default is {default}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"expected a number >= 0, got {value!r}", file=file, key=name,
                              hint=f"the default is {default}")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"expected a list of strings, got {value!r}", file=file,
                              key=name, hint='write it like ["a", "b"]')
        return tuple(value)
    if not isinstance(value, str):
        raise ConfigError(f"expected a string, got {value!r}", file=file, key=name,
                          hint="put the value in double quotes")
    return value


def _validate(cfg: Config, file: str | None) -> Config:
    if not 1 <= cfg.screenshot_min_severity <= 6:
        raise ConfigError("must be between 1 and 6 (6 turns screenshots off)", file=file,
                          key="screenshot_min_severity")
    if not 10 <= cfg.context_chars <= MAX_CONTEXT_CHARS:
        raise ConfigError(f"must be between 10 and {MAX_CONTEXT_CHARS}", file=file,
                          key="context_chars")
    if cfg.screenshot_scope not in ("window", "screen"):
        raise ConfigError(f"expected \"window\" or \"screen\", got {cfg.screenshot_scope!r}",
                          file=file, key="screenshot_scope")
    if cfg.batch_size < 1:
        raise ConfigError("must be at least 1", file=file, key="batch_size")
    if cfg.collector and ":" not in cfg.collector:
        raise ConfigError(f"expected HOST:PORT, got {cfg.collector!r}", file=file,
                          key="collector", hint="for example collector.school.uk:7443")
    return cfg


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Build the config: code defaults, then the TOML file at *path*, then *overrides*.

    Overrides whose value is ``None`` are ignored (an unset command-line flag).
    """
    values: dict[str, Any] = {}
    fname = str(path) if path is not None else None
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("file not found", file=fname,
                              hint="check the --config path or remove the flag") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}", file=fname,
                              hint="fix the syntax at the position shown") from None
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", file=fname) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not UTF-8 text (byte {exc.start})", file=fname,
                              hint="save the file as UTF-8") from None
        # [agent] holds the settings; [enroll] belongs to the session launcher (installers).
        section = data.get("agent", {k: v for k, v in data.items() if k not in _OTHER_TABLES})
        if not isinstance(section, dict):
            raise ConfigError("[agent] must be a table", file=fname, key="agent")
        for key, value in section.items():
            if key not in _FIELDS:
                raise ConfigError("unknown key", file=fname, key=key,
                                  hint="known keys: " + ", ".join(sorted(_FIELDS)))
            values[key] = _coerce(key, value, fname)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in _FIELDS:
            raise ConfigError("unknown setting", key=key)
        values[key] = _coerce(key, value, None)
    return _validate(Config(**values), fname)
