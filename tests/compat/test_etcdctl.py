"""The real ``etcdctl`` (3.4) against a Flotilla cluster and a real etcd cluster, side by side.

Every test runs one scenario against both clusters and asserts that ``etcdctl`` shows the
same thing, after normalizing what legitimately differs (see ``compare``). Known differences
are expected failures that name the difference; they pass again once it is fixed.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.node.procs import free_ports, wait_for

from .clusters import Target
from .compare import Background, Mismatch, Norm, run, same

pytestmark = pytest.mark.compat

Targets = dict[str, Target]


def revision_of(doc: dict[str, Any]) -> int:
    return int(doc["header"]["revision"])


def test_initial_revision(targets: Targets) -> None:
    """An empty etcd store is at revision 1, so its first write is revision 2."""
    got = {name: t.initial_revision for name, t in targets.items()}
    assert got["etcd"] == 1, got
    if got["flotilla"] != 1:
        raise Mismatch(f"flotilla's empty store is at revision {got['flotilla']}, etcd's at 1")


def test_hashkv_compact_revision(targets: Targets) -> None:
    """etcd answers -1 before any compaction, else the compacted revision.

    First in the file: it tells the difference only before any test compacts.
    """

    def scenario(t: Target) -> object:
        docs = t.json_lines("endpoint", "hashkv")
        compacted = {d["HashKV"].get("compact_revision", "absent") for d in docs}
        assert len(compacted) == 1, compacted
        value = compacted.pop()
        return "never compacted" if value == -1 else "compacted" if value != "absent" else value

    same(targets, scenario)


# -- put / get / del -----------------------------------------------------------------------


def serializable_everywhere(t: Target, key: str) -> list[str]:
    """A serializable read on each member, once each has applied the last write.

    Serializable reads come from the member's own applied state, which may trail the write
    that was just acknowledged by another member for a moment, in etcd as in Flotilla.
    """
    latest = t.ctl("get", key, "--print-value-only").stdout

    def read(ep: str) -> str | None:
        out = t.ctl("get", key, "--consistency=s", endpoints=ep).stdout
        return out if out.endswith(latest) else None

    return [
        wait_for(f"[{t.name}] {ep} to apply the write", functools.partial(read, ep))
        for ep in t.member_endpoints
    ]


def test_put_get_simple_and_prev_kv(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        n = Norm(t)
        return [
            run(t, "put", "pg/a", "1"),
            run(t, "put", "pg/a", "2", "--prev-kv"),
            run(t, "get", "pg/a"),
            run(t, "get", "pg/a", "--print-value-only"),
            serializable_everywhere(t, "pg/a"),
            n.doc(t.json("get", "pg/a")),
            run(t, "get", "pg/missing"),
            n.doc(t.json("get", "pg/missing")),
        ]

    same(targets, scenario)


def test_get_ranges_limits_and_sorting(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        n = Norm(t)
        for key, value in [("gr/c", "1"), ("gr/a", "3"), ("gr/b", "2"), ("gr/a", "4")]:
            t.ctl("put", key, value)
        t.ctl("put", "gs", "outside")
        out = [
            run(t, "get", "gr/", "--prefix"),
            run(t, "get", "gr/a", "gr/c"),
            run(t, "get", "gr/b", "--from-key", "--keys-only"),
            run(t, "get", "gr/", "--prefix", "--keys-only"),
            run(t, "get", "gr/", "--prefix", "--limit=2"),
            n.doc(t.json("get", "gr/", "--prefix", "--limit=2")),
            run(t, "get", "gr/", "--prefix", "--print-value-only"),
        ]
        for sort_by in ["KEY", "VALUE", "VERSION", "CREATE", "MODIFY"]:
            for order in ["ASCEND", "DESCEND"]:
                out.append(
                    run(t, "get", "gr/", "--prefix", f"--sort-by={sort_by}", f"--order={order}")
                )
        out.append(n.doc(t.json("get", "gr/", "--prefix", "--sort-by=MODIFY", "--order=DESCEND")))
        return out

    same(targets, scenario)


def test_get_at_revision(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        n = Norm(t)
        first = revision_of(t.json("put", "rv/k", "v1"))
        t.ctl("put", "rv/k", "v2")
        t.ctl("del", "rv/k")
        return [
            run(t, "get", "rv/k", f"--rev={first}"),
            run(t, "get", "rv/k", f"--rev={first + 1}"),
            run(t, "get", "rv/k", f"--rev={first + 2}"),
            n.doc(t.json("get", "rv/k", f"--rev={first + 1}")),
            run(t, "get", "rv/k", f"--rev={first + 100000}"),
        ]

    same(targets, scenario)


def test_get_fields_output(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        n = Norm(t)
        t.ctl("put", "fo/k", "v")
        lines = []
        for line in t.ctl("get", "fo/k", "-w", "fields").stdout.splitlines():
            name, _, value = line.partition(" : ")
            if name.strip('"') in {"ClusterID", "MemberID", "RaftTerm"}:
                continue
            if name.strip('"') in {"Revision", "CreateRevision", "ModRevision"}:
                value = str(n.rev(int(value)))
            lines.append((name, value))
        return lines

    same(targets, scenario)


def test_delete_forms(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        n = Norm(t)
        for key in ["dl/a", "dl/b", "dl/c", "dl/d", "dl/e/1", "dl/e/2", "dm"]:
            t.ctl("put", key, key.upper())
        return [
            run(t, "del", "dl/a"),
            run(t, "del", "dl/a"),
            run(t, "del", "dl/b", "--prev-kv"),
            run(t, "del", "dl/c", "dl/e"),
            n.doc(t.json("del", "dl/e/", "--prefix", "--prev-kv")),
            run(t, "del", "dl/", "--from-key"),
            run(t, "get", "dl", "--prefix"),
            run(t, "get", "dm"),
        ]

    same(targets, scenario)


def test_request_errors(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        return [
            run(t, "put", "", "x"),
            run(t, "get", "er/k", "--rev=99999999"),
            run(t, "put", "er/k", "v", "--lease=1234"),
            run(t, "put", "er/k", "--ignore-value"),
            run(t, "put", "er/k", "v", "--ignore-lease"),
        ]

    same(targets, scenario)


# -- txn -----------------------------------------------------------------------------------


TXN_SUCCESS = """value("tx/k") = "v1"
mod("tx/k") > "0"

