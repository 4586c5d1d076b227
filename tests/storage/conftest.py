"""Fixtures for storage tests: a real LevelDB in a temporary data dir, no mocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from datadir import DataDir


@pytest.fixture
def dd(tmp_path: Path) -> Iterator[DataDir]:
    d = DataDir(tmp_path)
    yield d
    d.close()
