"""Fixtures for the hardening suite: a real collector subprocess (no mocks anywhere)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.collector import RunningCollector, start_collector


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCollector]:
    c = start_collector(tmp_path_factory.mktemp("hardening-collector"))
    try:
        yield c
    finally:
        c.stop()
