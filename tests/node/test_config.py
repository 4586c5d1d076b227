"""The command line speaks etcd's flags, reads the environment, and refuses bad input."""

from __future__ import annotations

import pytest

from flotilla.node.config import ConfigError, parse
from flotilla.node.durations import parse_duration
from flotilla.node.members import cluster_id_of, member_id_of

THREE = "a=http://127.0.0.1:2380,b=http://127.0.0.1:12380,c=http://127.0.0.1:22380"


def test_an_etcd_command_line_parses() -> None:
    cfg = parse(
        [
            "--name=a",
            "--data-dir=/tmp/a",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--listen-client-urls=http://127.0.0.1:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
            f"--initial-cluster={THREE}",
            "--initial-cluster-token=tok",
            "--heartbeat-interval=50",
            "--election-timeout=500",
        ],
        environ={},
    )
    assert [m.name for m in cfg.initial_cluster] == ["a", "b", "c"]
    assert cfg.member_id == member_id_of(["http://127.0.0.1:2380"], "tok")
    assert cfg.cluster_id == cluster_id_of("tok") != cluster_id_of("other")
    assert cfg.election_ticks == 10


def test_flags_come_from_the_environment_and_the_command_line_wins() -> None:
    env = {
        "FLOTILLA_NAME": "b",
        "FLOTILLA_INITIAL_CLUSTER": THREE,
        "FLOTILLA_INITIAL_ADVERTISE_PEER_URLS": "http://127.0.0.1:12380",
        "FLOTILLA_SNAPSHOT_COUNT": "77",
    }
    cfg = parse([], environ=env)
    assert cfg.name == "b" and cfg.snapshot_count == 77
    cfg = parse(["--snapshot-count=5"], environ=env)
    assert cfg.snapshot_count == 5


def test_leader_lease_reads_are_off_unless_asked_for() -> None:
    base = ["--name=a", "--initial-advertise-peer-urls=http://127.0.0.1:2380"]
    assert parse(base, environ={}).leader_lease_reads is False
    assert parse([*base, "--leader-lease-reads"], environ={}).leader_lease_reads is True
    assert parse([*base, "--leader-lease-reads=false"], environ={}).leader_lease_reads is False
    env = {"FLOTILLA_LEADER_LEASE_READS": "true"}
    assert parse(base, environ=env).leader_lease_reads is True
    with pytest.raises(ConfigError, match="invalid boolean value: 'maybe'"):
        parse([*base, "--leader-lease-reads=maybe"], environ={})


def test_auto_compaction_flags_read_as_etcds() -> None:
    base = ["--name=a", "--initial-advertise-peer-urls=http://127.0.0.1:2380"]
    off = parse(base, environ={})
    assert (off.auto_compaction_mode, off.auto_compaction_retention) == ("periodic", 0.0)
    assert (
        parse([*base, "--auto-compaction-retention=1"], environ={}).auto_compaction_retention
        == 3600
    )
    cfg = parse(
        [*base, "--auto-compaction-mode=revision", "--auto-compaction-retention=1000"], environ={}
    )
    assert (cfg.auto_compaction_mode, cfg.auto_compaction_retention) == ("revision", 1000)
    env = {"FLOTILLA_AUTO_COMPACTION_RETENTION": "30m"}
    assert parse(base, environ=env).auto_compaction_retention == 1800
    with pytest.raises(ConfigError, match="--auto-compaction-retention: '1d' is neither"):
        parse([*base, "--auto-compaction-retention=1d"], environ={})
    with pytest.raises(ConfigError, match="'5m' is not a number of revisions"):
        parse([*base, "--auto-compaction-mode=revision", "--auto-compaction-retention=5m"], {})
    with pytest.raises(ConfigError, match="invalid choice: 'daily'"):
        parse([*base, "--auto-compaction-mode=daily"], environ={})


