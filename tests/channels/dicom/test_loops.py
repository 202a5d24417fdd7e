"""The event-driven association loops under real pynetdicom peers: echo, stores, release, abort, idle timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.sop_class import CTImageStorage, Verification
from pynetdicom.transport import ThreadedAssociationServer

from channels.dicom.loops import WakingAssociation, WakingRequestHandler


class Server:
    """A pynetdicom acceptor on a free loopback port using the waking loops; records what it saw."""

    def __init__(self, network_timeout: float | None = 30.0) -> None:
        self.stored: list[str] = []
        self.assocs: list[object] = []
        self.released = threading.Event()
        self.aborted = threading.Event()
        ae = AE("LOOPS")
        ae.supported_contexts = StoragePresentationContexts
        ae.add_supported_context(Verification)
        ae.network_timeout = network_timeout
        handlers = [
            (evt.EVT_C_STORE, self._store),
            (evt.EVT_RELEASED, lambda e: self.released.set()),
            (evt.EVT_ABORTED, lambda e: self.aborted.set()),
            (evt.EVT_ACCEPTED, lambda e: self.assocs.append(e.assoc)),
        ]
        self.ae = ae
        self.server = ThreadedAssociationServer(
            ae, ("127.0.0.1", 0), "LOOPS", ae.supported_contexts, evt_handlers=handlers,
            request_handler=WakingRequestHandler,
        )  # fmt: skip
        ae._servers.append(self.server)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.port = self.server.server_address[1]

    def _store(self, event) -> int:
        self.stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def close(self) -> None:
        """Stop the server and every association."""
        self.server.shutdown()
        for assoc in self.ae.active_associations:
            assoc.abort()
        self.thread.join(timeout=5)


@pytest.fixture()
def server() -> Iterator[Server]:
    """A running server, stopped afterwards."""
    s = Server()
    yield s
    s.close()


def scu() -> AE:
    """A requestor AE for CT storage and verification."""
    ae = AE("TESTSCU")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae


def test_echo_and_stores_then_release(server: Server) -> None:
    """C-ECHO and 30 C-STOREs are answered on one association with the waking loops, then released."""
    assoc = scu().associate("127.0.0.1", server.port, ae_title="LOOPS")
    assert assoc.is_established
    try:
        assert isinstance(server.assocs[0], WakingAssociation)
        assert assoc.send_c_echo().Status == 0x0000
        ds = dcmread(get_testdata_file("CT_small.dcm"))
        uids = []
        for _ in range(30):
            ds.SOPInstanceUID = generate_uid()
            uids.append(ds.SOPInstanceUID)
            assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    assert server.released.wait(5)
    assert server.stored == uids


def test_peer_abort_is_noticed_quickly(server: Server) -> None:
    """An A-ABORT from the peer ends the acceptor association within the loops' wait bound."""
    assoc = scu().associate("127.0.0.1", server.port, ae_title="LOOPS")
    assert assoc.is_established
    started = time.monotonic()
    assoc.abort()
    assert server.aborted.wait(5)
    assert time.monotonic() - started < 2
    deadline = time.monotonic() + 5
    while server.ae.active_associations and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not server.ae.active_associations


def test_idle_association_times_out() -> None:
    """With a network timeout the idle association is closed by the acceptor although its loops block."""
    s = Server(network_timeout=0.5)
    try:
        assoc = scu().associate("127.0.0.1", s.port, ae_title="LOOPS")
        assert assoc.is_established
        deadline = time.monotonic() + 5
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not assoc.is_established
    finally:
        s.close()


def test_concurrent_associations(server: Server) -> None:
    """Four requestors storing at the same time are all served."""
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            assoc = scu().associate("127.0.0.1", server.port, ae_title="LOOPS")
            ds = dcmread(get_testdata_file("CT_small.dcm"))
            for _ in range(10):
                ds.SOPInstanceUID = generate_uid()
                assert assoc.send_c_store(ds).Status == 0x0000
            assoc.release()
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert len(server.stored) == 40
