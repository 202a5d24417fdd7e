"""A throwaway PKI for TLS tests: a CA, a server certificate (localhost, 127.0.0.1), a client certificate.

Also a second, unrelated CA with its own client certificate, for handshakes that must fail. Made with
``cryptography`` in the test's folder; nothing is read from or written to the system.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class PKI:
    """Paths of the PEM files written by :func:`make_pki` (all in one folder)."""

    folder: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path

    def server_context(self, require_client_cert: bool = True) -> ssl.SSLContext:
        """A stdlib server context with the server certificate, checking clients against the CA."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        context.load_verify_locations(self.ca)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        return context

    def client_context(self, cert: bool = True, ca: Path | None = None) -> ssl.SSLContext:
        """A stdlib client context trusting *ca* (default: the CA), presenting the client certificate if *cert*."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca or self.ca))
        if cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str, issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None, *, ca: bool = False,
    server: bool = False,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:  # fmt: skip
    """A key and a certificate for *subject*, signed by *issuer* (self-signed when None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    signer_key, signer = issuer if issuer else (key, None)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(signer.subject if signer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), critical=False)
    )
    if ca:
        usage = dict(key_cert_sign=True, crl_sign=True, digital_signature=False)
    else:
        usage = dict(key_cert_sign=False, crl_sign=False, digital_signature=True)
        eku = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    builder = builder.add_extension(
        x509.KeyUsage(content_commitment=False, key_encipherment=False, data_encipherment=False,
                      key_agreement=False, encipher_only=False, decipher_only=False, **usage),
        critical=True,
    )  # fmt: skip
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(signer_key, hashes.SHA256())


def _write(folder: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pkcs8, none = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, pkcs8, none))
    return cert_path, key_path


def make_pki(folder: Path) -> PKI:
    """Write ca.pem, server.pem/.key, client.pem/.key, other-ca.pem and other-client.pem/.key into *folder*."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = _issue("radbridge test CA", None, ca=True)
    other = _issue("some other CA", None, ca=True)
    ca_path, _ = _write(folder, "ca", *ca)
    other_path, _ = _write(folder, "other-ca", *other)
    server = _write(folder, "server", *_issue("localhost", ca, server=True))
    client = _write(folder, "client", *_issue("modality-1", ca))
    stranger = _write(folder, "other-client", *_issue("stranger", other))
    return PKI(folder, ca_path, *server, *client, other_path, *stranger)
