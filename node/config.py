"""The flotilla-node command line: etcd's flag names and meanings, and their checks.

An etcd user's command line works by changing the binary name. Every flag can also come from
the environment as ``FLOTILLA_<FLAG>`` (``--initial-cluster`` -> ``FLOTILLA_INITIAL_CLUSTER``);
a flag on the command line wins. Wrong or inconsistent input is reported in one line and the
process exits with code 2, before anything touches the data directory.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .durations import parse_duration
from .kv import autocompact
from .members import Member, cluster_id_of, member_id_of
from .tls import TlsError, TlsFiles, check

ENV_PREFIX = "FLOTILLA_"


class ConfigError(Exception):
    """The command line cannot describe a runnable member (exit code 2)."""


@dataclass(frozen=True)
class NodeConfig:
    name: str
    data_dir: Path
    listen_client_urls: tuple[str, ...]
    advertise_client_urls: tuple[str, ...]
    listen_peer_urls: tuple[str, ...]
    initial_advertise_peer_urls: tuple[str, ...]
    initial_cluster: tuple[Member, ...]
    initial_cluster_state: str
    initial_cluster_token: str
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    snapshot_count: int = 10_000
    quota_backend_bytes: int = 2 * 1024**3
    listen_metrics_urls: tuple[str, ...] = ()
    client_tls: TlsFiles = field(default_factory=TlsFiles)
    peer_tls: TlsFiles = field(default_factory=TlsFiles)
    member_id: int = 0
    cluster_id: int = 0
    leader_lease_reads: bool = False
    auto_compaction_mode: str = autocompact.PERIODIC
    auto_compaction_retention: float = 0.0  # seconds (periodic) or revisions; 0: off
    corrupt_check_seconds: float = 0.0  # the leader's periodic check; 0: off
    initial_corrupt_check: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def election_ticks(self) -> int:
        return max(2, round(self.election_timeout_ms / self.heartbeat_interval_ms))


def _urls(value: str, flag: str) -> tuple[str, ...]:
    urls = tuple(u.strip() for u in value.split(",") if u.strip())
    for u in urls:
        parts = urlsplit(u)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
            raise ConfigError(f"--{flag}: {u!r} is not a URL like http://127.0.0.1:2379")
    return urls


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


_bool.__name__ = "boolean"  # argparse names the type in its message: "invalid boolean value"

FEATURE_GATES = ("InitialCorruptCheck",)
"""etcd's feature gates that Flotilla has; any other is refused, never ignored."""


def _feature_gates(value: str) -> dict[str, bool]:
    """``--feature-gates=Name=true,...`` as etcd reads it."""
    gates: dict[str, bool] = {}
    for term in filter(None, (t.strip() for t in value.split(","))):
        name, _, setting = term.partition("=")
        if name not in FEATURE_GATES:
            known = ", ".join(FEATURE_GATES)
            raise ConfigError(f"--feature-gates: unknown feature gate {name!r} (known: {known})")
        if setting.strip().lower() not in ("true", "false"):
            raise ConfigError(f"--feature-gates: {term!r} is not {name}=true or {name}=false")
        gates[name] = _bool(setting)
    return gates


def _path(value: str) -> Path | None:
    return Path(value) if value else None


def _tls(ns: argparse.Namespace, prefix: str) -> TlsFiles:
    """One side's TLS files, checked for completeness (``prefix`` "" or "peer_")."""
    files = TlsFiles(
        cert_file=_path(getattr(ns, prefix + "cert_file")),
        key_file=_path(getattr(ns, prefix + "key_file")),
        trusted_ca_file=_path(getattr(ns, prefix + "trusted_ca_file")),
        client_cert_auth=getattr(ns, prefix + "client_cert_auth"),
    )
    try:
        check(files, prefix.replace("_", "-"))
    except TlsError as exc:
        raise ConfigError(str(exc)) from exc
    return files


def _match_scheme(urls: tuple[str, ...], files: TlsFiles, flag: str, cert_flag: str) -> None:
    """https:// exactly when a certificate is given: a certificate that would silently not be
    used, or an https URL served in the clear, is a mistake worth stopping for."""
    for u in urls:
        https = urlsplit(u).scheme == "https"
        if https and not files.enabled:
            raise ConfigError(f"--{flag}: {u} is https but --{cert_flag} is not given")
        if not https and files.enabled:
            raise ConfigError(f"--{flag}: {u} must be https:// when --{cert_flag} is given")