put tx/k v2
get tx/k
del tx/gone

put tx/failed yes

"""

TXN_FAILURE = """value("tx/k") = "v1"
version("tx/k") = "1"

put tx/never yes

put tx/failed yes
get tx/k
del tx/k --prev-kv

"""

TXN_RANGE = """create("tx/k") > "0"
value("tx/other") < "z"

get tx/ --prefix

del tx/ --prefix

"""


def test_txn_success_and_failure_branches(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        n = Norm(t)
        t.ctl("put", "tx/k", "v1")
        t.ctl("put", "tx/gone", "x")
        out: list[object] = [run(t, "txn", stdin=TXN_SUCCESS)]
        out.append(run(t, "get", "tx/", "--prefix"))
        out.append(run(t, "txn", "--interactive", stdin=TXN_FAILURE))
        out.append(run(t, "get", "tx/", "--prefix"))
        out.append(n.doc(json.loads(t.ctl("txn", "-w", "json", stdin=TXN_RANGE).stdout)))
        out.append(run(t, "txn", stdin='value("tx/k" = "x"\n\n\n\n'))
        return out

    same(targets, scenario)


def test_txn_json_output(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        n = Norm(t)
        t.ctl("put", "tj/k", "v1")
        doc = json.loads(t.ctl("txn", "-w", "json", stdin=TXN_SUCCESS.replace("tx/", "tj/")).stdout)
        doc2 = json.loads(
            t.ctl("txn", "-w", "json", stdin=TXN_FAILURE.replace("tx/", "tj/")).stdout
        )
        return [n.doc(doc), n.doc(doc2)]

    same(targets, scenario)


# -- watch ---------------------------------------------------------------------------------


def watch_scenario(t: Target, *flags: str, json_out: bool = False) -> object:
    """Write three events under a prefix; watch them from the first write's revision.

    Starting the watch at an explicit revision makes the result independent of when the
    watch is registered: history and live events arrive the same way.
    """
    n = Norm(t)
    first = n.base + 1
    prefix = f"wa{len(flags)}{int(json_out)}/"
    args = ["watch", prefix, "--prefix", f"--rev={first}", *flags]
    if json_out:
        args += ["-w", "json"]
    watcher = Background(t, *args)
    try:
        t.ctl("put", prefix + "a", "1")
        t.ctl("put", prefix + "a", "2")
        t.ctl("put", prefix + "b", "3")
        t.ctl("del", prefix + "a")
        t.ctl("put", "wz", "outside the prefix")
        if json_out:
            docs: list[dict[str, Any]] = []
            while sum(len(d.get("Events", [])) for d in docs) < 4:
                docs.append(json.loads(watcher.read(1)[0]))
            events = [e for d in docs for e in d["Events"]]
            return n.doc(events)
        # Three lines an event (type, key, value), two more for each event with a previous kv.
        count = 4 * 3 + (2 * 2 if "--prev-kv" in flags else 0)
        return watcher.read(count)
    finally:
        watcher.stop()


def test_watch_prefix_from_revision(targets: Targets) -> None:
    same(targets, lambda t: watch_scenario(t))


def test_watch_prev_kv(targets: Targets) -> None:
    same(targets, lambda t: watch_scenario(t, "--prev-kv"))


def test_watch_json_events(targets: Targets) -> None:
    same(targets, lambda t: watch_scenario(t, "--prev-kv", json_out=True))


def test_watch_live_single_key(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        n = Norm(t)
        watcher = Background(t, "watch", "wl/k", f"--rev={n.base + 1}")
        try:
            t.ctl("put", "wl/other", "x")
            t.ctl("put", "wl/k", "1")
            got = watcher.read(3)
            t.ctl("del", "wl/k")
            return got + watcher.read(2)
        finally:
            watcher.stop()

    same(targets, scenario)


def test_watch_compacted_revision(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        n = Norm(t)
        t.ctl("put", "wc/k", "1")
        t.ctl("put", "wc/k", "2")
        rev = t.revision()
        t.ctl("compaction", str(rev))
        res = t.ctl("watch", "wc/k", f"--rev={n.base + 1}", check=False, timeout=15)
        return res.returncode, res.stdout.replace(str(rev), "<compacted>")

    same(targets, scenario)


# -- lease ---------------------------------------------------------------------------------


def lease_id(t: Target, ttl: int) -> int:
    return int(t.json("lease", "grant", str(ttl))["ID"])


def test_lease_grant_attach_timetolive_revoke(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        n = Norm(t)
        grant = t.ctl("lease", "grant", "600").stdout
        lid = int(grant.split()[1], 16)
        hexid = f"{lid:x}"
        out: list[object] = [n.text(grant, [lid])]
        t.ctl("put", "ls/a", "x", f"--lease={hexid}")
        t.ctl("put", "ls/b", "y", f"--lease={hexid}")
        remaining = re.compile(r"remaining\((\d+)s\)")
        ttl_text = t.ctl("lease", "timetolive", hexid).stdout
        m = remaining.search(ttl_text)
        assert m and 590 <= int(m.group(1)) <= 600, ttl_text
        out.append(n.text(remaining.sub("remaining(N)", ttl_text), [lid]))
        keys_text = t.ctl("lease", "timetolive", hexid, "--keys").stdout
        # etcd lists a lease's keys in no particular order (they come from a Go map).
        keys_text = re.sub(
            r"attached keys\(\[(.*)\]\)",
            lambda m: "attached keys([" + " ".join(sorted(m.group(1).split())) + "])",
            keys_text,
        )
        out.append(n.text(remaining.sub("remaining(N)", keys_text), [lid]))
        doc = t.json("lease", "timetolive", hexid, "--keys")
        assert 590 <= doc.pop("ttl") <= 600, doc
        doc["keys"].sort()
        out.append(n.doc(doc))
        out.append(n.doc(t.json("get", "ls/a")))
        out.append(n.text(t.ctl("lease", "keep-alive", "--once", hexid).stdout, [lid]))
        out.append(n.doc(t.json("lease", "keep-alive", "--once", hexid)))
        out.append(n.text(t.ctl("lease", "revoke", hexid).stdout, [lid]))
        out.append(run(t, "get", "ls/", "--prefix"))
        out.append(n.text(t.ctl("lease", "timetolive", hexid).stdout, [lid]))
        out.append(n.doc(t.json("lease", "timetolive", hexid)))
        out.append(run(t, "lease", "revoke", hexid))
        return out

    same(targets, scenario)


def test_lease_keep_alive_stream(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        n = Norm(t)
        lid = lease_id(t, 600)
        keeper = Background(t, "lease", "keep-alive", f"{lid:x}")
        try:
            first = keeper.read(1)
        finally:
            keeper.stop()
            t.ctl("lease", "revoke", f"{lid:x}")
        return n.text("\n".join(first), [lid])

    assert same(targets, scenario) == "lease <id1> keepalived with TTL(600)"


def test_lease_list(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        n = Norm(t)
        before = set(int(x["id"]) for x in t.json("lease", "list").get("leases", []))
        mine = [lease_id(t, 600), lease_id(t, 600)]
        try:
            doc = t.json("lease", "list")
            ids = set(int(x["id"]) for x in doc["leases"]) - before
            text = t.ctl("lease", "list").stdout.splitlines()
            listed = {int(x, 16) for x in text[1:]} - before
            return (
                sorted(n.id(i) for i in ids) == sorted(n.id(i) for i in mine),
                listed == set(mine),
                text[0] == f"found {len(before) + 2} leases",
            )
        finally:
            for lid in mine:
                t.ctl("lease", "revoke", f"{lid:x}")

    assert same(targets, scenario) == (True, True, True)


def test_lease_unknown_ids(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        return [
            run(t, "lease", "timetolive", "1234"),
            run(t, "lease", "revoke", "1234"),
            run(t, "lease", "grant", "-5"),
        ]

    same(targets, scenario)


def test_lease_keep_alive_unknown_id_through_every_member(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        return [
            run(t, "lease", "keep-alive", "--once", "1234", endpoints=ep)
            for ep in t.member_endpoints
        ]

    same(targets, scenario)


def test_lease_expiry_deletes_keys(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        n = Norm(t)
        lid = lease_id(t, 2)
        t.ctl("put", "le/k", "v", f"--lease={lid:x}")

        def gone() -> bool:
            return int(t.json("get", "le/k").get("count", 0)) == 0

        wait_for(f"[{t.name}] the 2s lease to expire its key", gone, timeout=15)
        return n.doc(t.json("lease", "timetolive", f"{lid:x}")), n.doc(
            t.json("get", "le/k", f"--rev={n.base + 1}")
        )

    same(targets, scenario)


# -- lock and elect (client-side recipes in etcdctl 3.4: KV, leases and watches) -----------


def test_lock_with_command(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        res = run(t, "lock", "lk1", "echo", "locked")
        return res, run(t, "get", "lk1", "--prefix", "--keys-only")

    same(targets, scenario)


def test_lock_contention(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        holder = Background(t, "lock", "lk2")
        waiter: Background | None = None
        try:
            key = holder.read(1)[0]
            assert re.fullmatch(r"lk2/[0-9a-f]+", key), key
            waiter = Background(t, "lock", "lk2", "echo", "second")
            blocked = waiter.quiet_for(1.0)
            holder.stop()
            second = waiter.read(1)
            rc = waiter.wait()
        finally:
            holder.stop()
            if waiter is not None:
                waiter.stop()
        wait_for(
            f"[{t.name}] the lock keys to go",
            lambda: not t.ctl("get", "lk2", "--prefix", "--keys-only").stdout.strip(),
        )
        return blocked, second, rc

    assert same(targets, scenario) == (True, ["second"], 0)


def test_elect_campaign_observe_and_failover(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        first = Background(t, "elect", "el1", "p1")
        second: Background | None = None
        try:
            lead = first.read(2)
            second = Background(t, "elect", "el1", "p2")
            observer = Background(t, "elect", "-l", "el1")
            try:
                observed = observer.read(2)
            finally:
                observer.stop()
            waiting = second.quiet_for(1.0)
            first.stop()
            new_lead = second.read(2)
        finally:
            first.stop()
            if second is not None:
                second.stop()
        wait_for(
            f"[{t.name}] the campaign keys to go",
            lambda: not t.ctl("get", "el1", "--prefix", "--keys-only").stdout.strip(),
        )
        hexkey = re.compile(r"el1/[0-9a-f]+")
        assert hexkey.fullmatch(lead[0]) and hexkey.fullmatch(new_lead[0]), (lead, new_lead)
        return lead[1], observed == lead, waiting, new_lead[1], new_lead[0] != lead[0]

    assert same(targets, scenario) == ("p1", True, True, "p2", True)


# -- endpoint, maintenance -----------------------------------------------------------------


def shape(value: Any) -> Any:
    """The structure of a JSON document: field names and value types, not values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


