"""Transport security: the certificates a member presents and trusts, as gRPC credentials.

Two independent settings, as in etcd: one for the client URLs (``--cert-file``,
``--key-file``, ``--trusted-ca-file``, ``--client-cert-auth``) and one for the peer URLs
(``--peer-cert-file``, ``--peer-key-file``, ``--peer-trusted-ca-file``,
``--peer-client-cert-auth``). The same files serve both directions: a member's server
presents its certificate, and its outgoing connections (to peers, or to the leader's client
URL when it forwards a membership call) present the same certificate and verify the other
side against the trusted CA. The files are read once, at start-up, so a missing or unreadable
file is a configuration error and not a failure later in the middle of a handshake.
"""

from __future__ import annotations

import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc


class TlsError(ValueError):
    """A certificate, key or CA file cannot be used."""


@dataclass(frozen=True)
class TlsFiles:
    """Paths as given on the command line; ``None`` when TLS is off for that side."""

    cert_file: Path | None = None
    key_file: Path | None = None
    trusted_ca_file: Path | None = None
    client_cert_auth: bool = False

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


@dataclass(frozen=True)
class TlsMaterial:
    """The PEM bytes of one side (client or peer), loaded and checked."""

    cert: bytes
    key: bytes
    ca: bytes | None
    client_cert_auth: bool

    def server_context(self) -> ssl.SSLContext:
        """For the members' servers: TLS 1.2 or later, ALPN ``h2``, client certificates
        required with ``client_cert_auth`` (checked against the CA when one is given)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["h2"])
        _load_pair(ctx, self.cert, self.key)
        if self.ca is not None:
            ctx.load_verify_locations(cadata=self.ca.decode())
            ctx.verify_mode = ssl.CERT_REQUIRED if self.client_cert_auth else ssl.CERT_OPTIONAL
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """What ``channel_credentials`` gives, for a connection on the ``ssl`` module."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["h2"])
        if self.ca is not None:
            ctx.load_verify_locations(cadata=self.ca.decode())
        _load_pair(ctx, self.cert, self.key)
        return ctx

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Verify the server against the trusted CA (the system's roots without one) and
        present our own certificate, which a server asking for client certificates needs."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def _load_pair(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # load_cert_chain reads files only; the key never lands anywhere but a private file
    # that is gone before this returns.
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "pair.pem"
        path.touch(mode=0o600)
        path.write_bytes(cert + b"\n" + key)
        ctx.load_cert_chain(path)


def check(files: TlsFiles, prefix: str) -> None:
    """Refuse incomplete settings; ``prefix`` is ``""`` or ``"peer-"`` for the messages."""
    if (files.cert_file is None) != (files.key_file is None):
        raise TlsError(f"--{prefix}cert-file and --{prefix}key-file must be given together")
    if files.client_cert_auth and files.trusted_ca_file is None:
        raise TlsError(f"--{prefix}client-cert-auth needs --{prefix}trusted-ca-file")
    if files.client_cert_auth and files.cert_file is None:
        raise TlsError(
            f"--{prefix}client-cert-auth needs --{prefix}cert-file and --{prefix}key-file"
        )
    if files.trusted_ca_file is not None and files.cert_file is None:
        raise TlsError(
            f"--{prefix}trusted-ca-file needs --{prefix}cert-file and --{prefix}key-file"
        )


def load(files: TlsFiles, prefix: str) -> TlsMaterial | None:
    """Read the files of one side; ``None`` if TLS is off for it."""
    check(files, prefix)
    if files.cert_file is None or files.key_file is None:
        return None
    cert = _read(files.cert_file, f"--{prefix}cert-file", b"CERTIFICATE")
    key = _read(files.key_file, f"--{prefix}key-file", b"PRIVATE KEY")
    ca = None
    if files.trusted_ca_file is not None:
        ca = _read(files.trusted_ca_file, f"--{prefix}trusted-ca-file", b"CERTIFICATE")
    return TlsMaterial(cert, key, ca, files.client_cert_auth)


def _read(path: Path, flag: str, marker: bytes) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsError(f"{flag}: cannot read {path}: {exc.strerror}") from exc
    # gRPC reports a bad PEM only at the first handshake, as an opaque failure: catch the
    # obvious mistakes (an empty file, a key where a certificate belongs) here.
    if b"-----BEGIN " not in data or marker not in data:
        raise TlsError(f"{flag}: {path} holds no PEM {marker.decode().lower()}")
    return data
