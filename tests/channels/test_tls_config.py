"""TLS options of the MLLP and DICOM connectors: validation with a place, file checks, and the contexts built."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from channels.dicom.common import ssl_client_context, ssl_server_context
from channels.mllp.tls import TLSClientConfig, TLSServerConfig, client_context, server_context, tls_failure
from engine.config.errors import ConfigError
from engine.config.validate import validate_config
from tests.channels.tls_certs import PKI, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """One throwaway PKI for the module (config files refer to it as pki/...)."""
    return make_pki(tmp_path_factory.mktemp("tls") / "pki")


def config(pki: PKI, source_tls: str, dest_tls: str = "{ca: pki/ca.pem}", enabled: str = "true") -> Path:
    """A config beside the PKI with an MLLP listener and sender using the given inline TLS mappings."""
    path = pki.folder.parent / "radbridge.yaml"
    path.write_text(
        "data_dir: ./data\nmetrics: {enabled: false}\nchannels:\n"
        "  - name: a\n"
        "    source:\n"
        "      type: mllp_listener\n"
        "      port: 0\n"
        f"      tls: {source_tls}\n"
        "    destinations:\n"
        f"      - {{name: out, type: mllp_sender, host: 127.0.0.1, port: 2575, enabled: {enabled}, tls: {dest_tls}}}\n"
        "  - name: b\n"
        "    source: {type: dicom_scp, ae_title: RB, port: 0, tls: {cert: pki/server.pem, key: pki/server.key}}\n"
    )
    return path


def errors(path: Path) -> list[str]:
    """The formatted error lines of validating *path* (empty when it is valid)."""
    try:
        validate_config(path, check_ports=False)
    except ConfigError as exc:
        return [issue.format() for issue in exc.errors]
    return []


def test_valid_tls_config_has_no_errors(pki: PKI) -> None:
    """Readable, matching certificate, key and CA files validate."""
    assert errors(config(pki, "{cert: pki/server.pem, key: pki/server.key, ca: pki/ca.pem}")) == []


def test_missing_and_bad_files_are_reported_with_their_line(pki: PKI) -> None:
    """A missing cert, a CA that is a folder and a sender key without its file each get file:line and the key."""
    (pki.folder / "adir").mkdir(exist_ok=True)
    path = config(
        pki, "{cert: pki/nope.pem, key: pki/server.key, ca: pki/adir}", "{ca: pki/ca.pem, cert: pki/client.pem, key: pki/gone.key}"
    )  # fmt: skip
    found = errors(path)
    assert len(found) == 3, found
    assert found[0].startswith(f"{path}:8:") and "channels[0].source.tls.cert: file not found:" in found[0]
    assert "channels[0].source.tls.ca: not a file:" in found[1]
    assert found[2].startswith(f"{path}:10:") and "channels[0].destinations[0].tls.key: file not found" in found[2]


def test_content_problems_are_reported(pki: PKI) -> None:
    """A CA file without certificates, a key that is not the certificate's, and an encrypted key are errors."""
    (pki.folder / "junk.pem").write_text("not a certificate\n")
    key = serialization.load_pem_private_key(pki.client_key.read_bytes(), None)
    secret = serialization.BestAvailableEncryption(b"secret")
    pkcs8 = serialization.PrivateFormat.PKCS8
    (pki.folder / "locked.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, pkcs8, secret))
    found = errors(
        config(pki, "{cert: pki/server.pem, key: pki/client.key, ca: pki/junk.pem}", "{cert: pki/client.pem, key: pki/locked.key}")
    )  # fmt: skip
    assert any("source.tls.key: certificate and key do not load together" in e for e in found), found
    assert any("source.tls.ca: no PEM certificate in" in e for e in found), found
    assert any("destinations[0].tls.key: encrypted private keys are not supported" in e for e in found), found
    assert len(found) == 3, found


def test_disabled_destination_files_are_not_checked(pki: PKI) -> None:
    """A disabled destination is not built, so its missing certificate is no error."""
    path = config(pki, "{cert: pki/server.pem, key: pki/server.key}", "{ca: pki/missing.pem}", enabled="false")
    assert errors(path) == []


def test_require_client_cert_needs_a_ca(pki: PKI) -> None:
    """require_client_cert without ca is an error at the tls mapping."""
    found = errors(config(pki, "{cert: pki/server.pem, key: pki/server.key, require_client_cert: true}"))
    assert len(found) == 1 and "channels[0].source.tls: Value error, require_client_cert needs ca" in found[0], found


def test_client_key_needs_cert() -> None:
    """A client key without its certificate is refused."""
    with pytest.raises(ValidationError, match="key needs cert"):
        TLSClientConfig(key="client.key")


@pytest.mark.parametrize(
    ("settings", "required"),
    [({}, False), ({"ca": "ca.pem"}, True), ({"ca": "ca.pem", "require_client_cert": False}, False),
     ({"ca": "ca.pem", "require_client_cert": True}, True)],
)  # fmt: skip
def test_client_cert_required_follows_ca_unless_set(settings: dict, required: bool) -> None:
    """Existing configs keep their meaning: ca alone requires client certificates; the option overrides it."""
    cfg = TLSServerConfig(cert="server.pem", key="server.key", **settings)
    assert cfg.client_cert_required is required


@pytest.mark.parametrize(
    ("settings", "mode"),
    [({}, ssl.CERT_NONE), ({"ca": "ca.pem"}, ssl.CERT_REQUIRED),
     ({"ca": "ca.pem", "require_client_cert": False}, ssl.CERT_OPTIONAL)],
)  # fmt: skip
def test_dicom_server_context_verify_mode(pki: PKI, settings: dict, mode: int) -> None:
    """The DICOM server context asks for client certificates as the options say."""
    cfg = TLSServerConfig(cert="server.pem", key="server.key", **settings)
    assert ssl_server_context(cfg, pki.folder).verify_mode == mode


def test_dicom_client_context_verify_off(pki: PKI) -> None:
    """verify: false turns off the server check (encryption only); the default checks name and chain."""
    assert ssl_client_context(TLSClientConfig(ca="ca.pem"), pki.folder).verify_mode == ssl.CERT_REQUIRED
    off = ssl_client_context(TLSClientConfig(verify=False, cert="client.pem", key="client.key"), pki.folder)
    assert off.verify_mode == ssl.CERT_NONE and not off.check_hostname


def test_mllp_server_context_requires_certificate_flag(pki: PKI) -> None:
    """The Twisted server options verify clients with the CA and fail without a certificate unless optional."""
    required = server_context(TLSServerConfig(cert="server.pem", key="server.key", ca="ca.pem"), pki.folder)
    assert required.verify and required.requireCertificate
    optional = TLSServerConfig(cert="server.pem", key="server.key", ca="ca.pem", require_client_cert=False)
    assert not server_context(optional, pki.folder).requireCertificate
    assert not server_context(TLSServerConfig(cert="server.pem", key="server.key"), pki.folder).verify
    client_context(TLSClientConfig(ca="ca.pem", cert="client.pem", key="client.key"), pki.folder, "localhost")


def test_tls_failure_names_the_cause() -> None:
    """An OpenSSL error list becomes one readable reason; other connection losses are not TLS failures."""
    from OpenSSL import SSL
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    err = SSL.Error([("SSL routines", "", "certificate verify failed")])
    assert tls_failure(Failure(err)) == "TLS handshake failed: certificate verify failed"
    assert tls_failure(Failure(ConnectionDone())) is None
