"""The crash-point switch: what it accepts, what it refuses, and that it is off by default."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flotilla.node import failpoints


def test_terms_parse_with_their_options() -> None:
    points = failpoints.parse(
        "raft.before_log_write=crash:after=3; snapshot.after_save=sleep:ms=20,p=0.5"
    )
    assert points["raft.before_log_write"].kind == "crash"
    assert points["raft.before_log_write"].after == 3
    assert points["snapshot.after_save"].sleep_ms == 20
    assert points["snapshot.after_save"].probability == 0.5


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("raft.before_log_wrte=crash", "unknown point"),
        ("raft.before_apply", "unknown point"),
        ("raft.before_apply=explode", "action must be crash or sleep"),
        ("raft.before_apply=crash:after=x", "bad option"),
        ("raft.before_apply=crash:when=1", "bad option"),
    ],
)
def test_mistakes_are_refused_by_name(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        failpoints.parse(spec)


def test_unset_means_a_no_op_bound_at_import() -> None:
    if os.environ.get("FLOTILLA_FAILPOINTS"):
        pytest.skip("failpoints are switched on in this environment")
    assert failpoints.hit is failpoints._noop


def test_a_crash_exits_at_the_nth_hit_with_its_own_status() -> None:
    code = (
        "from flotilla.node import failpoints\n"
        "for i in range(5):\n"
        "    print(i, flush=True)\n"
        "    failpoints.hit('raft.after_apply')\n"
    )
    env = dict(os.environ, FLOTILLA_FAILPOINTS="raft.after_apply=crash:after=3")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == failpoints.CRASH_EXIT_CODE
    assert out.stdout.split() == ["0", "1", "2"]
    assert "failpoint raft.after_apply: crash (hit 3)" in out.stderr
