"""dicom_scu over TLS against an in-process pynetdicom storage SCP that requires a CA-signed client certificate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.channels.dicom.test_scu import Harness, StorageSCP, make_instance, stored_event
from tests.channels.tls_certs import PKI, make_pki

GOOD = {"ca": "ca.pem", "cert": "client.pem", "key": "client.key"}


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    """A throwaway CA with server and client certificates in tmp_path/pki."""
    return make_pki(tmp_path / "pki")


@pytest.fixture
def peer(pki: PKI) -> Iterator[StorageSCP]:
    """A storage SCP on loopback over TLS, requiring a client certificate; stopped at teardown."""
    scp = StorageSCP(tls=pki.server_context(require_client_cert=True))
    yield scp
    scp.stop()


@pytest.mark.parametrize(
    ("tls", "ok"),
    [
        ({**GOOD, "server_name": "localhost"}, True),
        (GOOD, True),  # server_name defaults to the host: 127.0.0.1, an IP address SAN of the certificate
        ({"cert": "client.pem", "key": "client.key", "verify": False}, True),
        ({"ca": "ca.pem", "server_name": "localhost"}, False),  # no client certificate
        ({**GOOD, "ca": "other-ca.pem"}, False),  # the server is not trusted
        ({**GOOD, "server_name": "pacs.example.org"}, False),  # the name is not the certificate's
        ({"ca": "ca.pem", "cert": "other-client.pem", "key": "other-client.key"}, False),  # a stranger's certificate
    ],
)
def test_store_over_tls(tmp_path: Path, pki: PKI, peer: StorageSCP, tls: dict[str, Any], ok: bool) -> None:
    """An instance is stored only when the SCU trusts the server and presents a certificate of the server's CA."""
    h = Harness(pki.folder, peer.port, tls=tls)
    try:
        path, uid = make_instance(tmp_path)
        result = h.send(stored_event(path, uid))
        assert result[0] is ok, result
        assert peer.stored == ([uid] if ok else [])
        if not ok:
            assert h.peer_up() == 0.0
    finally:
        h.stop()
