"""Certificate authorities and certificates for the TLS tests, made with ``cryptography``.

Real X.509 files on disk, as an operator would hand them to etcd: a CA, and certificates it
signs for servers and clients (one certificate may serve both, as etcd's docs suggest for
peers).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from flotilla.node import pki


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


@dataclass
class CertAuthority:
    name: str
    root: Path
    pem: pki.Pem

    @property
    def cert_file(self) -> Path:
        return self.root / f"{self.name}-ca.crt"

    @classmethod
    def create(cls, root: Path, name: str) -> CertAuthority:
        root.mkdir(parents=True, exist_ok=True)
        ca = cls(name, root, pki.new_ca(f"{name} test CA", _now(), days=1))
        ca.cert_file.write_bytes(ca.pem[0])
        return ca

    def issue(self, cn: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Issued:
        """A certificate for ``cn``, valid as server and client, for ``hosts`` (IPs or names)."""
        cert, key = pki.issue(self.pem, cn, hosts, ["server", "client"], _now(), days=1)
        issued = Issued(self.root / f"{self.name}-{cn}.crt", self.root / f"{self.name}-{cn}.key")
        issued.cert.write_bytes(cert)
        issued.key.write_bytes(key)
        return issued


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def node_flags(ca: CertAuthority, server: Issued, peer: Issued) -> list[str]:
    """flotilla-node (or etcd) flags for TLS on both sides, with client certificates required."""
    return [
        f"--cert-file={server.cert}",
        f"--key-file={server.key}",
        f"--trusted-ca-file={ca.cert_file}",
        "--client-cert-auth",
        f"--peer-cert-file={peer.cert}",
        f"--peer-key-file={peer.key}",
        f"--peer-trusted-ca-file={ca.cert_file}",
        "--peer-client-cert-auth",
    ]