def _parse_initial_cluster(value: str, token: str) -> tuple[Member, ...]:
    by_name: dict[str, list[str]] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ConfigError(f"--initial-cluster: {item!r} is not name=peer-url")
        name, url = item.split("=", 1)
        _urls(url, "initial-cluster")
        by_name.setdefault(name, []).append(url)
    members = tuple(
        Member(member_id_of(urls, token), name, tuple(sorted(urls)), ())
        for name, urls in by_name.items()
    )
    ids = [m.id for m in members]
    if len(set(ids)) != len(ids):
        raise ConfigError("--initial-cluster: two members share the same peer URLs")
    return members


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flotilla-node",
        description="One member of a Flotilla cluster (etcd v3 API). Flags as etcd's; each "
        "also from the environment as FLOTILLA_<FLAG>.",
    )
    a = p.add_argument
    a("--name", default="default", help="human-readable name of this member")
    a("--data-dir", default=None, help="path to the data directory (default: <name>.flotilla)")
    a("--listen-client-urls", default="http://localhost:2379")
    a("--advertise-client-urls", default="http://localhost:2379")
    a("--listen-peer-urls", default="http://localhost:2380")
    a("--initial-advertise-peer-urls", default="http://localhost:2380")
    a("--initial-cluster", default=None, help="name=peer-url,... (default: this member alone)")
    a("--initial-cluster-state", default="new", choices=["new", "existing"])
    a("--initial-cluster-token", default="flotilla-cluster")
    a("--heartbeat-interval", type=int, default=100, help="milliseconds")
    a("--election-timeout", type=int, default=1000, help="milliseconds")
    a("--snapshot-count", type=int, default=10_000, help="applied entries between snapshots")
    a("--quota-backend-bytes", type=int, default=2 * 1024**3)
    a(
        "--auto-compaction-mode",
        default=autocompact.PERIODIC,
        choices=list(autocompact.MODES),
        help="periodic: keep a duration of history; revision: keep a number of revisions",
    )
    a(
        "--auto-compaction-retention",
        default="0",
        help="periodic: hours (a number) or a duration such as 30m; revision: how many; "
        "0 (the default): no automatic compaction",
    )
    a(
        "--corrupt-check-time",
        "--experimental-corrupt-check-time",
        default="0s",
        help="how often the leader compares every member's key-value hash (a duration such "
        "as 1h), raising the CORRUPT alarm on a mismatch; 0s (the default): never",
    )
    a(
        "--experimental-initial-corrupt-check",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="on start, compare this member's key-value hash with its peers' and refuse to "
        "start on a mismatch (also --feature-gates=InitialCorruptCheck=true)",
    )
    a(
        "--feature-gates",
        default="",
        help=f"Name=true|false,...; known: {', '.join(FEATURE_GATES)}",
    )
    a("--listen-metrics-urls", default="", help="where /metrics, /health and /readyz answer")
    a(
        "--leader-lease-reads",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="serve linearizable reads from the leader's lease instead of a heartbeat round "
        "each; assumes members' clocks drift apart by less than two heartbeat intervals per "
        "election timeout",
    )
    for side, who in (("", "client"), ("peer-", "peer")):
        a(f"--{side}cert-file", default="", help=f"TLS certificate for the {who} URLs (PEM)")
        a(f"--{side}key-file", default="", help=f"its private key (PEM) for the {who} URLs")
        a(f"--{side}trusted-ca-file", default="", help=f"CA that {who} certificates must chain to")
        a(
            f"--{side}client-cert-auth",
            type=_bool,
            nargs="?",
            const=True,
            default=False,
            help=f"require {who}s to present a certificate signed by the trusted CA",
        )
    return p


