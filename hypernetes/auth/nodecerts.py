"""Certificates between the API servers and the node servers (upstream's kubelet serving
certificate and `apiserver-kubelet-client`), both from the cluster CA:

- a node's serving certificate is signed from the node's own key (a CSR it sends when it joins
  or renews): subject `system:node:<name>`, organisation `system:nodes`, DNS name = the node's
  name (the API server checks the node it dials by that name, never by an address a Node object
  claims), server authentication only;
- the API servers' client certificate, `hypernetes:apiserver`, client authentication only; node
  servers accept no other caller.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hypernetes.auth.ca import ClusterCA, write_private
from hypernetes.objects.names import APISERVER_CLIENT

NODE_PREFIX = "system:node:"
NODE_CERT_DAYS = 30
MAX_CSR_BYTES = 16 * 1024


class BadCSR(ValueError):
    """Not a well-formed, self-signed EC or RSA certificate request."""


def _load_ca(ca: ClusterCA) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(ca.ca_key.read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca.ca_key}: expected an EC private key")
    return cert, key


def _sign(
    ca: ClusterCA,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    usage: x509.ObjectIdentifier,
    days: int,
    san: list[x509.GeneralName] | None = None,
) -> bytes:
    ca_cert, ca_key = _load_ca(ca)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def sign_node_serving(ca: ClusterCA, node: str, csr_pem: str, addresses: list[str]) -> bytes:
    """The serving certificate of node `node` for the key in `csr_pem`. Only the public key of
    the request is used: the names are ours (the node name, and the node's addresses)."""
    if len(csr_pem) > MAX_CSR_BYTES:
        raise BadCSR("the certificate request is too large")
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise BadCSR("not a PEM certificate request") from None
    if not csr.is_signature_valid:
        raise BadCSR("the certificate request's signature is not valid")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise BadCSR("the certificate request must be for an EC key")
    san: list[x509.GeneralName] = [x509.DNSName(node)]
    for a in addresses:
        san.append(x509.IPAddress(ipaddress.ip_address(a)))
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, NODE_PREFIX + node),
        ]
    )
    return _sign(ca, subject, key, ExtendedKeyUsageOID.SERVER_AUTH, NODE_CERT_DAYS, san)


def node_key_and_csr(key_path: Path, node: str) -> str:
    """A new key for this node's server (0600 at `key_path`) and its certificate request."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(key_path, pem, 0o600)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NODE_PREFIX + node)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def ensure_apiserver_client(ca: ClusterCA) -> tuple[Path, Path]:
    """The API servers' client certificate for node servers (made once, next to the CA)."""
    cert_p, key_p = ca.dir / "apiserver-node-client.crt", ca.dir / "apiserver-node-client.key"
    if cert_p.exists() and key_p.exists():
        cert = x509.load_pem_x509_certificate(cert_p.read_bytes())
        if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=30):
            return cert_p, key_p
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, APISERVER_CLIENT)])
    cert_pem = _sign(ca, subject, key.public_key(), ExtendedKeyUsageOID.CLIENT_AUTH, 365)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(key_p, pem, 0o600)
    write_private(cert_p, cert_pem, 0o644)
    return cert_p, key_p
