"""Runs the shared store suite against the SQLite backend, in both bulk-insert modes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.store.base import Store
from collector.store.sqlite import BULK_INSERT_MODES, open_store
from tests.collector.store_suite import StoreSuite


class TestSqliteStore(StoreSuite):
    @pytest.fixture(params=BULK_INSERT_MODES)
    def store(self, tmp_path: Path, request: pytest.FixtureRequest  # type: ignore[override]
              ) -> Iterator[Store]:
        s = open_store(tmp_path / "vigil.db", tmp_path, bulk_insert=request.param)
        yield s
        s.close()


def test_unknown_bulk_insert_mode_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"ingest\.bulk_insert"):
        open_store(tmp_path / "v.db", tmp_path, bulk_insert="fast")
