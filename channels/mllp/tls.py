"""TLS settings shared by the MLLP listener and sender (pyOpenSSL through twisted.internet.ssl)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from engine.config.models import Strict


class TLSServerConfig(Strict):
    """Server certificate; with ``ca`` set, clients must present a certificate signed by it."""

    cert: str = Field(description="PEM certificate file")
    key: str = Field(description="PEM private key file")
    ca: str | None = Field(None, description="PEM CA file; when given, client certificates are required")


class TLSClientConfig(Strict):
    """How the sender checks the server (and, optionally, presents its own certificate)."""

    ca: str | None = Field(None, description="PEM CA file to trust (default: the system store)")
    cert: str | None = Field(None, description="client certificate (PEM)")
    key: str | None = Field(None, description="client private key (PEM)")
    server_name: str | None = Field(None, description="name expected in the server certificate (default: host)")


def _read(base: Path, name: str) -> bytes:
    return (base / name).read_bytes()


def server_context(cfg: TLSServerConfig, base: Path) -> Any:
    """A context factory for ``listenSSL``."""
    from twisted.internet import ssl

    cert = ssl.PrivateCertificate.loadPEM(_read(base, cfg.cert) + b"\n" + _read(base, cfg.key))
    if cfg.ca:
        return cert.options(ssl.Certificate.loadPEM(_read(base, cfg.ca)))
    return cert.options()


def client_context(cfg: TLSClientConfig, base: Path, host: str) -> Any:
    """A client connection creator for ``connectSSL``/TLS endpoints."""
    from twisted.internet import ssl

    trust = ssl.Certificate.loadPEM(_read(base, cfg.ca)) if cfg.ca else None
    client_cert = None
    if cfg.cert and cfg.key:
        client_cert = ssl.PrivateCertificate.loadPEM(_read(base, cfg.cert) + b"\n" + _read(base, cfg.key))
    return ssl.optionsForClientTLS(cfg.server_name or host, trustRoot=trust, clientCertificate=client_cert)
