"""Raft event log lines: fields on every event, and slow fsyncs reported at a bounded rate."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from flotilla.node import events
from flotilla.node.logs import _Json, _Text, setup_logging


def core(term: int = 3, commit: int = 40, applied: int = 39) -> Any:
    return SimpleNamespace(term=term, commit=commit, applied=applied)


def test_slow_fsyncs_are_reported_at_most_once_a_second(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "flotilla.raft")
    slow = events.SlowFsync()
    assert not slow.observe(core(), 0.05, now=100.0)  # fast: never reported
    assert slow.observe(core(), 0.25, now=100.0)
    assert not slow.observe(core(), 0.3, now=100.5)
    assert not slow.observe(core(), 0.4, now=100.9)
    assert slow.observe(core(), 0.2, now=101.1)
    first, second = (r for r in caplog.records)
    assert first.fields["duration_ms"] == 250.0 and first.fields["slow_writes"] == 1  # type: ignore[attr-defined]
    assert second.fields["slow_writes"] == 3  # type: ignore[attr-defined]
    assert second.fields["term"] == 3 and second.fields["index"] == 40  # type: ignore[attr-defined]


def test_fields_in_json_and_text() -> None:
    record = logging.LogRecord("flotilla.raft", logging.INFO, "", 0, "became leader", None, None)
    record.fields = {"term": 2, "index": 7, "voters": ["a", "b"], "joint": False}
    doc = json.loads(_Json("m1").format(record))
    assert doc["member"] == "m1" and doc["term"] == 2 and doc["voters"] == ["a", "b"]
    line = _Text("m1").format(record)
    assert line.endswith(" m1 became leader term=2 index=7 voters=a,b joint=false"), line


def test_a_call_cancelled_by_grpc_is_not_logged_as_an_error() -> None:
    """When a member stops, grpc.aio cancels the peers' streams still open and logs each as
    an unhandled exception with a traceback; that is how a stop ends calls, not an error."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging("m1")
        handler = root.handlers[0]
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)

    def record(name: str, exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException:
            return logging.LogRecord(
                name, logging.ERROR, __file__, 1, "Exception not handled", None, sys.exc_info()
            )

    assert not handler.filter(record("grpc._cython.cygrpc", asyncio.CancelledError()))
    assert handler.filter(record("grpc._cython.cygrpc", RuntimeError("a real one")))
    assert handler.filter(record("flotilla.node", asyncio.CancelledError()))