def test_corruption_check_flags_read_as_etcds() -> None:
    off = parse([], environ={})
    assert (off.corrupt_check_seconds, off.initial_corrupt_check) == (0.0, False)
    # etcd 3.6's names and 3.4/3.5's, which 3.6 still accepts.
    cfg = parse(["--corrupt-check-time=1h30m", "--feature-gates=InitialCorruptCheck=true"], {})
    assert (cfg.corrupt_check_seconds, cfg.initial_corrupt_check) == (5400.0, True)
    cfg = parse(
        ["--experimental-corrupt-check-time=90s", "--experimental-initial-corrupt-check"], {}
    )
    assert (cfg.corrupt_check_seconds, cfg.initial_corrupt_check) == (90.0, True)
    gate_off = ["--experimental-initial-corrupt-check", "--feature-gates=InitialCorruptCheck=false"]
    assert not parse(gate_off, environ={}).initial_corrupt_check
    env = {"FLOTILLA_CORRUPT_CHECK_TIME": "5m"}
    assert parse([], environ=env).corrupt_check_seconds == 300.0
    with pytest.raises(ConfigError, match="--corrupt-check-time: '5' is not a duration"):
        parse(["--corrupt-check-time=5"], environ={})
    with pytest.raises(ConfigError, match="unknown feature gate 'StopGRPCServiceOnDefrag'"):
        parse(["--feature-gates=StopGRPCServiceOnDefrag=true"], environ={})
    with pytest.raises(ConfigError, match="is not InitialCorruptCheck=true or"):
        parse(["--feature-gates=InitialCorruptCheck"], environ={})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("1.5s", 1.5), ("1h30m", 5400.0), ("250ms", 0.25), ("2m0.5s", 120.5)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "1d", "m5", "1h 30m", "-1s"])
def test_what_is_not_a_go_duration(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_etcd_derives_the_same_member_id() -> None:
    # etcd's member ID for peer URL http://localhost:2380 and token "etcd-cluster"
    # (printed by `etcd` at first start; also in etcd's membership tests).
    assert member_id_of(["http://localhost:2380"], "etcd-cluster") == 0x8E9E05C52164694D


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--name=x", f"--initial-cluster={THREE}"], "no member named 'x'"),
        (
            [
                "--name=a",
                f"--initial-cluster={THREE}",
                "--initial-advertise-peer-urls=http://127.0.0.1:9999",
            ],
            "--initial-advertise-peer-urls is",
        ),
        (["--listen-client-urls=localhost"], "not a URL"),
        (["--election-timeout=100"], "at least 5 times"),
        (["--initial-cluster-state=maybe"], "invalid choice"),
        (["--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_bad_command_lines_get_one_clear_error(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(argv, environ={})


TLS_BASE = [
    "--name=m1",
    "--listen-client-urls=https://127.0.0.1:2379",
    "--advertise-client-urls=https://127.0.0.1:2379",
    "--listen-peer-urls=https://127.0.0.1:2380",
    "--initial-advertise-peer-urls=https://127.0.0.1:2380",
    "--cert-file=s.crt",
    "--key-file=s.key",
    "--trusted-ca-file=ca.crt",
    "--peer-cert-file=p.crt",
    "--peer-key-file=p.key",
]


def test_tls_flags_parse_as_etcd_writes_them() -> None:
    cfg = parse([*TLS_BASE, "--client-cert-auth", "--peer-client-cert-auth=false"], environ={})
    assert cfg.client_tls.enabled and cfg.client_tls.client_cert_auth
    assert str(cfg.client_tls.trusted_ca_file) == "ca.crt"
    assert cfg.peer_tls.enabled and not cfg.peer_tls.client_cert_auth
    assert cfg.initial_cluster[0].peer_urls == ("https://127.0.0.1:2380",)


def test_tls_booleans_come_from_the_environment_too() -> None:
    cfg = parse(TLS_BASE, environ={"FLOTILLA_CLIENT_CERT_AUTH": "true"})
    assert cfg.client_tls.client_cert_auth
    with pytest.raises(ConfigError, match="FLOTILLA_CLIENT_CERT_AUTH"):
        parse(TLS_BASE, environ={"FLOTILLA_CLIENT_CERT_AUTH": "maybe"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--peer-cert-file="], "--peer-cert-file and --peer-key-file must be given together"),
        (["--trusted-ca-file=", "--client-cert-auth"], "--client-cert-auth needs --trusted-ca"),
        (["--listen-peer-urls=http://127.0.0.1:2380"], "must be https:// when --peer-cert-file"),
        (["--cert-file=", "--key-file=", "--trusted-ca-file="], "is https but --cert-file"),
    ],
)
def test_tls_settings_that_cannot_work_are_refused(change: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
        parse([*TLS_BASE, *change], environ={})
