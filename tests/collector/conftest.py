"""Fixtures for collector tests: a real collector subprocess on 127.0.0.1 port 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.collector import RunningCollector, start_collector


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCollector]:
    c = start_collector(tmp_path_factory.mktemp("collector"))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def fresh_collector(tmp_path: Path) -> Iterator[RunningCollector]:
    c = start_collector(tmp_path)
    try:
        yield c
    finally:
        c.stop()
