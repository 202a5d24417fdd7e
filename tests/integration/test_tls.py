"""MLLP over TLS with real handshakes on loopback: the engine's listener (client certificates required,
optional, or not asked for) and its sender to a TLS downstream that requires a client certificate.

Certificates come from :func:`tests.channels.tls_certs.make_pki` (a CA, a server certificate for
localhost/127.0.0.1, a client certificate, and an unrelated CA with its own client certificate).
"""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest

from tests.channels.tls_certs import PKI, make_pki
from tests.integration.helpers import (
    CR,
    EB,
    DownstreamReceiver,
    frame,
    free_port,
    make_orm,
    run_cli,
    search_messages,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    """A fresh CA, server and client certificates under tmp_path/pki."""
    return make_pki(tmp_path / "pki")


def tls_exchange(port: int, message: str, context: ssl.SSLContext, server_name: str = "localhost") -> bytes:
    """Send one frame over TLS and return the reply (``b""`` when the peer closes or the handshake fails)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            tls.sendall(frame(message))
            reply = b""
            while not reply.endswith(EB + CR):
                chunk = tls.recv(4096)
                if not chunk:
                    break
                reply += chunk
            return reply
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return b""
    finally:
        raw.close()


def plain_exchange(port: int, message: str) -> bytes:
    """Send one frame without TLS to a TLS port; whatever comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        plain.sendall(frame(message))
        try:
            return plain.recv(4096)
        except (ConnectionResetError, TimeoutError):
            return b""


def listener(name: str, port: int, **tls: Any) -> dict[str, Any]:
    """A channel with an mllp_listener served over TLS with the server certificate and *tls* extras."""
    settings = {"cert": "pki/server.pem", "key": "pki/server.key", **tls}
    return {"name": name, "source": {"type": "mllp_listener", "port": port, "tls": settings}}


def test_listener_client_certificates(tmp_path: Path, pki: PKI, engine_factory) -> None:
    """Required client certificates admit the CA's client and refuse others; optional ones admit anonymous clients."""
    required, optional, server_only = free_port(), free_port(), free_port()
    config = write_config(
        tmp_path / "tls.yaml",
        {
            "data_dir": "./data",
            "metrics": {"enabled": False},
            "channels": [
                listener("required", required, ca="pki/ca.pem"),  # ca alone: client certificates required
                listener("optional", optional, ca="pki/ca.pem", require_client_cert=False),
                listener("server-only", server_only),
            ],
        },
    )
    engine = engine_factory(config).start_ready()
    client, anonymous = pki.client_context(), pki.client_context(cert=False)
    stranger = pki.client_context(cert=False)
    stranger.load_cert_chain(pki.other_client_cert, pki.other_client_key)

    assert b"MSA|AA|R1" in tls_exchange(required, make_orm("R1", "1", "A1"), client)
    assert tls_exchange(required, make_orm("R2", "2", "A2"), anonymous) == b""
    assert tls_exchange(required, make_orm("R3", "3", "A3"), stranger) == b""
    assert b"MSA|" not in plain_exchange(required, make_orm("R4", "4", "A4"))
    assert b"MSA|AA|R5" in tls_exchange(required, make_orm("R5", "5", "A5"), client, "127.0.0.1")  # still serving

    assert b"MSA|AA|O1" in tls_exchange(optional, make_orm("O1", "1", "A1"), anonymous)
    assert b"MSA|AA|O2" in tls_exchange(optional, make_orm("O2", "2", "A2"), client)
    assert tls_exchange(optional, make_orm("O3", "3", "A3"), stranger) == b""  # presented, so it must verify

    assert b"MSA|AA|S1" in tls_exchange(server_only, make_orm("S1", "1", "A1"), anonymous)
    distrust = pki.client_context(cert=False, ca=pki.other_ca)  # the client does not trust our server
    assert tls_exchange(server_only, make_orm("S2", "2", "A2"), distrust) == b""

    assert engine.running
    assert engine.terminate() == 0
    stored = sorted(row["control_id"] for row in search_messages(config))
    assert stored == ["O1", "O2", "R1", "R5", "S1"]
    log = engine.log()
    assert "TLS handshake failed" in log
    assert "DOE" not in log


class TLSDownstream(DownstreamReceiver):
    """The MLLP downstream of the helpers behind a TLS server socket; records each client's certificate CN."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__()
        self.context = context
        self.peers: list[str] = []
        self.refused = 0

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            with self._lock:
                self.refused += 1
                self._conns.discard(conn)
            conn.close()
            return
        cert = tls.getpeercert() or {}
        with self._lock:
            self.peers.append(dict(x[0] for x in cert.get("subject", ())).get("commonName", ""))
            self._conns.discard(conn)
            self._conns.add(tls)
        super()._serve(tls)


@pytest.fixture
def tls_downstream(pki: PKI) -> Any:
    """A TLS downstream requiring a client certificate signed by the test CA, stopped at teardown."""
    receiver = TLSDownstream(pki.server_context(require_client_cert=True)).start()
    yield receiver
    receiver.stop()


def test_sender_to_tls_downstream(tmp_path: Path, pki: PKI, tls_downstream: TLSDownstream, engine_factory) -> None:
    """The sender delivers when it verifies the server and presents its certificate; bad TLS fails and is retried."""
    port = free_port()
    good = {"ca": "pki/ca.pem", "cert": "pki/client.pem", "key": "pki/client.key"}
    destinations = {
        "by-name": {**good, "server_name": "localhost"},
        "by-ip": good,  # server_name defaults to host: the certificate's IP address SAN
        "unverified": {"cert": "pki/client.pem", "key": "pki/client.key", "verify": False},
        "wrong-name": {**good, "server_name": "pacs.example.org"},
        "wrong-ca": {**good, "ca": "pki/other-ca.pem"},
        "no-cert": {"ca": "pki/ca.pem"},
    }
    retry = {"max_attempts": 2, "initial_delay": 0.1}
    config = write_config(
        tmp_path / "out.yaml",
        {
            "data_dir": "./data",
            "metrics": {"enabled": False},
            "channels": [
                {
                    "name": "out",
                    "source": {"type": "mllp_listener", "port": port},
                    "destinations": [
                        {
                            "name": name,
                            "type": "mllp_sender",
                            "host": "127.0.0.1",
                            "port": tls_downstream.port,
                            "retry": retry,
                            "connect_timeout": 5,
                            "response_timeout": 5,
                            "tls": tls,
                        }
                        for name, tls in destinations.items()
                    ],  # fmt: skip
                }
            ],
        },
    )
    engine = engine_factory(config).start_ready()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(frame(make_orm("TLSOUT1", "42", "ACC1")))
        assert b"MSA|AA|TLSOUT1" in sock.recv(4096)

    def deliveries() -> dict[str, dict[str, Any]]:
        [row] = search_messages(config, "--control-id", "TLSOUT1")
        shown = run_cli("messages", "show", "--config", str(config), "--json", str(row["id"]))
        return {d["destination"]: d for d in json.loads(shown.stdout)["deliveries"]}

    def finished() -> dict[str, dict[str, Any]] | None:
        d = deliveries()
        return d if len(d) == len(destinations) and all(x["status"] in ("SENT", "ERROR") for x in d.values()) else None

    done = wait_until(finished, 30, interval=0.2, what="every delivery finished")
    assert {name: d["status"] for name, d in done.items()} == {
        "by-name": "SENT", "by-ip": "SENT", "unverified": "SENT",
        "wrong-name": "ERROR", "wrong-ca": "ERROR", "no-cert": "ERROR",
    }  # fmt: skip
    for name in ("wrong-name", "wrong-ca", "no-cert"):
        assert done[name]["attempts"] == 2, done[name]
        assert "TLS handshake failed" in done[name]["last_error"], done[name]
    assert "not valid for pacs.example.org" in done["wrong-name"]["last_error"]
    assert "certificate verify failed" in done["wrong-ca"]["last_error"]
    assert tls_downstream.snapshot() == ["TLSOUT1"] * 3  # nothing reached it over a connection that failed TLS
    assert tls_downstream.peers.count("modality-1") == len(tls_downstream.peers) >= 3
    assert tls_downstream.refused >= 2  # the client without a certificate, twice
    assert engine.terminate() == 0