def test_endpoint_status(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        rows = [r.split(", ") for r in t.ctl("endpoint", "status").stdout.splitlines()]
        leaders = [r[4] for r in rows]
        docs = t.json_lines("endpoint", "status")
        status = [d["Status"] for d in docs]
        same_leader = len({s["leader"] for s in status}) == 1
        ids = {s["header"]["member_id"] for s in status}
        return (
            [len(r) for r in rows],
            sorted(leaders),
            [r[0] for r in rows] == t.member_endpoints,
            [shape(d) for d in docs],
            same_leader,
            status[0]["leader"] in ids,
        )

    same(targets, scenario)


def test_endpoint_health(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        lines = t.ctl("endpoint", "health").stdout.splitlines()
        healthy = sorted(
            re.sub(r"took = \S+", "took = T", n_line)
            for n_line in Norm(t).text("\n".join(lines)).splitlines()
        )
        docs = t.json_lines("endpoint", "health")
        return healthy, sorted(str(shape(d)) for d in docs), all(d["health"] for d in docs)

    same(targets, scenario)


def test_endpoint_commands_with_cluster_flag(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        one = t.member_endpoints[0]
        return [
            len(t.ctl("endpoint", "status", "--cluster", endpoints=one).stdout.splitlines()),
            # etcdctl 3.4 prints health lines on stderr.
            len(t.ctl("endpoint", "health", "--cluster", endpoints=one).stderr.splitlines()),
            len(t.ctl("endpoint", "hashkv", "--cluster", endpoints=one).stdout.splitlines()),
        ]

    assert same(targets, scenario) == [3, 3, 3]


def test_endpoint_hashkv(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        rows = [r.split(", ") for r in t.ctl("endpoint", "hashkv").stdout.splitlines()]
        docs = t.json_lines("endpoint", "hashkv")
        for d in docs:
            d["HashKV"].pop("compact_revision", None)  # see test_hashkv_compact_revision
        return (
            [len(r) for r in rows],
            len({r[1] for r in rows}) == 1,
            [shape(d) for d in docs],
        )

    same(targets, scenario)


def test_move_leader(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        n = Norm(t)
        leader, followers, ids = endpoint_roles(t)
        for ep in [leader, *followers]:
            n.id(ids[ep])
        target_id = ids[followers[0]]
        moved = t.ctl("move-leader", f"{target_id:x}")
        new_leader = wait_for(
            f"[{t.name}] every member to see the new leader",
            lambda: endpoint_roles(t)[0] if endpoint_roles(t)[0] == followers[0] else None,
        )
        out: list[object] = [n.text(moved.stdout, list(ids.values())), new_leader == followers[0]]
        out.append(run(t, "move-leader", "1234"))
        # Only the old leader, now a follower, is given: etcdctl itself refuses.
        refused = n.text(str(run(t, "move-leader", f"{ids[leader]:x}", endpoints=leader)))
        out.append(re.sub(r"<ep\d>", "<ep>", refused))
        return out

    same(targets, scenario)


def test_compaction(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        n = Norm(t)
        first = revision_of(t.json("put", "cp/k", "1"))
        t.ctl("put", "cp/k", "2")
        t.ctl("put", "cp/k", "3")
        out: list[object] = []
        res = t.ctl("compaction", str(first + 1))
        out.append(res.stdout.replace(str(first + 1), "<rev+1>"))
        out.append(run(t, "get", "cp/k", f"--rev={first}"))
        out.append(n.doc(t.json("get", "cp/k", f"--rev={first + 1}")))
        out.append(run(t, "compaction", str(first)))
        out.append(run(t, "compaction", str(first + 1000)))
        res = t.ctl("compaction", "--physical", str(first + 2))
        out.append(res.stdout.replace(str(first + 2), "<rev+2>"))
        docs = t.json_lines("endpoint", "hashkv")
        out.append([n.rev(d["HashKV"]["compact_revision"]) for d in docs])
        return out

    same(targets, scenario)


def test_defrag(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        res = run(t, "defrag")
        one = run(t, "defrag", endpoints=t.member_endpoints[0])
        return Norm(t).text(str(res)), Norm(t).text(str(one))

    same(targets, scenario)


def test_defrag_cluster(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        out = t.ctl("defrag", "--cluster", endpoints=t.member_endpoints[0]).stdout
        return len(out.splitlines())

    assert same(targets, scenario) == 3


def test_snapshot_save(targets: Targets, tmp_path: Path) -> None:
    def scenario(t: Target) -> object:
        path = tmp_path / f"{t.name}.snap"
        code, _, err = run(t, "snapshot", "save", str(path), endpoints=t.member_endpoints[0])
        assert code == 0, f"[{t.name}] snapshot save: {err}"
        return path.exists() and path.stat().st_size > 0

    assert same(targets, scenario) is True


def test_snapshot_save_needs_one_endpoint(targets: Targets, tmp_path: Path) -> None:
    def scenario(t: Target) -> object:
        code, out, err = run(t, "snapshot", "save", str(tmp_path / "x.snap"))
        return code, out, Norm(t).text(err)

    same(targets, scenario)


def test_alarm_list_and_disarm(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        return run(t, "alarm", "list"), run(t, "alarm", "disarm")

    same(targets, scenario)


def test_alarm_list_json(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        doc = t.json("alarm", "list")
        doc.pop("header", None)  # etcd leaves the header empty here; Flotilla fills it
        return doc

    same(targets, scenario)


# -- cluster membership --------------------------------------------------------------------


def members(t: Target, endpoints: str | None = None) -> list[dict[str, Any]]:
    return list(t.json("member", "list", endpoints=endpoints)["members"])


def test_member_list_fields(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        rows = [line.split(", ") for line in t.ctl("member", "list").stdout.splitlines()]
        listed = sorted((r[1], r[2], r[3].startswith("http://127.0.0.1:"), r[5]) for r in rows)
        docs = members(t)
        return listed, sorted((m["name"], len(m["peerURLs"]), m.get("isLearner")) for m in docs)

    same(targets, scenario)


def test_member_list_client_urls(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        by_endpoint = []
        for ep in t.member_endpoints:
            urls = sorted(u for m in members(t, ep) for u in m.get("clientURLs", []))
            by_endpoint.append(urls == sorted(f"http://{e}" for e in t.member_endpoints))
        return by_endpoint

    assert same(targets, scenario) == [True, True, True]


def endpoint_roles(t: Target) -> tuple[str, list[str], dict[str, int]]:
    """(leader endpoint, follower endpoints, member id by endpoint)."""
    status = t.json_lines("endpoint", "status")
    ids = {s["Endpoint"]: int(s["Status"]["header"]["member_id"]) for s in status}
    leader_id = int(status[0]["Status"]["leader"])
    leader = next(ep for ep, i in ids.items() if i == leader_id)
    return leader, [ep for ep in ids if ep != leader], ids


def member_add_scenario(t: Target) -> object:
    n = Norm(t)
    leader, _, ids = endpoint_roles(t)
    for i in ids.values():
        n.id(i)
    (port,) = free_ports(1)
    peer = f"http://127.0.0.1:{port}"

    # etcd refuses ("unhealthy cluster") until its members have been connected for a few
    # seconds, which a freshly started cluster may not have been.
    def add() -> Any:
        r = t.ctl(
            "member", "add", "m4", "--learner", f"--peer-urls={peer}", endpoints=leader, check=False
        )
        return r if r.returncode == 0 else None

    added = wait_for("member add to be accepted", add, timeout=20)
    new_id = int(added.stdout.split()[1], 16)
    cluster_id = int(added.stdout.split()[5], 16)
    out = added.stdout.replace(peer, "<peer4>")
    for m in members(t):
        out = out.replace(m["peerURLs"][0], f"<peer-{m.get('name') or 'new'}>")
    lines = out.splitlines()
    # The order of --initial-cluster follows the member table's order, which is not a
    # property of either implementation.
    lines = [
        "ETCD_INITIAL_CLUSTER=" + ",".join(sorted(ln.split("=", 1)[1].strip('"').split(",")))
        if ln.startswith("ETCD_INITIAL_CLUSTER=")
        else ln
        for ln in lines
    ]
    result: list[object] = [n.text("\n".join(lines), [new_id, cluster_id])]
    try:
        listed = members(t)
        result.append(
            sorted(
                (m.get("name", ""), m.get("isLearner", False), m["peerURLs"] == [peer])
                for m in listed
            )
        )
        rows = t.ctl("member", "list").stdout.splitlines()
        result.append(sorted(n.text(r.split(", ")[1] + ", " + r.split(", ")[5], []) for r in rows))
        result.append(run(t, "member", "promote", f"{new_id:x}", endpoints=leader))
        # etcd refuses a second member with the same peer URLs, as "member ID already exist"
        # or "Peer URLs already exists" depending on the clock (the id hashes the second).
        again = run(t, "member", "add", "m5", "--learner", f"--peer-urls={peer}", endpoints=leader)
        result.append(again[0])
    finally:
        removed = run(t, "member", "remove", f"{new_id:x}", endpoints=leader)
    result.append(n.text(removed[1], [new_id, cluster_id]))
    result.append(len(members(t)))
    result.append(run(t, "member", "remove", f"{new_id:x}", endpoints=leader))
    result.append(run(t, "member", "promote", f"{new_id:x}", endpoints=leader))
    return result


def test_member_add_learner_promote_remove(targets: Targets) -> None:
    same(targets, member_add_scenario)


def test_member_calls_through_a_follower(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        _, followers, _ = endpoint_roles(t)
        return [
            run(t, "member", "remove", "1234", endpoints=followers[0]),
            run(t, "member", "promote", "1234", endpoints=followers[0]),
        ]

    same(targets, scenario)


def test_learner_joins_is_promoted_and_removed(targets: Targets) -> None:
    """A real fourth member joins as a learner, catches up, is promoted, then removed."""

    def scenario(t: Target) -> tuple[object, object]:
        leader, _, _ = endpoint_roles(t)
        original = t.endpoints
        joiner = t.new_member("m4")
        try:

            def add() -> str | None:
                # etcd refuses ("unhealthy cluster") until its members have been connected
                # for a few seconds, which a freshly started cluster may not have been.
                code, out, _ = run(
                    t,
                    "member",
                    "add",
                    "m4",
                    "--learner",
                    f"--peer-urls={joiner.peer_url}",
                    endpoints=leader,
                )
                return out if code == 0 else None

            added = wait_for(f"[{t.name}] the learner to be added", add, timeout=20)
            new_id = int(added.split()[1], 16)
            joiner.start()

            def caught_up() -> dict[str, Any] | None:
                doc = t.json_lines("endpoint", "status", endpoints=joiner.endpoint)[0]
                status: dict[str, Any] = doc["Status"]
                return status if status.get("raftAppliedIndex", 0) > 0 else None

            status = wait_for(f"[{t.name}] the learner to catch up", caught_up, timeout=15)

            def promote() -> str | None:
                code, out, _ = run(t, "member", "promote", f"{new_id:x}", endpoints=leader)
                return out if code == 0 else None

            promoted = wait_for(f"[{t.name}] the learner to be promoted", promote, timeout=30)
            after_promote = members(t, leader)
            removed = run(t, "member", "remove", f"{new_id:x}", endpoints=leader)
            popen = joiner.popen
            assert popen is not None

            def exited() -> bool:
                return popen.poll() is not None

            try:
                wait_for("the removed member to exit", exited, timeout=10)
                exits = True
            except AssertionError:
                exits = False
            flow = (
                status.get("isLearner", False),
                re.sub(r" *\b[0-9a-f]{1,16}\b", " <id>", promoted),
                sorted(m.get("isLearner", False) for m in after_promote),
                removed[0],
                re.sub(r" *\b[0-9a-f]{1,16}\b", " <id>", removed[1]),
                len(members(t, original)),
                run(t, "endpoint", "health", endpoints=original)[0],
            )
            published = next(m for m in after_promote if int(m["ID"]) == new_id)
            observed = (published.get("name", ""), published.get("clientURLs", []) != [], exits)
            return flow, observed
        finally:
            joiner.discard()
            for m in members(t, original):
                if m["peerURLs"] == [joiner.peer_url]:
                    run(t, "member", "remove", f"{int(m['ID']):x}", endpoints=original)

    expected = scenario(targets["etcd"])
    try:
        got = scenario(targets["flotilla"])
    except Exception as exc:
        raise Mismatch(f"flotilla failed where etcd succeeded: {exc}") from exc
    assert expected[0] == (
        True,
        "Member <id> promoted in cluster <id>\n",
        [False, False, False, False],
        0,
        "Member <id> removed from cluster <id>\n",
        3,
        0,
    ), expected
    if got[0] != expected[0]:
        raise Mismatch(f"flotilla: {got[0]}\netcd: {expected[0]}")
    if got[1] != expected[1]:
        pytest.xfail(
            "a joined member's name, client URLs and exit on removal "
            f"(name, has client URLs, exits): flotilla {got[1]}, etcd {expected[1]}"
        )
