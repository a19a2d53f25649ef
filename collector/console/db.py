"""Which store the console works on: ``open_console_store`` opens the collector's SQLite
store for a path (core and console migrations applied); any store object with the console
repositories (a PostgresStore too) can be handed to ``create_app(store=...)`` instead."""

from __future__ import annotations

from pathlib import Path

from collector.store import console_schema
from collector.store.sqlite import SqliteStore, open_store

__all__ = ["migrate_all", "open_console_store"]


def migrate_all(db_path: Path) -> None:
    """Apply the core and the console migrations to a SQLite file (both are idempotent)."""
    console_schema.migrate_file(Path(db_path))


def open_console_store(db_path: Path, data_dir: Path | None = None) -> SqliteStore:
    """The collector's SQLite store at ``db_path`` (migrated), with the console repositories."""
    return open_store(Path(db_path), Path(data_dir) if data_dir else None)
