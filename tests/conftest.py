"""Suite-wide hooks."""

from __future__ import annotations

import os
import sys

import pytest

from tests.node.procs import FAILED

_exit_status: list[int] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Remember whether a test's body failed, so fixtures can show the members' logs."""
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave as soon as pytest is done, with its exit status.

    After the summary pytest runs gc.collect() a few times; collecting the last grpc.aio
    objects can join grpc's poller thread, which never ends, and the process would hang
    forever. Everything pytest reports (summary, the last-failed cache) is written by now.
    """
    if _exit_status:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])
