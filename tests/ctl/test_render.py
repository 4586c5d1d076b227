"""The status table, JSON and progress bar of the ``flotilla`` command, from plain records."""

from __future__ import annotations

import json

from flotilla.node.ctl.render import (
    MemberInfo,
    StatusInfo,
    member_table,
    progress_bar,
    rows,
    summary,
    table,
    to_json,
)

M1, M2, M3, M4 = 0xA1, 0xB2, 0xC3, 0xD4
MEMBERS = [
    MemberInfo(M2, "m2", ("http://10.0.0.2:2379",), False),
    MemberInfo(M1, "m1", ("http://10.0.0.1:2379",), False),
    MemberInfo(M3, "m3", ("http://10.0.0.3:2379",), False),
    MemberInfo(M4, "", (), True),
]


def status(mid: int, applied: int, leader: int = M1, **kw: object) -> StatusInfo:
    return StatusInfo(mid, leader, 7, kw.pop("commit", 100), applied, "0.1.0", False, **kw)  # type: ignore[arg-type]


def test_rows_give_roles_lag_and_errors() -> None:
    got = rows(
        MEMBERS,
        {M1: status(M1, 100), M2: status(M2, 90, commit=95), M3: "UNAVAILABLE: connection refused"},
        {M1: "10.0.0.1:2379"},
    )
    by = {r.id: r for r in got}
    assert [r.name for r in got] == ["m1", "m2", "m3", "(not started)"]
    assert by["a1"].role == "leader" and by["a1"].lag == 0 and by["a1"].endpoint == "10.0.0.1:2379"
    assert by["b2"].role == "follower" and by["b2"].lag == 10  # behind the leader's commit
    assert by["b2"].endpoint == "http://10.0.0.2:2379"
    assert by["c3"].health == "unreachable" and by["c3"].error.startswith("UNAVAILABLE")
    assert by["c3"].term is None and by["c3"].lag is None
    assert by["d4"].role == "learner" and by["d4"].error == "no client URL"


def test_no_leader_and_alarms_make_a_member_unhealthy() -> None:
    got = rows(
        MEMBERS[:2],
        {M1: status(M1, 5, leader=0), M2: status(M2, 5, leader=0, errors=("alarm:NOSPACE",))},
    )
    assert [r.health for r in got] == ["unhealthy", "unhealthy"]
    assert got[1].error == "no leader; alarm:NOSPACE"
    assert summary(got).startswith("cluster NO QUORUM: leader none, 0/2")


def test_a_leader_that_does_not_answer_is_no_leader() -> None:
    got = rows(MEMBERS[:3], {M1: "UNAVAILABLE", M2: status(M2, 9), M3: status(M3, 9)})
    assert [r.health for r in got] == ["unreachable", "unhealthy", "unhealthy"]
    assert got[1].error == "its leader a1 does not answer as leader"
    assert summary(got).startswith("cluster NO QUORUM: leader none, 0/3")


def test_table_lines_up_columns_and_marks_unknowns() -> None:
    got = rows(MEMBERS[:3], {M1: status(M1, 100), M2: status(M2, 100), M3: "DEADLINE_EXCEEDED"})
    text = table(got)
    lines = text.splitlines()
    assert lines[0].split() == [
        "NAME", "ID", "ENDPOINT", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG", "VERSION",
        "HEALTH", "LAST", "ERROR",
    ]  # fmt: skip
    # Every column starts at the same offset on every line.
    start = lines[0].index("ROLE")
    assert [line[start:].split()[0] for line in lines[1:]] == ["leader", "follower", "unknown"]
    assert lines[3].split()[4:8] == ["-", "-", "-", "-"]
    assert summary(got) == "cluster OK: leader m1, 2/3 voters healthy (quorum 2)\n"


def test_json_has_every_field_with_nulls_for_unknowns() -> None:
    doc = json.loads(to_json(rows(MEMBERS[:2], {M1: status(M1, 100), M2: "gone"})))
    first, second = doc["members"]
    assert first == {
        "name": "m1",
        "id": "a1",
        "endpoint": "http://10.0.0.1:2379",
        "role": "leader",
        "term": 7,
        "commit": 100,
        "applied": 100,
        "lag": 0,
        "version": "0.1.0",
        "health": "healthy",
        "error": "",
    }
    assert second["applied"] is None and second["health"] == "unreachable"


def test_member_table_and_progress_bar() -> None:
    text = member_table(MEMBERS)
    assert text.splitlines()[1].split() == ["a1", "m1", "voter", "http://10.0.0.1:2379"]
    assert text.splitlines()[-1].split() == ["d4", "(not", "started)", "learner"]
    assert progress_bar(512 << 10, 1 << 20, width=10) == "[#####-----]  50% 0.5 MiB"
    assert progress_bar(3 << 20, None) == "3.0 MiB received"
