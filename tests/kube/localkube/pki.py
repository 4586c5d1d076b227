"""Certificates, keys and kubeconfigs for the local cluster.

Everything is generated with ``cryptography`` on first start and kept in the state
directory, so a cluster that is brought down and up again keeps trusting the same CA.
All identities are client certificates signed by one CA: the apiserver authenticates
them with ``--client-ca-file`` and the subject's O (group) / CN (user) drive RBAC.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class Identity:
    """A client identity: file stem, user name (CN) and groups (O)."""

    stem: str
    user: str
    groups: tuple[str, ...] = ()


# system:masters bypasses RBAC; the two control-plane components get the
# identities their default ClusterRoleBindings expect.
CLIENTS = (
    Identity("admin", "kubernetes-admin", ("system:masters",)),
    Identity("controller-manager", "system:kube-controller-manager"),
    Identity("scheduler", "system:kube-scheduler"),
    Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)),
)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(cn: str, groups: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: rsa.RSAPrivateKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


class Pki:
    """The on-disk PKI of one cluster, rooted at ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    def cert(self, stem: str) -> Path:
        return self.dir / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        return self.dir / f"{stem}.key"

    def ensure(self, server_ips: list[str], server_names: list[str]) -> None:
        """Create whatever is missing: CA, serving cert, client certs, SA key pair."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.ca_cert.exists():
            ca_key = _key()
            name = _name("flotilla-local-ca")
            ca = (
                _builder(name, name, ca_key)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True,
                        key_cert_sign=True,
                        crl_sign=True,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .sign(ca_key, hashes.SHA256())
            )
            _write_key(self.key("ca"), ca_key)
            _write_cert(self.ca_cert, ca)
        ca_key_loaded = serialization.load_pem_private_key(self.key("ca").read_bytes(), None)
        assert isinstance(ca_key_loaded, rsa.RSAPrivateKey)
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())

        if not self.cert("apiserver").exists():
            sans: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
            sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
            self._issue(
                ca_cert,
                ca_key_loaded,
                "apiserver",
                _name("kube-apiserver"),
                ExtendedKeyUsageOID.SERVER_AUTH,
                sans,
            )
        for ident in CLIENTS:
            if not self.cert(ident.stem).exists():
                self._issue(
                    ca_cert,
                    ca_key_loaded,
                    ident.stem,
                    _name(ident.user, ident.groups),
                    ExtendedKeyUsageOID.CLIENT_AUTH,
                )
        if not self.key("sa").exists():
            sa = _key()
            _write_key(self.key("sa"), sa)
            (self.dir / "sa.pub").write_bytes(
                sa.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )

    def _issue(
        self,
        ca_cert: x509.Certificate,
        ca_key: rsa.RSAPrivateKey,
        stem: str,
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName] | None = None,
    ) -> None:
        key = _key()
        builder = (
            _builder(subject, ca_cert.subject, key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        _write_key(self.key(stem), key)
        _write_cert(self.cert(stem), builder.sign(ca_key, hashes.SHA256()))

    def write_kubeconfig(self, path: Path, stem: str, server: str) -> None:
        """Write a kubeconfig for the client identity ``stem`` that plain kubectl can use."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "flotilla-local",
                    "cluster": {"server": server, "certificate-authority": str(self.ca_cert)},
                }
            ],
            "users": [
                {
                    "name": stem,
                    "user": {
                        "client-certificate": str(self.cert(stem)),
                        "client-key": str(self.key(stem)),
                    },
                }
            ],
            "contexts": [
                {"name": "flotilla-local", "context": {"cluster": "flotilla-local", "user": stem}}
            ],
            "current-context": "flotilla-local",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
