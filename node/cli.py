"""The ``flotilla`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .ctl import commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flotilla", description="Flotilla: Raft, etcd-style.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="watch the Raft core elect, replicate and reconfigure")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--writes", type=int, default=2000)
    local = sub.add_parser("local", help="a cluster of real flotilla-node processes here")
    local_sub = local.add_subparsers(dest="local_command", required=True)
    up = local_sub.add_parser("up", help="start members on loopback; Ctrl-C stops them")
    up.add_argument("--members", type=int, default=3, help="how many members (default 3)")
    up.add_argument("--data-dir", type=Path, default=None, help="where members keep data")
    up.add_argument("--base-port", type=int, default=2379, help="first client port")
    up.add_argument("node_flags", nargs="*", help="extra flotilla-node flags, after --")
    snap = sub.add_parser("snapshot", help="save a backup, or restore one into a new member")
    snap_sub = snap.add_subparsers(dest="snapshot_command", required=True)
    snap_sub.add_parser(
        "save",
        help="FILE [--endpoints ...]: stream a member's backup into FILE and verify it",
        add_help=False,
    )
    snap_sub.add_parser(
        "restore",
        help="FILE plus the new member's flotilla-node flags: writes its data directory",
        add_help=False,
    )
    commands.register(sub)
    if argv is None:
        argv = sys.argv[1:]
    if argv[:2] == ["snapshot", "restore"]:
        from .restore import run as restore

        return restore(argv[2:])
    if argv[:2] == ["snapshot", "save"]:
        return commands.snapshot_save(argv[2:])
    args = parser.parse_args(argv)
    if args.command in ("status", "members", "move-leader", "defrag"):
        return commands.run(args)
    if args.command == "local":
        from .local import default_data_root
        from .local import up as local_up

        root = args.data_dir or default_data_root()
        return local_up(args.members, root, args.base_port, args.node_flags)
    if args.command == "demo":
        from .raft.demo import run

        run(seed=args.seed, writes=args.writes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
