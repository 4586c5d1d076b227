"""Fixtures for store tests: a real LevelDB in a temporary folder, no mocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kvharness import Harness


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path / "db")
    yield harness
    harness.close()
