"""TLS for a RaftCluster (``spec.tls``): which Secrets hold the certificates, how the operator
creates them when the user names none, and how the operator itself reaches the members.

Three certificates, each in a Secret with ``tls.crt``, ``tls.key`` and ``ca.crt`` (the layout
of ``kubernetes.io/tls`` Secrets and of cert-manager's): the one members present to clients
(``server``), the one they present to each other in both directions (``peer``), and a client
certificate (``client``) for the operator and for applications. Members run with etcd's
``--client-cert-auth`` (when ``clientCertAuth``) and always with ``--peer-client-cert-auth``.

Created by the operator, the certificates come from one CA made for the cluster; the CA's key
stays in ``<name>-tls-ca`` so an administrator can issue more client certificates. Names
cover the pods' DNS names under the headless peer Service (a wildcard, so scaling needs no new
certificate) and the client Service. The operator talks to pods by IP, so its channels check
the server certificate against the client Service's name instead
(``grpc.ssl_target_name_override``).
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from flotilla.node import pki

Obj = dict[str, Any]

CERT_DAYS = 3650
"""Operator-made certificates last ten years: rotation is not automated (yet)."""

ROLES = ("server", "peer", "client")


@dataclass(frozen=True)
class TlsSpec:
    server_secret: str
    peer_secret: str
    client_secret: str
    client_cert_auth: bool
    managed: bool
    """True when the operator creates the Secrets (the user named none)."""


def tls_spec(body: Mapping[str, Any]) -> TlsSpec | None:
    """``spec.tls`` of a RaftCluster, or None when the cluster runs without TLS."""
    raw = (body.get("spec") or {}).get("tls")
    if raw is None:
        return None
    name = body["metadata"]["name"]
    managed = not raw.get("serverSecret")
    return TlsSpec(
        server_secret=raw.get("serverSecret") or f"{name}-tls-server",
        peer_secret=raw.get("peerSecret") or f"{name}-tls-peer",
        client_secret=raw.get("clientSecret") or f"{name}-tls-client",
        client_cert_auth=bool(raw.get("clientCertAuth", True)),
        managed=managed,
    )


def ca_secret_name(name: str) -> str:
    return f"{name}-tls-ca"


def service_host(name: str, namespace: str) -> str:
    """The client Service's name as the certificates carry it and the operator checks it."""
    return f"{name}.{namespace}.svc"


def server_hosts(name: str, namespace: str) -> list[str]:
    peers = f"{name}-peer.{namespace}.svc"
    return [
        name,
        f"{name}.{namespace}",
        service_host(name, namespace),
        f"{service_host(name, namespace)}.cluster.local",
        f"*.{peers}",
        f"*.{peers}.cluster.local",
        "localhost",
    ]


def peer_hosts(name: str, namespace: str) -> list[str]:
    peers = f"{name}-peer.{namespace}.svc"
    return [f"*.{peers}", f"*.{peers}.cluster.local"]


# == certificates made by the operator ========================================================


def _secret(meta: Obj, name: str, files: Mapping[str, bytes]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {**meta, "name": name},
        "data": {k: base64.b64encode(v).decode() for k, v in files.items()},
    }


def new_ca(body: Mapping[str, Any], now: datetime.datetime) -> pki.Pem:
    """A CA for one cluster: (certificate, key) in PEM."""
    meta = body["metadata"]
    return pki.new_ca(
        f"{meta.get('namespace', 'default')}/{meta['name']} flotilla CA", now, CERT_DAYS
    )


def ca_secret(meta: Obj, name: str, ca: pki.Pem) -> Obj:
    return _secret(meta, ca_secret_name(name), {"tls.crt": ca[0], "tls.key": ca[1]})


def ca_from_secret(secret: Mapping[str, Any]) -> pki.Pem:
    data = secret["data"]
    return base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"])


def issued_secrets(
    body: Mapping[str, Any], meta: Obj, ca: pki.Pem, now: datetime.datetime
) -> list[Obj]:
    """The server, peer and client Secrets, signed by ``ca`` (``meta``: labels and owner
    references, the same as the cluster's other objects)."""
    spec = tls_spec(body)
    assert spec is not None
    name = body["metadata"]["name"]
    ns = body["metadata"].get("namespace", "default")
    wanted: list[tuple[str, str, list[str], list[pki.Usage]]] = [
        # Client use too: a member forwards membership calls to the leader's client URL
        # presenting this certificate, and the leader requires client certificates.
        (spec.server_secret, f"{name} server", server_hosts(name, ns), ["server", "client"]),
        (spec.peer_secret, f"{name} peer", peer_hosts(name, ns), ["server", "client"]),
        (spec.client_secret, f"{name} client", [], ["client"]),
    ]
    out = []
    for secret, cn, hosts, usages in wanted:
        cert, key = pki.issue(ca, cn, hosts, usages, now, CERT_DAYS)
        out.append(_secret(meta, secret, {"tls.crt": cert, "tls.key": key, "ca.crt": ca[0]}))
    return out


# == the operator's own connections ============================================================


@dataclass(frozen=True)
class Dialer:
    """How the operator opens a channel to a member: plain, or TLS with its client cert."""

    credentials: grpc.ChannelCredentials | None = None
    server_name: str = ""

    def channel(self, address: str) -> grpc.Channel:
        if self.credentials is None:
            return grpc.insecure_channel(address)
        options = [("grpc.ssl_target_name_override", self.server_name)]
        return grpc.secure_channel(address, self.credentials, options=options)


PLAIN = Dialer()


def dialer_from_secret(body: Mapping[str, Any], secret: Mapping[str, Any] | None) -> Dialer:
    """The dialer for a cluster, given its client Secret as read from the API (None: absent,
    and then no member can be reached yet; observe sees none answer)."""
    spec = tls_spec(body)
    if spec is None:
        return PLAIN
    meta = body["metadata"]
    host = service_host(meta["name"], meta.get("namespace", "default"))
    data = (secret or {}).get("data") or {}
    try:
        cert, key, ca = (base64.b64decode(data[k]) for k in ("tls.crt", "tls.key", "ca.crt"))
    except KeyError:
        # No usable client certificate: a TLS channel that presents none, which members that
        # require one refuse (as they should); never a plain-text one.
        return Dialer(grpc.ssl_channel_credentials(), host)
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    return Dialer(creds, host)
