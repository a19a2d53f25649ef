"""Fixtures for the agent's tests: a test rule library, a real mini collector, a data dir."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.config import Config
from agent.paths import DataDir
from tests.agent.minicollector import MiniCollector

LIBRARY = {
    "self_harm.toml": '''
category = "self_harm"
[[rule]]
id = "self_harm.test"
severity = 4
phrases = ["cut myself", "want to disappear"]
sources = ["keys", "window"]
screenshot = true
''',
    "bullying.toml": '''
category = "bullying"
[[rule]]
id = "bullying.test"
severity = 2
phrases = ["nobody likes you"]
sources = ["keys", "window"]
screenshot = false
''',
    "circumvention.toml": '''
category = "circumvention"
[[rule]]
id = "circumvention.proxy"
severity = 2
phrases = ["unblocked games"]
sources = ["window"]
screenshot = false
[[rule]]
id = "circumvention.any_usb"
severity = 1
phrases = []
sources = ["media"]
on_mount = true
screenshot = false
[[rule]]
id = "circumvention.exam_file"
severity = 3
phrases = ["exam answers"]
sources = ["media"]
screenshot = false
''',
    "csam.toml": '''
category = "csam"
[[rule]]
id = "csam.test"
severity = 5
phrases = ["forbidden test phrase"]
sources = ["keys", "window"]
''',
}


def write_library(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in LIBRARY.items():
        (root / name).write_text(text)
    return root


@pytest.fixture
def library(tmp_path: Path) -> Path:
    return write_library(tmp_path / "library")


@pytest.fixture
def data(tmp_path: Path) -> DataDir:
    return DataDir(tmp_path / "data").ensure()


@pytest.fixture
def config(library: Path) -> Config:
    return Config(rules_library=str(library), backoff_initial_seconds=0.05,
                  backoff_max_seconds=0.5, heartbeat_seconds=1)


@pytest.fixture
async def collector() -> AsyncIterator[MiniCollector]:
    c = await MiniCollector().start()
    yield c
    await c.stop()
