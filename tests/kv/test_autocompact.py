"""Automatic compaction decides, from the clock and the revision alone, what etcd's would."""

from __future__ import annotations

import pytest

from flotilla.node.kv.autocompact import (
    PERIODIC,
    REVISION,
    Periodic,
    Revisional,
    parse_retention,
    policy,
)


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        (PERIODIC, "0", 0.0),
        (PERIODIC, "1", 3600.0),  # a bare number counts hours, as in etcd
        (PERIODIC, "72", 72 * 3600.0),
        (PERIODIC, "30m", 1800.0),
        (PERIODIC, "1h30m", 5400.0),
        (PERIODIC, "1.5h", 5400.0),
        (PERIODIC, "5s", 5.0),
        (PERIODIC, "250ms", 0.25),
        (REVISION, "1000", 1000.0),
        (REVISION, "0", 0.0),
    ],
)
def test_retention_reads_as_etcd_reads_it(mode: str, value: str, expected: float) -> None:
    assert parse_retention(mode, value) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("mode", "value"),
    [(PERIODIC, ""), (PERIODIC, "1d"), (PERIODIC, "m"), (PERIODIC, "-1"), (PERIODIC, "5s x"),
     (REVISION, "1h"), (REVISION, "-5"), ("daily", "1")],
)  # fmt: skip
def test_a_retention_that_means_nothing_is_refused(mode: str, value: str) -> None:
    with pytest.raises(ValueError):
        parse_retention(mode, value)


def test_zero_turns_it_off() -> None:
    assert policy(PERIODIC, 0.0) is None and policy(REVISION, 0.0) is None
    assert isinstance(policy(PERIODIC, 60.0), Periodic)
    assert isinstance(policy(REVISION, 10.0), Revisional)


def run(
    p: Periodic | Revisional,
    until: float,
    leader: bool = True,
    step: float = 0.1,
    start: float = 0.0,
) -> list[tuple[float, int]]:
    """Feed the policy a clock in steps, the revision being 10 per second; what it asked."""
    asked = []
    t = start
    while t <= until + 1e-9:
        rev = int(t * 10) + 1
        got = p.observe(round(t, 3), rev, leader)
        if got is not None:
            asked.append((round(t, 3), got))
        t += step
    return asked


def test_periodic_keeps_at_least_the_retention_and_compacts_each_period() -> None:
    p = Periodic(60.0)
    asked = run(p, 200.0)
    # First after one retention, then every retention (a minute is under the hour's cap).
    assert [t for t, _ in asked] == pytest.approx([60.0, 120.0, 180.0], abs=0.2)
    for t, rev in asked:
        # The newest sample at least 60 s old: never less history than the retention, and
        # at most one sampling interval (a tenth of the period) more.
        kept_seconds = t - (rev - 1) / 10
        assert 60.0 <= kept_seconds <= 66.0 + 0.2, (t, rev)


def test_periodic_compacts_hourly_when_the_retention_is_longer() -> None:
    p = Periodic(3 * 3600.0)
    asked = run(p, 6 * 3600.0, step=10.0)
    assert [t for t, _ in asked] == pytest.approx(
        [3 * 3600.0, 4 * 3600.0, 5 * 3600.0, 6 * 3600.0], abs=10
    )
    for t, rev in asked:
        assert 3 * 3600.0 <= t - (rev - 1) / 10 <= 3 * 3600.0 + 360.0 + 10


def test_only_the_leader_compacts_but_every_member_samples() -> None:
    p = Periodic(60.0)
    assert run(p, 100.0, leader=False) == []
    # A member that becomes leader knows the history's age at once.
    asked = run(p, 101.0, leader=True, start=100.1)
    assert len(asked) == 1
    t, rev = asked[0]
    assert t == pytest.approx(100.1) and 60.0 <= t - (rev - 1) / 10 <= 66.2


def test_periodic_samples_stay_bounded() -> None:
    p = Periodic(60.0)
    run(p, 3600.0, leader=False)
    assert len(p.samples) <= 12


def test_revision_compacts_every_five_minutes_keeping_the_last_n() -> None:
    p = Revisional(1000)
    asked = run(p, 1000.0, step=1.0)
    assert asked == [(300.0, 3001 - 1000), (600.0, 6001 - 1000), (900.0, 9001 - 1000)]


def test_revision_asks_nothing_while_there_is_too_little_history() -> None:
    p = Revisional(1_000_000)
    assert run(p, 1000.0, step=1.0) == []