def _env_defaults(p: argparse.ArgumentParser, environ: dict[str, str]) -> None:
    for action in p._actions:
        if not action.option_strings or action.dest == "help":
            continue
        flag = action.option_strings[0].lstrip("-")
        key = ENV_PREFIX + flag.upper().replace("-", "_")
        if key in environ:
            convert = action.type if callable(action.type) else str
            try:
                action.default = convert(environ[key])
            except ValueError as exc:
                raise ConfigError(f"{key}: {exc}") from exc


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def parse(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> NodeConfig:
    env = dict(os.environ if environ is None else environ)
    p = build_parser()
    p.__class__ = _Parser
    _env_defaults(p, env)
    ns = p.parse_args(argv)

    if ns.heartbeat_interval <= 0:
        raise ConfigError("--heartbeat-interval must be positive")
    if ns.election_timeout < 5 * ns.heartbeat_interval:
        raise ConfigError(
            "--election-timeout should be at least 5 times --heartbeat-interval "
            f"(got {ns.election_timeout} and {ns.heartbeat_interval})"
        )
    if ns.snapshot_count < 1:
        raise ConfigError("--snapshot-count must be at least 1")
    try:
        retention = autocompact.parse_retention(
            ns.auto_compaction_mode, ns.auto_compaction_retention
        )
    except ValueError as exc:
        raise ConfigError(f"--auto-compaction-retention: {exc}") from exc
    try:
        corrupt_check = parse_duration(ns.corrupt_check_time)
    except ValueError as exc:
        raise ConfigError(f"--corrupt-check-time: {exc}") from exc
    gates = _feature_gates(ns.feature_gates)
    initial_check = gates.get("InitialCorruptCheck", ns.experimental_initial_corrupt_check)
    token = ns.initial_cluster_token
    adv_peer = _urls(ns.initial_advertise_peer_urls, "initial-advertise-peer-urls")
    initial = ns.initial_cluster or f"{ns.name}={','.join(adv_peer)}"
    members = _parse_initial_cluster(initial, token)
    me = [m for m in members if m.name == ns.name]
    if not me:
        raise ConfigError(f"--initial-cluster has no member named {ns.name!r} (--name)")
    if set(me[0].peer_urls) != set(adv_peer):
        raise ConfigError(
            f"--initial-cluster lists {ns.name} at {','.join(me[0].peer_urls)} but "
            f"--initial-advertise-peer-urls is {','.join(adv_peer)}"
        )
    # Client URLs are not part of the initial member list: each member publishes its own
    # through the log once it runs, so every member learns them the same way.
    client_adv = _urls(ns.advertise_client_urls, "advertise-client-urls")
    listen_client = _urls(ns.listen_client_urls, "listen-client-urls")
    listen_peer = _urls(ns.listen_peer_urls, "listen-peer-urls")
    client_tls = _tls(ns, "")
    peer_tls = _tls(ns, "peer_")
    _match_scheme(listen_client, client_tls, "listen-client-urls", "cert-file")
    _match_scheme(listen_peer, peer_tls, "listen-peer-urls", "peer-cert-file")
    _match_scheme(adv_peer, peer_tls, "initial-advertise-peer-urls", "peer-cert-file")
    return NodeConfig(
        name=ns.name,
        data_dir=Path(ns.data_dir or f"{ns.name}.flotilla"),
        listen_client_urls=listen_client,
        advertise_client_urls=client_adv,
        listen_peer_urls=listen_peer,
        initial_advertise_peer_urls=adv_peer,
        initial_cluster=members,
        initial_cluster_state=ns.initial_cluster_state,
        initial_cluster_token=token,
        heartbeat_interval_ms=ns.heartbeat_interval,
        election_timeout_ms=ns.election_timeout,
        snapshot_count=ns.snapshot_count,
        quota_backend_bytes=ns.quota_backend_bytes,
        leader_lease_reads=ns.leader_lease_reads,
        auto_compaction_mode=ns.auto_compaction_mode,
        auto_compaction_retention=retention,
        corrupt_check_seconds=corrupt_check,
        initial_corrupt_check=initial_check,
        listen_metrics_urls=(
            _urls(ns.listen_metrics_urls, "listen-metrics-urls") if ns.listen_metrics_urls else ()
        ),
        client_tls=client_tls,
        peer_tls=peer_tls,
        member_id=me[0].id,
        cluster_id=cluster_id_of(token),
    )
