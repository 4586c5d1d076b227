"""Draw docs/architecture.png: how a client write and a read flow through a member.

python docs/architecture_diagram.py      (needs the ``dashboard`` extra: matplotlib)
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).with_name("architecture.png")
INK, MUTED = "#1f2937", "#6b7280"
FILL = {"api": "#dbeafe", "node": "#fef3c7", "raft": "#fde68a", "store": "#dcfce7",
        "net": "#fce7f3", "ops": "#ede9fe", "k8s": "#e0f2fe"}  # fmt: skip


def box(ax: plt.Axes, x: float, y: float, w: float, h: float, title: str, body: str,
        kind: str) -> None:  # fmt: skip
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                fc=FILL[kind], ec=INK, lw=1.2))  # fmt: skip
    ax.text(x + w / 2, y + h - 0.22, title, ha="center", va="top", fontsize=11,
            weight="bold", color=INK)  # fmt: skip
    if body:
        ax.text(x + w / 2, y + h - 0.58, body, ha="center", va="top", fontsize=8.3,
                color=INK, linespacing=1.35)  # fmt: skip


def arrow(ax: plt.Axes, a: tuple[float, float], b: tuple[float, float], label: str = "",
          color: str = INK, rad: float = 0.0, dy: float = 0.12) -> None:  # fmt: skip
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=13, lw=1.3,
                                 color=color, connectionstyle=f"arc3,rad={rad}"))  # fmt: skip
    if label:
        ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + dy, label, ha="center", fontsize=8,
                color=color, style="italic",
                bbox={"fc": "white", "ec": "none", "pad": 0.5})  # fmt: skip


def main() -> None:
    fig, ax = plt.subplots(figsize=(15, 9.4))
    ax.set_xlim(0, 15)
    ax.set_ylim(0, 9.4)
    ax.axis("off")
    ax.text(0.2, 9.2, "Flotilla: one member, its clients, its peers, and the operator",
            fontsize=15, weight="bold", color=INK, va="top")  # fmt: skip

    # Outside the member.
    box(ax, 0.2, 6.4, 2.6, 1.6, "Clients", "etcdctl, clientv3,\naetcd, flotilla CLI", "api")
    box(ax, 0.2, 0.5, 2.6, 1.9, "Operator", "kopf: observe -> plan\n-> one step -> status\n"
        "/metrics :8081", "k8s")  # fmt: skip
    box(ax, 12.3, 6.4, 2.5, 1.6, "Peers", "the other members\n(same process shape)", "net")
    box(ax, 12.3, 0.5, 2.5, 1.9, "Prometheus", "scrapes each member's\n/metrics (HTTP); the\n"
        "Grafana dashboard", "ops")  # fmt: skip

    # The member.
    ax.add_patch(FancyBboxPatch((3.3, 0.3), 8.5, 8.2, boxstyle="round,pad=0.02,rounding_size=0.2",
                                fc="#f9fafb", ec=MUTED, lw=1, ls="--"))  # fmt: skip
    ax.text(3.5, 8.35, "flotilla-node (one process, one asyncio loop)", fontsize=10,
            color=MUTED, va="top")  # fmt: skip
    box(ax, 3.6, 6.2, 3.6, 1.8, "api/  (client gRPC)", "KV, Watch, Lease, Lock, Election,\n"
        "Cluster, Maintenance, Membership\ncounted per method and code",
        "api")  # fmt: skip
    box(ax, 7.9, 6.2, 3.6, 1.8, "transport/  (peer gRPC)", "one stream per peer, batched;\n"
        "snapshots in chunks", "net")  # fmt: skip
    box(ax, 3.6, 3.3, 7.9, 2.3, "server  (the driver loop, one turn)", "1 step inbound messages, "
        "tick    2 propose every waiting write as one batch; one ReadIndex for all reads\n"
        "3 for each Ready: send appends  ->  persist entries + hard state (one synced write)"
        "  ->  send the rest\n  ->  apply committed entries  ->  answer clients, release reads"
        "  ->  advance\n\nFollowers forward writes to the leader and ask it for the read index;"
        "\nwatches are served by every member from its applied state.", "node")  # fmt: skip
    box(ax, 3.6, 0.6, 2.5, 2.1, "raft/  (sans-IO)", "RaftCore: step, tick,\npropose, ready,\n"
        "advance", "raft")  # fmt: skip
    box(ax, 6.3, 0.6, 2.5, 2.1, "storage/  LevelDB", "raft log, hard state,\nsnapshots "
        "(fsync'd)", "store")  # fmt: skip
    box(ax, 9.0, 0.6, 2.5, 2.1, "kv/  state machine", "MVCC store, leases,\nwatch hub "
        "(same LevelDB)", "store")  # fmt: skip

    arrow(ax, (2.8, 7.2), (3.6, 7.2), "gRPC")
    arrow(ax, (5.4, 6.2), (5.4, 5.6), "proposals,\nreads", dy=-0.05)
    arrow(ax, (9.7, 6.2), (9.7, 5.6), "messages in", dy=-0.05)
    arrow(ax, (8.6, 5.6), (8.6, 6.2), "messages out", color="#b45309", dy=-0.05)
    arrow(ax, (11.5, 7.2), (12.3, 7.2), "")
    arrow(ax, (12.3, 6.9), (11.5, 6.9), "")
    arrow(ax, (4.85, 3.3), (4.85, 2.7), "Ready", dy=-0.05)
    arrow(ax, (7.55, 3.3), (7.55, 2.7), "1 synced\nwrite", dy=-0.05)
    arrow(ax, (10.25, 3.3), (10.25, 2.7), "apply +\napplied idx", dy=-0.05)
    arrow(ax, (2.8, 2.0), (3.6, 3.8), "membership\nRPCs", color="#0369a1", rad=-0.2)
    arrow(ax, (11.8, 1.5), (12.3, 1.5), "")
    ax.text(3.6, 0.2, "Nothing is acknowledged before it is durable: a write is answered only"
            " after its entry was synced on a majority, committed, and applied here.",
            fontsize=8.5, color=MUTED, va="top")  # fmt: skip
    fig.savefig(OUT, dpi=90, bbox_inches="tight", facecolor="white")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
