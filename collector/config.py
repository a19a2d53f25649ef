"""Collector configuration: code defaults < TOML file < command-line flags.

Every key is documented in docs/configuration.md (section ``[collector.*]``).
A wrong key, a wrong type or a missing file raises :class:`ConfigError`, naming the file,
the key and the fix.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

__all__ = [
    "DATA_DIR_ENV",
    "AlertsConfig",
    "Config",
    "ConfigError",
    "EnrolConfig",
    "IngestConfig",
    "ReportsConfig",
    "RetentionConfig",
    "ServerConfig",
    "SmtpConfig",
    "StoreConfig",
    "TriageConfig",
    "default_data_dir",
    "load_config",
]


class ConfigError(Exception):
    """A configuration problem; the message names the file, the key and the fix."""


#: Names the data dir for every command run without ``--data-dir`` (scripts/quickstart's
#: env file sets it to the demo's collector).
DATA_DIR_ENV = "VIGIL_COLLECTOR_DATA_DIR"


def default_data_dir() -> Path:
    """``$VIGIL_COLLECTOR_DATA_DIR``, else platformdirs' user data dir for vigil-collector."""
    override = os.environ.get(DATA_DIR_ENV)
    return Path(override) if override else Path(platformdirs.user_data_dir("vigil-collector"))


@dataclass
class ServerConfig:
    listen: str = "0.0.0.0:7443"          # mTLS stream port
    enroll_listen: str = "0.0.0.0:7444"   # TLS enrolment port
    console_listen: str = "127.0.0.1:8443"
    public_url: str = ""                  # base URL of the console used in alert links
    allowed_hosts: list[str] = field(default_factory=lambda: ["localhost", "127.0.0.1"])
    # reverse proxies (addresses or CIDR networks) whose X-Forwarded-For the console believes
    trusted_proxies: list[str] = field(default_factory=list)
    rules_poll_seconds: float = 1.0       # how often serve looks for a newly published bundle
    max_connections: int = 20000          # agent streams held at once; more are told to retry
    model_fetch_concurrency: int = 50     # model downloads served at once; more are told to retry
    model_fetch_retry_after_ms: int = 5000  # what agents over that limit are told to wait


@dataclass
class EnrolConfig:
    rate_per_second: float = 5.0          # token bucket refill, per client address
    burst: int = 20


@dataclass
class IngestConfig:
    batch_max: int = 5000                 # captures per commit
    queue_max: int = 200_000              # captures waiting for the writer before back-off
    backoff_ms: int = 5000                # what agents are told when the store cannot take more
    busy_timeout_ms: int = 2000
    max_context_chars: int = 500
    max_title_chars: int = 500
    max_match_chars: int = 200
    max_screenshot_bytes: int = 4 * 1024 * 1024
    heartbeat_seconds: int = 60           # sent to agents in AgentConfig
    context_chars: int = 120
    screenshot_min_severity: int = 4
    excluded_windows: list[str] = field(default_factory=list)
    excluded_processes: list[str] = field(default_factory=list)
    # refuse captures whose rule id, category, source or severity no published rule allows
    check_rules: bool = True


@dataclass
class TriageConfig:
    dedupe_window_minutes: int = 60
    timezone: str = "Europe/London"
    late_night_start_hour: int = 23
    late_night_end_hour: int = 6


@dataclass
class SmtpConfig:
    host: str = ""                        # empty = email alerts disabled (logged)
    port: int = 25
    sender: str = "vigil@localhost"
    username: str = ""
    password: str = ""
    starttls: bool = False
    timeout_seconds: float = 10.0


@dataclass
class AlertsConfig:
    min_priority: int = 90                # alert for any queue item at or above this priority
    ack_minutes: int = 30                 # re-alert the next contact after this long
    check_seconds: float = 30.0
    webhook_timeout_seconds: float = 5.0


@dataclass
class RetentionConfig:
    false_positive_days: int = 30
    closed_days: int = 365
    audit_days: int = 7 * 365
    purge_interval_hours: float = 24.0
    model_artefacts: int = 0              # published model artefacts kept (0 = all; min 3)


@dataclass
class ReportsConfig:
    # `serve` emails each site's weekly summary to its DSL contacts once a week, at this day
    # and hour in triage.timezone ("" = off, e.g. when cron runs `report weekly --email`).
    weekly_day: str = "monday"
    weekly_hour: int = 7
    weekly_check_seconds: float = 60.0    # how often serve looks whether it is due


@dataclass
class StoreConfig:
    # "" = the embedded SQLite file <data dir>/vigil.db; "postgresql://user@host:5432/vigil"
    # = PostgreSQL (several collectors may share it). `serve --store URL` overrides it.
    url: str = ""
    trust_id: str = "default"             # tenant label on every PostgreSQL row
    pool_max: int = 8                     # PostgreSQL connections per store, per process


@dataclass
class Config:
    data_dir: Path = field(default_factory=default_data_dir)
    server: ServerConfig = field(default_factory=ServerConfig)
    enrolment: EnrolConfig = field(default_factory=EnrolConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    triage: TriageConfig = field(default_factory=TriageConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    reports: ReportsConfig = field(default_factory=ReportsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "vigil.db"


_SECTIONS = {f.name for f in dataclasses.fields(Config)} - {"data_dir"}


def _apply(obj: Any, table: dict[str, Any], path: Path, prefix: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{path}: unknown key '{dotted}'. Known keys here: {known}")
        current = getattr(obj, key)
        expected: type = type(current)
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ConfigError(
                f"{path}: key '{dotted}' must be {expected.__name__}, got "
                f"{type(value).__name__} ({value!r}); fix the value in the file"
            )
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: key '{dotted}' must be a list of strings, got "
                              f"{value!r}; quote each entry")
        setattr(obj, key, value)


def load_config(path: Path | None = None, data_dir: Path | None = None) -> Config:
    """Build the config. ``path`` None means <data dir>/collector.toml if it exists."""
    cfg = Config()
    if data_dir is not None:
        cfg.data_dir = data_dir
    explicit = path is not None
    path = path or cfg.data_dir / "collector.toml"
    if not path.exists():
        if explicit:
            raise ConfigError(f"{path}: config file not found; check the --config path")
        return cfg
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") \
            from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    for key, value in raw.items():
        if key == "data_dir":
            if not isinstance(value, str):
                raise ConfigError(f"{path}: key 'data_dir' must be a string path")
            if data_dir is None:
                cfg.data_dir = Path(value)
            continue
        if key not in _SECTIONS:
            raise ConfigError(
                f"{path}: unknown section '[{key}]'. Known: {', '.join(sorted(_SECTIONS))}"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: '{key}' must be a [{key}] table")
        _apply(getattr(cfg, key), value, path, f"{key}.")
    return cfg
