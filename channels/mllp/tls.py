"""TLS settings shared by the MLLP and DICOM connectors, their file checks, and the MLLP (Twisted) contexts.

MLLP uses pyOpenSSL through ``twisted.internet.ssl``; DICOM uses the stdlib ``ssl`` module
(``channels/dicom/common.py``). Both read the same options; file names are relative to the config file.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from engine.config.models import Strict

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
Issue = tuple[tuple[str, ...], str]  # (key inside the TLS mapping, message)


class TLSServerConfig(Strict):
    """Our certificate and key; with ``ca``, client certificates are checked against it (required by default)."""

    cert: str = Field(description="PEM certificate file (the server certificate first, then any intermediates)")
    key: str = Field(description="PEM private key file (unencrypted)")
    ca: str | None = Field(None, description="PEM CA file: client certificates must be signed by one of these")
    require_client_cert: bool | None = Field(
        None, description="refuse clients without a valid certificate (default: true when ca is given)"
    )

    @model_validator(mode="after")
    def _needs_ca(self) -> TLSServerConfig:
        if self.require_client_cert and not self.ca:
            raise ValueError("require_client_cert needs ca (the CA that signs the client certificates)")
        return self

    @property
    def client_cert_required(self) -> bool:
        """Whether a client without a certificate signed by ``ca`` is refused."""
        return self.require_client_cert if self.require_client_cert is not None else self.ca is not None

    def check_files(self, base: Path) -> list[Issue]:
        """Problems with the certificate, key and CA files, found now rather than at the first connection."""
        return _check(base, self.cert, self.key, self.ca)


class TLSClientConfig(Strict):
    """How a sender checks the server and, optionally, which certificate it presents."""

    ca: str | None = Field(None, description="PEM CA file to trust (default: the system store)")
    cert: str | None = Field(None, description="client certificate (PEM) to present")
    key: str | None = Field(None, description="client private key (PEM; default: in the cert file)")
    server_name: str | None = Field(None, description="name expected in the server certificate (default: host)")
    verify: bool = Field(True, description="check the server certificate and its name (false: encryption only)")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TLSClientConfig:
        if self.key and not self.cert:
            raise ValueError("key needs cert (the client certificate it belongs to)")
        return self

    def check_files(self, base: Path) -> list[Issue]:
        """Problems with the CA and client certificate files."""
        return _check(base, self.cert, self.key, self.ca)


def _check(base: Path, cert: str | None, key: str | None, ca: str | None) -> list[Issue]:
    """Each file exists and is readable; the CA holds certificates; cert and key load together."""
    issues: list[Issue] = []
    data: dict[str, bytes] = {}
    for name, value in (("cert", cert), ("key", key), ("ca", ca)):
        if value is None:
            continue
        path = base / value
        try:
            data[name] = path.read_bytes()
        except FileNotFoundError:
            issues.append(((name,), f"file not found: {path}"))
        except IsADirectoryError:
            issues.append(((name,), f"not a file: {path}"))
        except OSError as exc:
            issues.append(((name,), f"cannot read {path}: {exc.strerror or exc}"))
    if "ca" in data:
        if not _PEM_CERT.search(data["ca"]):
            issues.append((("ca",), f"no PEM certificate in {base / ca}"))
        else:
            try:
                ssl.create_default_context(cafile=str(base / ca))
            except ssl.SSLError as exc:
                issues.append((("ca",), f"cannot load the CA certificates: {exc.reason or exc}"))
    if "cert" in data and not _PEM_CERT.search(data["cert"]):
        issues.append((("cert",), f"no PEM certificate in {base / cert}"))
    elif "cert" in data and (key is None or "key" in data):
        key_data = data.get("key", data["cert"])
        where = ("key",) if key else ("cert",)
        if b"ENCRYPTED" in key_data:
            issues.append((where, "encrypted private keys are not supported"))
        elif b"PRIVATE KEY-----" not in key_data:
            issues.append((where, f"no PEM private key in {base / (key or cert)}"))
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            try:
                context.load_cert_chain(str(base / cert), str(base / key) if key else None, password=_no_password)
            except ssl.SSLError as exc:
                issues.append((where, f"certificate and key do not load together: {exc.reason or exc}"))
    return issues


def _no_password() -> str:
    return ""  # never let OpenSSL prompt on the terminal


def _certificates(pem: bytes) -> list[Any]:
    """Every certificate in a PEM file, as Twisted ``Certificate`` objects."""
    from twisted.internet import ssl as tssl

    return [tssl.Certificate.loadPEM(block) for block in _PEM_CERT.findall(pem)]


def _private(base: Path, cert: str, key: str | None) -> tuple[Any, list[Any]]:
    """Our ``PrivateCertificate`` (first certificate + key) and the chain certificates after it."""
    from twisted.internet import ssl as tssl

    pem = (base / cert).read_bytes()
    blocks = _PEM_CERT.findall(pem)
    key_pem = (base / key).read_bytes() if key else pem
    private = tssl.PrivateCertificate.loadPEM(blocks[0] + b"\n" + key_pem)
    return private, [tssl.Certificate.loadPEM(b).original for b in blocks[1:]]


def server_context(cfg: TLSServerConfig, base: Path) -> Any:
    """A context factory for ``listenSSL``: our chain, and client certificates checked as configured."""
    from twisted.internet import ssl as tssl

    private, chain = _private(base, cfg.cert, cfg.key)
    ca = [c.original for c in _certificates((base / cfg.ca).read_bytes())] if cfg.ca else None
    return tssl.CertificateOptions(
        privateKey=private.privateKey.original,
        certificate=private.original,
        extraCertChain=chain,
        verify=ca is not None,
        caCerts=ca,
        requireCertificate=cfg.client_cert_required,
    )


def client_context(cfg: TLSClientConfig, base: Path, host: str) -> Any:
    """A client connection creator for TLS endpoints; the server is checked unless ``verify`` is false."""
    from twisted.internet import ssl as tssl

    client_cert, chain = _private(base, cfg.cert, cfg.key) if cfg.cert else (None, [])
    if not cfg.verify:
        if client_cert is None:
            return tssl.CertificateOptions()
        return tssl.CertificateOptions(
            privateKey=client_cert.privateKey.original, certificate=client_cert.original, extraCertChain=chain
        )
    trust = tssl.trustRootFromCertificates(_certificates((base / cfg.ca).read_bytes())) if cfg.ca else None
    extra = {"extraCertChain": chain} if chain else None
    return tssl.optionsForClientTLS(
        cfg.server_name or host, trustRoot=trust, clientCertificate=client_cert, extraCertificateOptions=extra
    )


def tls_failure(reason: Any) -> str | None:
    """``"TLS handshake failed: ..."`` when a connection-lost *reason* is a TLS error, else ``None``."""
    value = getattr(reason, "value", reason)
    kind = type(value)
    if not (kind.__module__.startswith(("OpenSSL", "service_identity")) or kind.__name__ == "VerificationError"):
        return None
    mismatched = [getattr(e, "mismatched_id", None) for e in getattr(value, "errors", ())]
    names = [getattr(m, "hostname", None) or getattr(m, "ip", None) for m in mismatched if m is not None]
    if names:
        shown = ", ".join(n.decode() if isinstance(n, bytes) else str(n) for n in names)
        return f"TLS handshake failed: the server certificate is not valid for {shown}"
    args = getattr(value, "args", ())
    if args and isinstance(args[0], list) and all(isinstance(e, tuple) for e in args[0]):
        detail = "; ".join(str(e[-1]) for e in args[0] if e and e[-1]) or kind.__name__
    else:
        detail = str(value) or kind.__name__
    return f"TLS handshake failed: {detail}"
