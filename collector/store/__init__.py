"""The collector's store: an interface (:class:`Store`) and its SQLite backend."""

from collector.store.base import (
    DeviceExists,
    NewCapture,
    Store,
    StoreBusy,
    StoreError,
    TokenError,
)
from collector.store.sqlite import SqliteStore, open_store

__all__ = [
    "DeviceExists",
    "NewCapture",
    "SqliteStore",
    "Store",
    "StoreBusy",
    "StoreError",
    "TokenError",
    "open_store",
]
