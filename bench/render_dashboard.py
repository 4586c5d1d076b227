"""Render ``manifests/grafana-dashboard.json`` to a PNG from a real cluster under load.

Grafana is not needed: this starts a local 3-member cluster, drives writes, reads, leases,
watches, a few bad requests, one leadership move and one member restart, scrapes every
member's ``/metrics`` once a second, evaluates each panel's PromQL with ``bench.promql``,
and draws the panels in the dashboard's own grid layout.

    pip install -e '.[dashboard]'        # matplotlib
    python -m bench.render_dashboard [--seconds 90] [--out docs/dashboard.png]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from bench.clusters import FlotillaCluster, Member
from bench.promql import Labels, Scrape, legend, parse
from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.api.etcdpb import rpc_pb2_grpc
from flotilla.node.ctl.client import Client

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "manifests" / "grafana-dashboard.json"

# -- scraping ------------------------------------------------------------------------------------


def parse_metrics(text: str, instance: str) -> dict[Labels, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[Labels, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = {"__name__": s.name, "instance": instance, "job": "flotilla", **s.labels}
            out[frozenset(labels.items())] = float(s.value)
    return out


def scrape(members: list[Member], t: float) -> Scrape:
    samples: dict[Labels, float] = {}
    for m in members:
        try:
            code, text = m.http("/metrics")
        except OSError:
            continue  # a stopped member: no samples, as Prometheus records a failed scrape
        if code == 200:
            samples.update(parse_metrics(text, m.name))
    return t, samples


# -- load ------------------------------------------------------------------------------------------


class Load:
    """Writes, reads, leases and watches against the cluster until stopped."""

    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.watchers: list[subprocess.Popen[bytes]] = []

    def stub(self, i: int) -> Any:
        channel = grpc.insecure_channel(self.endpoints[i % len(self.endpoints)])
        make: Any = rpc_pb2_grpc.KVStub
        return make(channel)

    def writer(self, i: int, pace: float) -> None:
        kv, rnd = self.stub(i), random.Random(i)
        while not self.stop.is_set():
            try:
                key = f"load/{rnd.randrange(1000)}".encode()
                kv.Put(pb.PutRequest(key=key, value=b"x" * rnd.randrange(10, 400)), timeout=2)
                if rnd.random() < 0.3:
                    kv.Range(pb.RangeRequest(key=key), timeout=2)
                if rnd.random() < 0.01:
                    kv.Put(pb.PutRequest(key=b"", value=b"no key"), timeout=2)  # INVALID_ARGUMENT
            except grpc.RpcError:
                time.sleep(0.05)  # no leader for a moment: the dashboard shows it
            time.sleep(pace)

    def leases(self) -> None:
        channel = grpc.insecure_channel(self.endpoints[0])
        make: Any = rpc_pb2_grpc.LeaseStub
        lease = make(channel)
        while not self.stop.wait(2.0):
            with contextlib.suppress(grpc.RpcError):
                lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30), timeout=2)

    def add_watcher(self) -> None:
        ep = self.endpoints[len(self.watchers) % len(self.endpoints)]
        self.watchers.append(
            subprocess.Popen(
                ["etcdctl", f"--endpoints={ep}", "watch", "--prefix", "load/"],
                env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def start(self) -> None:
        for i, pace in enumerate((0.002, 0.005, 0.01)):
            self.threads.append(threading.Thread(target=self.writer, args=(i, pace), daemon=True))
        self.threads.append(threading.Thread(target=self.leases, daemon=True))
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)
        for w in self.watchers:
            w.kill()
            w.wait()


def record(seconds: float, workdir: Path) -> list[Scrape]:
    cluster = FlotillaCluster("flotilla", workdir / "cluster")
    cluster.start()
    load = Load([m.endpoint for m in cluster.members])
    scrapes: list[Scrape] = []
    try:
        cluster.wait_leader()
        load.start()
        began = time.monotonic()
        events = [
            (0.15, "watch"),
            (0.3, "watch"),
            (0.35, "move-leader"),
            (0.45, "watch"),
            (0.6, "stop-follower"),
            (0.75, "restart-follower"),
        ]
        stopped: Member | None = None
        while (now := time.monotonic() - began) < seconds:
            while events and now >= events[0][0] * seconds:
                _, what = events.pop(0)
                if what == "watch":
                    load.add_watcher()
                elif what == "move-leader":
                    client = Client([m.endpoint for m in cluster.members])
                    lead = cluster.wait_leader()
                    target = next(m for m in cluster.members if m is not lead)
                    ids = {mi.name: mi.id for mi in client.members()}
                    client.move_leader(ids[target.name])
                    client.close()
                elif what == "stop-follower":
                    lead = cluster.wait_leader()
                    stopped = next(m for m in reversed(cluster.members) if m is not lead)
                    cluster.kill(stopped)
                elif what == "restart-follower" and stopped is not None:
                    cluster.spawn(stopped, cluster.members)
            scrapes.append(scrape(cluster.members, now))
            time.sleep(max(0.0, 1.0 - (time.monotonic() - began - now)))
    finally:
        load.close()
        cluster.stop()
    return scrapes


# -- drawing ------------------------------------------------------------------------------------

BG, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2a2d33"
COLORS = {"green": "#56a64b", "red": "#e02f44", "orange": "#ff9830", "blue": "#3274d9"}
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a"]


def fmt(value: float, unit: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    if unit == "bytes":
        for suffix, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if abs(value) >= size:
                return f"{value / size:.1f} {suffix}"
        return f"{value:.0f} B"
    if unit == "Bps":
        return fmt(value, "bytes") + "/s"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit in ("ops", "reqps"):
        return f"{value:.0f}/s" if value >= 10 else f"{value:.2f}/s"
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


def threshold_color(panel: dict[str, Any], value: float) -> str:
    steps = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
    color = "blue"
    for step in steps:
        if step["value"] is None or value >= step["value"]:
            color = step["color"]
    return COLORS.get(color, color)


def mapped(panel: dict[str, Any], value: float) -> str | None:
    for mapping in panel["fieldConfig"]["defaults"].get("mappings", []):
        text = mapping.get("options", {}).get(fmt(value, ""), {}).get("text")
        if text:
            return str(text)
    return None


def series_for(
    panel: dict[str, Any], scrapes: list[Scrape], variables: dict[str, str]
) -> list[tuple[str, list[float], list[float]]]:
    times = [t for t, _ in scrapes]
    out = []
    for target in panel["targets"]:
        node = parse(target["expr"], variables)
        lines: dict[Labels, tuple[list[float], list[float]]] = {}
        for t in times:
            got = node.eval(scrapes, t)
            vec = got if isinstance(got, dict) else {frozenset(): got}
            for labels, v in vec.items():
                xs, ys = lines.setdefault(labels, ([], []))
                xs.append(t)
                ys.append(v)
        for labels, (xs, ys) in sorted(lines.items(), key=lambda kv: sorted(kv[0])):
            name = legend(target.get("legendFormat") or "", labels) or target["refId"]
            out.append((name, xs, ys))
    return out


def draw(dashboard: dict[str, Any], scrapes: list[Scrape], out: Path, rate_interval: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    span = scrapes[-1][0] - scrapes[0][0]
    variables = {"__rate_interval": rate_interval, "__range": f"{int(span) + 1}s", "job": ".*"}
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_w, unit_h, head = 0.8, 0.36, 0.7
    fig = plt.figure(figsize=(24 * unit_w, rows * unit_h + head), facecolor=BG)
    fig.text(
        0.01,
        1 - 0.25 / (rows * unit_h + head),
        f"{dashboard['title']}  ·  3 members under load, {span:.0f} s "
        f"(leadership moved at 35%, a follower stopped from 60% to 75%)",
        color=TEXT,
        fontsize=14,
        va="top",
    )
    height = rows * unit_h + head
    pad = 0.06
    for p in panels:
        g = p["gridPos"]
        x0 = (g["x"] * unit_w + pad) / (24 * unit_w)
        w = (g["w"] * unit_w - 2 * pad) / (24 * unit_w)
        top = height - head - g["y"] * unit_h - pad
        h = g["h"] * unit_h - 2 * pad
        unit = p["fieldConfig"]["defaults"].get("unit", "short")
        data = series_for(p, scrapes, variables)
        if p["type"] == "stat":
            ax = fig.add_axes((x0, (top - h) / height, w, h / height))
            value = data[0][2][-1] if data and data[0][2] else math.nan
            color = threshold_color(p, value) if not math.isnan(value) else PANEL
            ax.set_facecolor(color)
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            ax.text(
                0.04, 0.9, p["title"], color="white", fontsize=10, va="top", transform=ax.transAxes
            )
            shown = mapped(p, value) or fmt(value, unit)
            ax.text(0.5, 0.4, shown, color="white", fontsize=26, weight="bold", ha="center",
                    va="center", transform=ax.transAxes)  # fmt: skip
            continue
        title_h = 0.28
        frame = fig.add_axes((x0, (top - h) / height, w, h / height))
        frame.set_facecolor(PANEL)
        frame.set_xticks([])
        frame.set_yticks([])
        for s in frame.spines.values():
            s.set_color(GRID)
        frame.text(0.01, 1 - 0.05 / (h / unit_h), p["title"], color=TEXT, fontsize=10,
                   va="top", weight="bold", transform=frame.transAxes)  # fmt: skip
        ax = fig.add_axes(
            (x0 + 0.045 * w, (top - h + 0.75) / height, w * 0.93, (h - 0.75 - title_h) / height)
        )
        ax.set_facecolor(PANEL)
        for i, (name, xs, ys) in enumerate(data):
            color = PALETTE[i % len(PALETTE)]
            ax.plot(xs, ys, color=color, linewidth=1.4, label=name)
            ax.fill_between(xs, ys, color=color, alpha=0.08)
        ax.tick_params(colors=TEXT, labelsize=7)
        ax.grid(color=GRID, linewidth=0.6)
        for s in ax.spines.values():
            s.set_visible(False)
        ax.set_xlim(scrapes[0][0], scrapes[-1][0])
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(
            matplotlib.ticker.FuncFormatter(lambda v, _, u=unit: fmt(v, u))
        )
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.0f}s"))
        if data:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=min(len(data), 4),
                      fontsize=7, frameon=False, labelcolor=TEXT)  # fmt: skip
        else:
            ax.text(0.5, 0.5, "no data", color=TEXT, ha="center", transform=ax.transAxes)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, facecolor=BG)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=90)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    ap.add_argument("--rate-interval", default="10s", help="what $__rate_interval stands for")
    ap.add_argument("--save-scrapes", type=Path, help="also keep the scrapes (JSON)")
    ap.add_argument("--from-scrapes", type=Path, help="draw from saved scrapes, no cluster")
    args = ap.parse_args()
    dashboard = json.loads(DASHBOARD.read_text())
    if args.from_scrapes:
        raw = json.loads(args.from_scrapes.read_text())
        scrapes: list[Scrape] = [
            (t, {frozenset(tuple(p) for p in k): v for k, v in s}) for t, s in raw
        ]
    else:
        with tempfile.TemporaryDirectory(prefix="flotilla-dash-") as tmp:
            scrapes = record(args.seconds, Path(tmp))
    if args.save_scrapes:
        doc = [(t, [(sorted(k), v) for k, v in s.items()]) for t, s in scrapes]
        args.save_scrapes.write_text(json.dumps(doc))
    draw(dashboard, scrapes, args.out, args.rate_interval)
    print(f"wrote {args.out} from {len(scrapes)} scrapes")


if __name__ == "__main__":
    main()
