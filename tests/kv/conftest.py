"""Fixtures for store tests: a real LevelDB in a temporary folder, no mocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kvharness import Harness
from machine import Machine


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path / "db")
    yield harness
    harness.close()


@pytest.fixture
def m(tmp_path: Path) -> Iterator[Machine]:
    machine = Machine(tmp_path / "machine")
    yield machine
    machine.close()
