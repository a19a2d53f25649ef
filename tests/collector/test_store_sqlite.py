"""Runs the shared store suite against the SQLite backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.store.base import Store
from collector.store.sqlite import open_store
from tests.collector.store_suite import StoreSuite


class TestSqliteStore(StoreSuite):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        s = open_store(tmp_path / "vigil.db", tmp_path)
        yield s
        s.close()
