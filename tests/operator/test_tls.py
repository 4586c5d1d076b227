"""spec.tls: the flags and mounts of the pods, the certificates the operator makes, and how
the operator reaches members; pure functions, plus the Secrets step against an in-memory
API."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from flotilla.operator import act, resources, tls

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def body(tls_spec: dict[str, Any] | None = None, name: str = "kv") -> dict[str, Any]:
    spec: dict[str, Any] = {"version": "1.0.0", "replicas": 3}
    if tls_spec is not None:
        spec["tls"] = tls_spec
    return {
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "RaftCluster",
        "metadata": {"name": name, "namespace": "prod", "uid": "0123456789abcdef"},
        "spec": spec,
    }


def container(b: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = resources.statefulset(b)["spec"]["template"]["spec"]["containers"][0]
    return c


def test_without_tls_everything_is_plain_http() -> None:
    args = container(body())["args"]
    assert not [a for a in args if "https" in a or "cert" in a]
    assert "volumes" not in resources.statefulset(body())["spec"]["template"]["spec"]
    assert tls.tls_spec(body()) is None


def test_with_tls_urls_are_https_and_the_secrets_are_mounted_read_only() -> None:
    b = body({})
    c = container(b)
    args = c["args"]
    for flag in ("listen-client-urls", "advertise-client-urls", "listen-peer-urls"):
        (value,) = [a for a in args if a.startswith(f"--{flag}=")]
        assert value.split("=", 1)[1].startswith("https://"), value
    initial = next(a for a in args if a.startswith("--initial-cluster="))
    assert initial.count("https://kv-") == 3
    assert f"--cert-file={resources.TLS_MOUNT}/server/tls.crt" in args
    assert f"--peer-trusted-ca-file={resources.TLS_MOUNT}/peer/ca.crt" in args
    assert "--client-cert-auth" in args and "--peer-client-cert-auth" in args
    # Probes stay on the plain metrics port.
    assert "--listen-metrics-urls=http://0.0.0.0:2381" in args
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 2381}
    pod = resources.statefulset(b)["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"]}
    assert secrets == {"tls-server": "kv-tls-server", "tls-peer": "kv-tls-peer"}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["tls-peer"]["readOnly"] and mounts["tls-peer"]["mountPath"].endswith("/peer")


def test_user_secrets_and_client_cert_auth_off() -> None:
    b = body(
        {
            "serverSecret": "my-server",
            "peerSecret": "my-peer",
            "clientSecret": "my-client",
            "clientCertAuth": False,
        }
    )
    spec = tls.tls_spec(b)
    assert spec == tls.TlsSpec("my-server", "my-peer", "my-client", False, managed=False)
    args = container(b)["args"]
    assert "--client-cert-auth" not in args and "--peer-client-cert-auth" in args
    pod = resources.statefulset(b)["spec"]["template"]["spec"]
    assert {v["secret"]["secretName"] for v in pod["volumes"]} == {"my-server", "my-peer"}


def test_tls_changes_the_config_hash_and_the_peer_urls_of_new_members() -> None:
    from flotilla.operator.model import config_hash

    assert config_hash(body({})["spec"]) != config_hash(body()["spec"])
    assert resources.peer_url("kv", "prod", 3, resources.scheme(body({}))).startswith("https://")
    assert resources.peer_url("kv", "prod", 3).startswith("http://")


def _cert(secret: dict[str, Any], key: str = "tls.crt") -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(secret["data"][key]))


def _names(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return list(ext.value.get_values_for_type(x509.DNSName))


def _usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_made_certificates_chain_to_the_ca_and_cover_the_names() -> None:
    b = body({})
    ca = tls.new_ca(b, NOW)
    meta = resources.owned_metadata(b)
    made = {s["metadata"]["name"]: s for s in tls.issued_secrets(b, meta, ca, NOW)}
    assert set(made) == {"kv-tls-server", "kv-tls-peer", "kv-tls-client"}
    ca_cert = x509.load_pem_x509_certificate(ca[0])
    ca_key = ca_cert.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    for s in made.values():
        assert s["type"] == "kubernetes.io/tls"
        assert s["metadata"]["ownerReferences"][0]["kind"] == "RaftCluster"
        assert base64.b64decode(s["data"]["ca.crt"]) == ca[0]
        _cert(s).verify_directly_issued_by(ca_cert)
    server, peer, client = (made[f"kv-tls-{r}"] for r in ("server", "peer", "client"))
    pod_host = resources.pod_host("kv", "prod", "kv-4")  # any ordinal: a wildcard
    assert pod_host.split(".", 1)[1] in {n.removeprefix("*.") for n in _names(_cert(peer))}
    assert pod_host.split(".", 1)[1] in {n.removeprefix("*.") for n in _names(_cert(server))}
    assert tls.service_host("kv", "prod") in _names(_cert(server))
    assert _usages(_cert(peer)) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    assert _usages(_cert(client)) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    # Members forward membership calls to the leader's client URL with this certificate.
    assert _usages(_cert(server)) == _usages(_cert(peer))


class SecretsApi:
    """The two calls ensure_tls_secrets makes, on a dict."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.created: list[str] = []

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert kind == "secrets" and namespace == "prod"
        return self.objects.get(name)

    def create(self, kind: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        assert name not in self.objects, f"{name} created twice"
        self.objects[name] = obj
        self.created.append(name)
        return obj


def test_secrets_are_made_once_and_a_half_done_pass_is_completed_from_the_same_ca() -> None:
    api = SecretsApi()
    b = body({})
    act.ensure_tls_secrets(api, b)  # type: ignore[arg-type]
    assert api.created == ["kv-tls-ca", "kv-tls-server", "kv-tls-peer", "kv-tls-client"]
    act.ensure_tls_secrets(api, b)  # type: ignore[arg-type]
    assert len(api.created) == 4, "existing Secrets must never be replaced"

    ca_cert = _cert(api.objects["kv-tls-ca"])
    del api.objects["kv-tls-client"]  # as if the operator stopped before writing it
    act.ensure_tls_secrets(api, b)  # type: ignore[arg-type]
    _cert(api.objects["kv-tls-client"]).verify_directly_issued_by(ca_cert)


@pytest.mark.parametrize(
    "spec", [None, {"serverSecret": "a", "peerSecret": "b", "clientSecret": "c"}]
)
def test_nothing_is_made_without_tls_or_with_user_secrets(spec: dict[str, Any] | None) -> None:
    api = SecretsApi()
    act.ensure_tls_secrets(api, body(spec))  # type: ignore[arg-type]
    assert api.created == []


def test_the_operator_dials_members_with_its_client_certificate() -> None:
    assert tls.dialer_from_secret(body(), None) is tls.PLAIN
    b = body({})
    ca = tls.new_ca(b, NOW)
    client = tls.issued_secrets(b, {}, ca, NOW)[2]
    d = tls.dialer_from_secret(b, client)
    assert d.credentials is not None and d.server_name == "kv.prod.svc"
    # Without the Secret: still TLS (members refuse it), never plain text.
    missing = tls.dialer_from_secret(b, None)
    assert missing.credentials is not None
