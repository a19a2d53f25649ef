"""Collector processes for the trust benchmark: a PostgreSQL-backed data dir set up the way
``init`` and the technician CLI do it, and a second ``serve`` on an existing data dir (two
stateless collectors on one store, as in tests/e2e/test_failover.py)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.collector import RunningCollector, serve

__all__ = ["prepare_postgres", "serve_more"]


def prepare_postgres(data_dir: Path, url: str, rules_dir: Path, dsl_email: str) -> int:
    """What ``init`` did for the SQLite file, in the PostgreSQL database at ``url``: the
    default site with its DSL contact, the group, ``rules_dir`` published. Returns the
    published version."""
    from collector.config import load_config
    from collector.services import rules as rules_admin
    from collector.store import open_configured_store

    now = int(time.time() * 1000)
    store = open_configured_store(load_config(None, data_dir), url=url)
    try:
        store.ensure_site("default", "Default", now)
        store.set_site_contacts("default", [dsl_email], None)
        store.ensure_group("default", "secondary", "secondary")
        try:
            p = rules_admin.publish(store, data_dir, rules_dir, "cli:bench", now)
        except Exception:  # no learned model in this data dir: the rules alone
            p = rules_admin.publish(store, data_dir, rules_dir, "cli:bench", now, model="none")
        return int(p.version.version)
    finally:
        store.close()


def serve_more(data_dir: Path, name: str, timeout: float = 60) -> RunningCollector:
    """Another ``vigil-collector serve`` on ``data_dir`` (same config, PKI and store),
    returned once it prints ``ready``."""
    return serve(data_dir, data_dir / f"serve-{name}.log", name=name, timeout=timeout)
