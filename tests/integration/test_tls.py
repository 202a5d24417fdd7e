"""MLLP over TLS: the real engine serves a TLS listener and a TLS client gets its ACK."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

pytestmark = pytest.mark.integration

MESSAGE = b"MSH|^~\\&|HIS|HOSP|RIS|RAD|20261123120000||ADT^A01|TLS0001|P|2.5\rPID|1||42^^^HOSP||DOE^JOHN\r"


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tls_listener_answers_over_tls(tmp_path):
    """A message sent over TLS is stored and ACKed over the same TLS connection."""
    cert, key = _self_signed(tmp_path)
    port = _free_port()
    config = tmp_path / "tls.yaml"
    config.write_text(
        f"data_dir: ./data\nmetrics: {{enabled: false}}\nchannels:\n  - name: tls-in\n"
        f"    source: {{type: mllp_listener, port: {port}, tls: {{cert: cert.pem, key: key.pem}}}}\n"
    )
    log = (tmp_path / "engine.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while b"radbridge ready" not in (tmp_path / "engine.log").read_bytes():
            assert proc.poll() is None, (tmp_path / "engine.log").read_text()
            assert time.monotonic() < deadline, "engine did not become ready"
            time.sleep(0.05)
        ctx = ssl.create_default_context(cafile=str(cert))
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"\x0b" + MESSAGE + b"\x1c\r")
            reply = b""
            while not reply.endswith(b"\x1c\r"):
                chunk = tls.recv(4096)
                assert chunk, "connection closed before the ACK"
                reply += chunk
        assert b"MSA|AA|TLS0001" in reply
        # A plain-text client is not answered with an ACK on the TLS port.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
            plain.sendall(b"\x0b" + MESSAGE + b"\x1c\r")
            try:
                data = plain.recv(4096)
            except (ConnectionResetError, TimeoutError):
                data = b""
            assert b"MSA|" not in data
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
