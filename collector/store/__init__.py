"""The collector's store: an interface (:class:`Store`) and its two backends, SQLite (the
embedded default) and PostgreSQL (``--store postgresql://...``, for trusts)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from collector.store.base import (
    DeviceExists,
    NewCapture,
    Store,
    StoreBusy,
    StoreError,
    TokenError,
)
from collector.store.sqlite import SqliteStore, open_store

if TYPE_CHECKING:
    from collector.config import Config
    from collector.store.postgres import PostgresStore

__all__ = [
    "DeviceExists",
    "NewCapture",
    "SqliteStore",
    "Store",
    "StoreBusy",
    "StoreError",
    "TokenError",
    "is_postgres_url",
    "open_configured_store",
    "open_store",
]

_PG_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(url: str) -> bool:
    return url.startswith(_PG_SCHEMES)


def open_configured_store(cfg: Config, url: str | None = None, migrate: bool = True,
                          busy_timeout_ms: int | None = None) -> SqliteStore | PostgresStore:
    """The store the configuration names: ``url`` (the ``--store`` flag) or config key
    ``store.url``; empty means SQLite at ``cfg.db_path``. Raises ConfigError for a URL
    that is neither, and StoreBusy when PostgreSQL cannot be reached."""
    from collector.config import ConfigError

    url = cfg.store.url if url is None else url
    if not url:
        if busy_timeout_ms is None:
            return open_store(cfg.db_path, cfg.data_dir, migrate=migrate)
        return open_store(cfg.db_path, cfg.data_dir, busy_timeout_ms, migrate=migrate)
    if not is_postgres_url(url):
        raise ConfigError(f"store url {url!r} is not supported: use postgresql://user@host/db "
                          "or leave store.url empty for the SQLite file in the data dir")
    try:
        from collector.store.postgres import open_postgres_store
    except ImportError as exc:  # psycopg is the optional [postgres] extra
        raise ConfigError(f"store url is PostgreSQL but psycopg is not installed ({exc}); "
                          "pip install 'vigil[postgres]'") from None
    try:
        return open_postgres_store(url, cfg.data_dir, cfg.store.trust_id,
                                   pool_max=cfg.store.pool_max, migrate=migrate)
    except ValueError as exc:
        raise ConfigError(f"store: {exc}") from None
