"""The ``flotilla`` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flotilla", description="Flotilla: Raft, etcd-style.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="watch the Raft core elect, replicate and reconfigure")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--writes", type=int, default=2000)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .raft.demo import run

        run(seed=args.seed, writes=args.writes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
