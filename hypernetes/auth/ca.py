"""The cluster CA, created on first start: a CA key and certificate, the API server's
certificate (SANs 127.0.0.1, ::1, localhost, the host name and any extra names), and the admin
bearer token; plus the kubeconfig writer. Files live in one directory, keys and the token 0600.
An existing CA is reused; the server certificate is re-issued when it lacks a wanted name or
is close to expiry.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS, SERVER_DAYS, RENEW_BEFORE_DAYS = 3650, 365, 30


@dataclass(frozen=True)
class TLSFiles:
    cert: Path  # the server's certificate (PEM)
    key: Path  # its private key (PEM)
    ca: Path  # the CA certificate clients pin


@dataclass(frozen=True)
class ClusterCA:
    dir: Path
    ca_cert: Path
    ca_key: Path
    server: TLSFiles
    admin_token: str


def write_private(path: Path, data: bytes, mode: int) -> None:
    """Write atomically, created with `mode` (never readable by others for a moment)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_ca(cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hypernetes-ca")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(key_path, _key_pem(key), 0o600)
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _names(hosts: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(["127.0.0.1", "::1", "localhost", socket.gethostname(), *hosts]))


def _san(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def _server_ok(cert_path: Path, names: Sequence[str], ca_cert: x509.Certificate) -> bool:
    if not cert_path.exists():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.issuer != ca_cert.subject:
        return False
    if cert.not_valid_after_utc - _now() < dt.timedelta(days=RENEW_BEFORE_DAYS):
        return False
    have = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    return set(_san(names)) <= have


def _new_server(
    cert_path: Path,
    key_path: Path,
    names: Sequence[str],
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hypernetes-apiserver")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_private(key_path, _key_pem(key), 0o600)
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def ensure_ca(directory: Path, *, hosts: Sequence[str] = ()) -> ClusterCA:
    """Create (first start) or load the cluster CA, server certificate and admin token."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_cert_p, ca_key_p = directory / "ca.crt", directory / "ca.key"
    cert_p, key_p = directory / "apiserver.crt", directory / "apiserver.key"
    token_p = directory / "admin.token"
    if not (ca_cert_p.exists() and ca_key_p.exists()):
        _new_ca(ca_cert_p, ca_key_p)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_p.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_p.read_bytes(), None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca_key_p}: expected an EC private key")
    names = _names(hosts)
    if not _server_ok(cert_p, names, ca_cert):
        _new_server(cert_p, key_p, names, ca_cert, ca_key)
    if not token_p.exists():
        write_private(token_p, secrets.token_urlsafe(32).encode() + b"\n", 0o600)
    token = token_p.read_text().strip()
    return ClusterCA(directory, ca_cert_p, ca_key_p, TLSFiles(cert_p, key_p, ca_cert_p), token)


def kubeconfig(
    server_url: str,
    ca_cert: Path,
    token: str,
    *,
    cluster: str = "hypernetes",
    user: str = "admin",
    namespace: str = "default",
) -> dict[str, object]:
    ca_data = base64.b64encode(ca_cert.read_bytes()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [
            {"name": cluster, "cluster": {"server": server_url, "certificate-authority-data": ca_data}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": f"{user}@{cluster}",
                "context": {"cluster": cluster, "user": user, "namespace": namespace},
            }
        ],
        "current-context": f"{user}@{cluster}",
    }


def write_kubeconfig(path: Path, server_url: str, ca_cert: Path, token: str, **kw: str) -> None:
    """Write a kubeconfig (0600: it holds a token) that pins the cluster CA."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = kubeconfig(server_url, ca_cert, token, **kw)
    write_private(path, yaml.safe_dump(doc, sort_keys=False).encode(), 0o600)
