"""Pure presentation of a cluster's state: member rows, the status table, JSON, progress.

Nothing here talks to a member: ``rows`` takes what the client gathered (the member list and
one ``Status`` answer or error per member) so every way of showing it is testable alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class MemberInfo:
    """One entry of the cluster's member list."""

    id: int
    name: str
    client_urls: tuple[str, ...]
    is_learner: bool


@dataclass(frozen=True)
class StatusInfo:
    """What one member said about itself (Maintenance.Status)."""

    id: int
    leader: int
    term: int
    commit: int
    applied: int
    version: str
    is_learner: bool
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class MemberRow:
    name: str
    id: str
    endpoint: str
    role: str
    term: int | None
    commit: int | None
    applied: int | None
    lag: int | None
    version: str
    health: str
    error: str


COLUMNS = (
    ("NAME", "name"),
    ("ID", "id"),
    ("ENDPOINT", "endpoint"),
    ("ROLE", "role"),
    ("TERM", "term"),
    ("COMMIT", "commit"),
    ("APPLIED", "applied"),
    ("LAG", "lag"),
    ("VERSION", "version"),
    ("HEALTH", "health"),
    ("LAST ERROR", "error"),
)


def rows(
    members: Sequence[MemberInfo],
    statuses: Mapping[int, StatusInfo | str],
    where: Mapping[int, str] | None = None,
) -> list[MemberRow]:
    """One row per member; ``statuses`` maps member id to its answer or the error it gave,
    ``where`` to the endpoint that was asked (default: the member's first client URL).

    The lag is measured against the leader's commit index as the leader reported it, so a
    follower that applies slowly (or a learner still catching up) shows how far behind it is.
    """
    answers = {mid: s for mid, s in statuses.items() if isinstance(s, StatusInfo)}
    leaders = {s.leader for s in answers.values() if s.leader}
    confirmed = {mid for mid, s in answers.items() if s.leader == mid}
    leader_status = next((answers[lid] for lid in leaders if lid in answers), None)
    reference = (
        leader_status.commit
        if leader_status
        else max((s.commit for s in answers.values()), default=None)
    )
    out = []
    for m in sorted(members, key=lambda m: (m.is_learner, m.name, m.id)):
        got = statuses.get(m.id, "no client URL" if not m.client_urls else "not asked")
        endpoint = (where or {}).get(m.id) or (m.client_urls[0] if m.client_urls else "")
        if isinstance(got, str):
            role = "learner" if m.is_learner else "unknown"
            out.append(
                MemberRow(
                    m.name or "(not started)",
                    f"{m.id:x}",
                    endpoint,
                    role,
                    None,
                    None,
                    None,
                    None,
                    "",
                    "unreachable",
                    got,
                )
            )
            continue
        if got.is_learner:
            role = "learner"
        elif got.leader == got.id:
            role = "leader"
        else:
            role = "follower"
        problems = list(got.errors)
        if not got.leader:
            problems.insert(0, "no leader")
        elif got.leader not in confirmed:
            # A follower keeps naming its last leader until an election succeeds: only a
            # leader that answers as leader counts.
            problems.insert(0, f"its leader {got.leader:x} does not answer as leader")
        lag = None if reference is None else max(0, reference - got.applied)
        out.append(
            MemberRow(
                m.name,
                f"{m.id:x}",
                endpoint,
                role,
                got.term,
                got.commit,
                got.applied,
                lag,
                got.version,
                "unhealthy" if problems else "healthy",
                "; ".join(problems),
            )
        )
    return out


def _cell(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def table(members: Sequence[MemberRow]) -> str:
    """A fixed-width table, one member per line, as ``etcdctl -w table`` reads at a glance."""
    header = [title for title, _ in COLUMNS]
    body = [[_cell(getattr(r, field)) for _, field in COLUMNS] for r in members]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in [header, *body]
    ]
    return "\n".join(lines) + "\n"


def summary(members: Sequence[MemberRow]) -> str:
    """One line under the table: is the cluster usable, and who leads."""
    leaders = [r.name for r in members if r.role == "leader"]
    voters = [r for r in members if r.role != "learner"]
    healthy = sum(1 for r in voters if r.health == "healthy")
    quorum = len(voters) // 2 + 1
    state = (
        "OK" if leaders and healthy >= quorum else "NO QUORUM" if healthy < quorum else "NO LEADER"
    )
    lead = leaders[0] if leaders else "none"
    return (
        f"cluster {state}: leader {lead}, "
        f"{healthy}/{len(voters)} voters healthy (quorum {quorum})\n"
    )


def to_json(members: Sequence[MemberRow]) -> str:
    return json.dumps({"members": [asdict(r) for r in members]}, indent=2) + "\n"


def member_table(members: Sequence[MemberInfo]) -> str:
    """``flotilla members list``: id, name, role and client URLs."""
    lines = []
    for m in sorted(members, key=lambda m: (m.is_learner, m.name, m.id)):
        role = "learner" if m.is_learner else "voter"
        lines.append((f"{m.id:x}", m.name or "(not started)", role, ",".join(m.client_urls)))
    header = ("ID", "NAME", "ROLE", "CLIENT URLS")
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(4)]
    return "".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n"
        for line in [header, *lines]
    )


def progress_bar(done: int, total: int | None, width: int = 30) -> str:
    """``[#####-----]  42% 12.0 MiB`` (no total known yet: just the bytes so far)."""
    mib = f"{done / (1 << 20):.1f} MiB"
    if not total:
        return f"{mib} received"
    frac = min(1.0, done / total)
    filled = int(frac * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {frac * 100:3.0f}% {mib}"
