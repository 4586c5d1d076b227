"""The ``flotilla`` cluster commands: each a thin shell over ``client`` and ``render``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from .. import backup
from .client import Client, CtlError
from .endpoints import EndpointError, resolve
from .render import MemberInfo, member_table, progress_bar, rows, summary, table, to_json


def add_connection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--endpoints",
        help="comma-separated client endpoints (default: the cluster of `flotilla local up`)",
    )
    p.add_argument("--kubeconfig", help="kubeconfig file (with --cluster; default ~/.kube/config)")
    p.add_argument("--namespace", "-n", default="default", help="namespace of the RaftCluster")
    p.add_argument("--cluster", help="name of a RaftCluster: find its pods in Kubernetes")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per request (default 3)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    st = sub.add_parser("status", help="one table of every member's state")
    add_connection_flags(st)
    st.add_argument("--json", action="store_true", help="JSON instead of a table")
    st.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    st.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")

    mem = sub.add_parser("members", help="list, add, promote or remove members")
    msub = mem.add_subparsers(dest="members_command")
    add_connection_flags(mem)
    add_connection_flags(msub.add_parser("list", help="the member list (the default)"))
    add = msub.add_parser("add", help="add a member (as a learner unless --voter)")
    add_connection_flags(add)
    add.add_argument("name")
    add.add_argument("--peer-urls", required=True, help="the new member's peer URLs")
    add.add_argument("--voter", action="store_true", help="add as a voter at once (not advised)")
    for verb, text in (("promote", "make a caught-up learner a voter"), ("remove", "remove")):
        p = msub.add_parser(verb, help=text)
        add_connection_flags(p)
        p.add_argument("member", help="member name or hex id")

    mv = sub.add_parser("move-leader", help="hand leadership to another voter")
    add_connection_flags(mv)
    mv.add_argument("member", help="member name or hex id")

    df = sub.add_parser("defrag", help="compact every member's storage, one at a time")
    add_connection_flags(df)


def _client(args: argparse.Namespace) -> Client:
    from ..local import default_data_root

    eps = resolve(
        args.endpoints, args.kubeconfig, args.namespace, args.cluster, default_data_root()
    )
    return Client(eps, timeout=args.timeout)


def run(args: argparse.Namespace) -> int:
    try:
        client = _client(args)
    except EndpointError as exc:
        print(f"flotilla: {exc}", file=sys.stderr)
        return 2
    try:
        return _dispatch(args, client)
    except CtlError as exc:
        print(f"flotilla {args.command}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()


def _dispatch(args: argparse.Namespace, client: Client) -> int:
    if args.command == "status":
        return status(client, args.json, args.watch, args.interval)
    if args.command == "members":
        return members(client, args)
    if args.command == "move-leader":
        target = find_member(client.members(), args.member)
        client.move_leader(target.id)
        print(f"leadership moved to {target.name} ({target.id:x})")
        return 0
    if args.command == "defrag":
        failed = 0
        mems, _, where = client.survey()
        for m in mems:
            if m.id not in where:
                print(f"{m.name} ({m.id:x}): not reachable, skipped", file=sys.stderr)
                failed += 1
                continue
            started = time.monotonic()
            try:
                client.defragment(where[m.id])
            except CtlError as exc:
                print(f"{m.name} ({m.id:x}): {exc}", file=sys.stderr)
                failed += 1
                continue
            print(f"defragmented {m.name} ({m.id:x}) in {time.monotonic() - started:.2f}s")
        return 1 if failed else 0
    raise AssertionError(args.command)


def status_text(client: Client, as_json: bool) -> str:
    found = rows(*client.survey())
    return to_json(found) if as_json else table(found) + summary(found)


def status(client: Client, as_json: bool, watch: bool, interval: float) -> int:
    if not watch:
        sys.stdout.write(status_text(client, as_json))
        return 0
    try:
        while True:
            try:
                text = status_text(client, as_json)
            except CtlError as exc:
                text = f"no member answered: {exc}\n"
            stamp = time.strftime("%H:%M:%S")
            # Home, clear below: the table is redrawn in place rather than scrolling.
            sys.stdout.write(f"\x1b[H\x1b[J{stamp}  every {interval:g}s, Ctrl-C to stop\n{text}")
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0


def find_member(mems: list[MemberInfo], wanted: str) -> MemberInfo:
    for m in mems:
        if m.name == wanted:
            return m
    try:
        mid = int(wanted, 16)
    except ValueError:
        mid = -1
    for m in mems:
        if m.id == mid:
            return m
    raise CtlError(f"no member named or with id {wanted!r}")


def members(client: Client, args: argparse.Namespace) -> int:
    verb = args.members_command or "list"
    if verb == "list":
        sys.stdout.write(member_table(client.members()))
        return 0
    if verb == "add":
        peer_urls = [u.strip() for u in args.peer_urls.split(",") if u.strip()]
        resp = client.member_add(peer_urls, learner=not args.voter)
        added = resp.member.ID
        initial = []
        for m in resp.members:
            name = args.name if added == m.ID else m.name
            initial += [f"{name}={u}" for u in m.peerURLs]
        kind = "voter" if args.voter else "learner"
        print(f"added {args.name} ({added:x}) as a {kind}; start it with:")
        print(
            f"  flotilla-node --name {args.name} --initial-cluster {','.join(initial)} "
            f"--initial-cluster-state existing --initial-advertise-peer-urls {peer_urls[0]} ..."
        )
        if not args.voter:
            print(f"then, once it has caught up: flotilla members promote {args.name}")
        return 0
    target = find_member(client.members(), args.member)
    if verb == "promote":
        client.member_promote(target.id)
        print(f"promoted {target.name} ({target.id:x}) to voter")
    else:
        client.member_remove(target.id)
        print(f"removed {target.name} ({target.id:x})")
    return 0


def snapshot_save(argv: list[str], err: TextIO = sys.stderr) -> int:
    """``flotilla snapshot save FILE [connection flags]``: a verified backup, written atomically."""
    p = argparse.ArgumentParser(prog="flotilla snapshot save")
    p.add_argument("file", type=Path)
    add_connection_flags(p)
    args = p.parse_args(argv)
    args.command = "snapshot save"
    try:
        client = _client(args)
    except EndpointError as exc:
        print(f"flotilla: {exc}", file=err)
        return 2
    part = args.file.with_name(args.file.name + ".part")
    show = err.isatty()
    done = 0
    try:
        with open(part, "wb") as out:
            for chunk, remaining in client.snapshot():
                out.write(chunk)
                done += len(chunk)
                if show:
                    err.write("\r" + progress_bar(done, done + remaining))
                    err.flush()
            out.flush()
            os.fsync(out.fileno())
        if show:
            err.write("\n")
        # The same check etcdctl makes (and restore makes again): refuse a damaged backup.
        backup.decode(part.read_bytes())
        part.replace(args.file)
    except (CtlError, backup.BackupCorrupt, OSError) as exc:
        part.unlink(missing_ok=True)
        print(f"flotilla snapshot save: {exc}", file=err)
        return 1
    finally:
        client.close()
    print(f"saved {done} bytes to {args.file} (checksum verified)")
    return 0
