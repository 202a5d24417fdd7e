"""Tests for the dicom_scu destination against an in-process pynetdicom storage SCP on a free loopback port.

The connector's reactor side runs on a ``task.Clock`` with ``call_from_thread`` replaced by an
:class:`Inbox` the test pumps; its worker thread talks to the SCP for real. Every wait is bounded.
"""

from __future__ import annotations

import datetime
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification
from pynetdicom.transport import ThreadedAssociationServer
from twisted.internet.task import Clock

from channels.dicom.scu import DicomSCU, DicomSCUConfig, register
from engine.components import BuildContext, DeliveryError, DeliveryInfo
from engine.event import Event
from engine.metrics import Metrics
from engine.registry import Registry

INFO = DeliveryInfo(delivery_id=1, message_id=1, attempt=1)
WAIT = 10.0


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Poll *predicate* until truthy; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    return value


class StorageSCP:
    """A pynetdicom storage + verification SCP that records associations, stores and echoes.

    ``status`` is what C-STORE answers; ``action`` may be ``"abort"`` (abort the association
    in the handler) or ``"hang"`` (answer only after ``hang`` seconds).
    """

    def __init__(
        self, contexts: list[tuple[str, list[str]]] | None = None, require_ae: bool = False, tls: Any = None
    ) -> None:
        self.status = 0x0000
        self.action = ""
        self.hang = 0.0
        self.stored: list[str] = []
        self.message_ids: list[int] = []
        self.accepted = 0
        self.released = 0
        self.aborted = 0
        self.echoes = 0
        self.lock = threading.Lock()
        ae = AE("TESTSCP")
        ae.require_called_aet = require_ae
        for sop_class, syntaxes in contexts or [(CTImageStorage, []), (MRImageStorage, [])]:
            ae.add_supported_context(sop_class, syntaxes or [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.add_supported_context(Verification)
        self.ae = ae
        handlers = [
            (evt.EVT_C_STORE, self._store), (evt.EVT_C_ECHO, self._echo), (evt.EVT_ACCEPTED, self._count("accepted")),
            (evt.EVT_RELEASED, self._count("released")), (evt.EVT_ABORTED, self._count("aborted")),
        ]  # fmt: skip
        self.server = ae.make_server(
            ("127.0.0.1", 0), evt_handlers=handlers, server_class=ThreadedAssociationServer, ssl_context=tls
        )
        ae._servers.append(self.server)  # so that ae.shutdown() stops it, as start_server() would
        # pynetdicom's start_server() polls every 0.5 s, which is what each shutdown() would cost.
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()
        self.port = self.server.server_address[1]

    def _count(self, name: str) -> Callable[[Any], None]:
        def handler(event: Any) -> None:
            with self.lock:
                setattr(self, name, getattr(self, name) + 1)

        return handler

    def _store(self, event: Any) -> int:
        if self.action == "abort":
            event.assoc.abort()
            return 0x0000
        if self.action == "hang":
            time.sleep(self.hang)
        with self.lock:
            self.stored.append(str(event.request.AffectedSOPInstanceUID))
            self.message_ids.append(int(event.request.MessageID))
        return self.status

    def _echo(self, event: Any) -> int:
        with self.lock:
            self.echoes += 1
        return 0x0000

    def stop(self) -> None:
        """Close the port and abort every association (idempotent)."""
        self.ae.shutdown()


class Inbox:
    """A fake ``reactor.callFromThread``: calls queue up and run in the test thread when pumped."""

    def __init__(self) -> None:
        self.calls: queue.Queue = queue.Queue()

    def __call__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.calls.put((fn, args))

    def run_until(self, predicate: Callable[[], Any], timeout: float = WAIT) -> None:
        """Run queued calls until *predicate* holds; fail after *timeout* seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            assert left > 0, "timed out waiting for the worker"
            try:
                fn, args = self.calls.get(timeout=min(left, 0.05))
            except queue.Empty:
                continue
            fn(*args)


def make_instance(tmp_path: Path, name: str = "CT_small.dcm", syntax: str | None = None) -> tuple[Path, str]:
    """A copy of a pydicom test file with a fresh SOP Instance UID (and *syntax* if given); (path, uid)."""
    ds = dcmread(get_testdata_file(name))
    uid = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    if syntax is not None:
        ds.file_meta.TransferSyntaxUID = syntax
    path = tmp_path / f"{uid}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, uid


def stored_event(path: Path | str, uid: str) -> str:
    """The JSON text of a dicom.stored event for *path*."""
    return Event("dicom.stored", {"SOPInstanceUID": uid}, {"path": str(path), "sop_instance_uid": uid}).text


class Harness:
    """A started DicomSCU on a Clock whose worker outcomes arrive through an Inbox."""

    def __init__(self, tmp_path: Path, port: int, **cfg: Any) -> None:
        self.clock = Clock()
        self.inbox = Inbox()
        self.metrics = Metrics()
        ctx = BuildContext(
            reactor=self.clock, channel="ch", component="pacs", config_dir=tmp_path, data_dir=tmp_path,
            metrics=self.metrics, archive=SimpleNamespace(root=tmp_path),
        )  # fmt: skip
        settings = {"connect_timeout": 2, "dimse_timeout": 2, **cfg}
        config = DicomSCUConfig(ae_title="TESTSCP", host="127.0.0.1", port=port, **settings)
        self.scu = DicomSCU(config, ctx, call_from_thread=self.inbox)
        self.scu.start()

    def send(self, content: str) -> tuple[bool, Any]:
        """One send_cb, pumped until its outcome arrives."""
        box: list[tuple[bool, Any]] = []
        self.scu.send_cb(content, INFO, lambda ok, value: box.append((ok, value)))
        self.inbox.run_until(lambda: box)
        return box[0]

    def failed(self, content: str) -> DeliveryError:
        """The DeliveryError a send of *content* ends with."""
        ok, value = self.send(content)
        assert not ok and isinstance(value, DeliveryError), value
        return value

    def idle(self) -> None:
        """Pump until no worker job is in flight."""
        self.inbox.run_until(lambda: not self.scu.inflight)

    def peer_up(self) -> float | None:
        """The radbridge_dicom_peer_up gauge for this destination."""
        return self.metrics.registry.get_sample_value(
            "radbridge_dicom_peer_up", {"channel": "ch", "destination": "pacs"}
        )

    def stop(self) -> None:
        """Stop the connector and wait for its thread."""
        d = self.scu.stop()
        if d is not None:
            self.inbox.run_until(lambda: d.called)


@pytest.fixture
def scp() -> Iterator[StorageSCP]:
    """A running storage SCP, stopped at teardown."""
    server = StorageSCP()
    yield server
    server.stop()


@pytest.fixture
def harness_factory(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """Build started harnesses; every one is stopped at teardown."""
    made: list[Harness] = []

    def make(port: int, **cfg: Any) -> Harness:
        made.append(Harness(tmp_path, port, **cfg))
        return made[-1]

    yield make
    for h in made:
        h.stop()


@pytest.fixture
def h(scp: StorageSCP, harness_factory: Callable[..., Harness]) -> Harness:
    """A harness sending to *scp*."""
    return harness_factory(scp.port)


def test_store_success(h: Harness, scp: StorageSCP, tmp_path: Path) -> None:
    """A stored instance arrives at the SCP and the delivery completes with the 0x0000 response text."""
    path, uid = make_instance(tmp_path)
    assert h.send(stored_event(path, uid)) == (True, "C-STORE status 0x0000")
    assert scp.stored == [uid]
    assert h.peer_up() == 1.0


def test_relative_path_resolves_against_archive_root(h: Harness, scp: StorageSCP, tmp_path: Path) -> None:
    """A path relative to the archive root is sent from the archive."""
    path, uid = make_instance(tmp_path)
    assert h.send(stored_event(path.name, uid))[0]
    assert scp.stored == [uid]


def test_association_reused_across_sends(h: Harness, scp: StorageSCP, tmp_path: Path) -> None:
    """Twenty sends of one SOP class and transfer syntax share one association."""
    uids = []
    for _ in range(20):
        path, uid = make_instance(tmp_path)
        uids.append(uid)
        assert h.send(stored_event(path, uid))[0]
    assert scp.stored == uids
    assert scp.accepted == 1 and h.scu.worker.associations == 1
    assert scp.message_ids == list(range(1, 21))  # a new message id per C-STORE


def test_new_sop_class_opens_new_association_with_both(h: Harness, scp: StorageSCP, tmp_path: Path) -> None:
    """An MR after CTs releases the association and opens one proposing both; later CTs reuse it."""
    for name in ("CT_small.dcm", "MR_small.dcm", "CT_small.dcm", "MR_small.dcm"):
        path, uid = make_instance(tmp_path, name)
        assert h.send(stored_event(path, uid))[0]
    assert len(scp.stored) == 4
    assert h.scu.worker.associations == 2
    wait_until(lambda: scp.released == 1)
    assert scp.accepted == 2 and scp.aborted == 0


def test_new_transfer_syntax_opens_new_association(h: Harness, scp: StorageSCP, tmp_path: Path) -> None:
    """The same SOP class in another transfer syntax needs (and gets) its own exact context."""
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        path, uid = make_instance(
            tmp_path, "MR_small_implicit.dcm" if syntax == ImplicitVRLittleEndian else "MR_small.dcm"
        )
        assert h.send(stored_event(path, uid))[0]
    assert h.scu.worker.associations == 2
    assert (MRImageStorage, ImplicitVRLittleEndian) in h.scu.worker.accepted
    assert (MRImageStorage, ExplicitVRLittleEndian) in h.scu.worker.accepted


def test_unaccepted_context_fails_without_reconnecting(harness_factory: Callable[..., Harness], tmp_path: Path) -> None:
    """A peer refusing the instance's transfer syntax fails the delivery; a retry does not renegotiate."""
    scp = StorageSCP([(CTImageStorage, [ImplicitVRLittleEndian]), (MRImageStorage, [])])
    try:
        h = harness_factory(scp.port)
        mr, mr_uid = make_instance(tmp_path, "MR_small.dcm")
        assert h.send(stored_event(mr, mr_uid))[0]
        path, uid = make_instance(tmp_path)  # explicit VR little endian
        for _ in range(2):
            assert "does not accept SOP class" in h.failed(stored_event(path, uid)).reason
        assert h.scu.worker.associations == 2 and scp.stored == [mr_uid]
        assert h.send(stored_event(mr, mr_uid))[0]  # the association with the accepted MR context stays
        assert h.scu.worker.associations == 2
    finally:
        scp.stop()


def test_no_context_accepted(harness_factory: Callable[..., Harness], tmp_path: Path) -> None:
    """A peer accepting none of the proposed contexts fails the delivery but is reported up."""
    scp = StorageSCP([(CTImageStorage, [ImplicitVRLittleEndian])])
    try:
        h = harness_factory(scp.port)
        path, uid = make_instance(tmp_path)  # explicit VR little endian
        assert "accepted none" in h.failed(stored_event(path, uid)).reason
        assert h.peer_up() == 1.0
    finally:
        scp.stop()


def test_failure_status_maps_to_delivery_error(h: Harness, scp: StorageSCP, tmp_path: Path) -> None:
    """A 0xA700 answer fails the delivery with the status as code and response; the association stays."""
    scp.status = 0xA700
    path, uid = make_instance(tmp_path)
    err = h.failed(stored_event(path, uid))
    assert (err.code, err.response) == ("0xA700", "C-STORE status 0xA700")
    assert h.peer_up() == 1.0
    scp.status = 0x0000
    assert h.send(stored_event(path, uid))[0]
    assert h.scu.worker.associations == 1


@pytest.mark.parametrize("status", [0xB000, 0xB006, 0xB007])
def test_warning_is_delivered_by_default(h: Harness, scp: StorageSCP, tmp_path: Path, status: int) -> None:
    """A storage warning status counts as delivered, its status in the response text."""
    scp.status = status
    path, uid = make_instance(tmp_path)
    assert h.send(stored_event(path, uid)) == (True, f"C-STORE status 0x{status:04X} (warning)")


def test_warning_fails_without_accept_warning(
    scp: StorageSCP, harness_factory: Callable[..., Harness], tmp_path: Path
) -> None:
    """With accept_warning off a warning status fails the delivery with its code."""
    h = harness_factory(scp.port, accept_warning=False)
    scp.status = 0xB000
    path, uid = make_instance(tmp_path)
    assert h.failed(stored_event(path, uid)).code == "0xB000"


def test_connection_refused(harness_factory: Callable[..., Harness], tmp_path: Path) -> None:
    """Nothing listening: the delivery fails and the peer is reported down."""
    h = harness_factory(free_port())
    path, uid = make_instance(tmp_path)
    assert "cannot associate" in h.failed(stored_event(path, uid)).reason
    assert h.peer_up() == 0.0
    assert not h.scu.worker.is_open


def test_association_rejected(harness_factory: Callable[..., Harness], tmp_path: Path) -> None:
    """A peer rejecting our called AE title fails the delivery as rejected."""
    scp = StorageSCP(require_ae=True)
    try:
        h = harness_factory(scp.port)
        h.scu.worker.config = h.scu.config.model_copy(update={"ae_title": "OTHER"})
        path, uid = make_instance(tmp_path)
        assert "rejected" in h.failed(stored_event(path, uid)).reason
    finally:
        scp.stop()


def self_signed(folder: Path) -> ssl.SSLContext:
    """Write cert.pem/key.pem for ``localhost`` into *folder*; a server SSLContext using them."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pkcs8, none = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, pkcs8, none))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


@pytest.mark.parametrize(
    ("tls", "ok"),
    [
        ({"ca": "cert.pem", "server_name": "localhost"}, True),
        ({"verify": False}, True),
        ({"server_name": "localhost"}, False),  # the self-signed certificate is not trusted
    ],
)
def test_tls(harness_factory: Callable[..., Harness], tmp_path: Path, tls: dict[str, Any], ok: bool) -> None:
    """Over TLS an instance is stored when the server certificate is trusted (or not checked), refused otherwise."""
    scp = StorageSCP(tls=self_signed(tmp_path))
    try:
        h = harness_factory(scp.port, tls=tls)
        path, uid = make_instance(tmp_path)
        result = h.send(stored_event(path, uid))
        assert result[0] is ok, result
        assert scp.stored == ([uid] if ok else [])
    finally:
        scp.stop()


def test_abort_mid_send_drops_association(h: Harness, scp: StorageSCP, tmp_path: Path) -> None:
    """An SCP aborting during the C-STORE fails the delivery; the next send opens a new association."""
    path, uid = make_instance(tmp_path)
    assert h.send(stored_event(path, uid))[0]
    scp.action = "abort"
    assert "no C-STORE response" in h.failed(stored_event(path, uid)).reason
    assert h.peer_up() == 0.0
    scp.action = ""
    assert h.send(stored_event(path, uid))[0]
    assert h.scu.worker.associations == 2
    assert h.peer_up() == 1.0


def test_dimse_timeout_drops_association(
    scp: StorageSCP, harness_factory: Callable[..., Harness], tmp_path: Path
) -> None:
    """No response within dimse_timeout fails the delivery and aborts the association."""
    h = harness_factory(scp.port, dimse_timeout=0.3)
    scp.action, scp.hang = "hang", 0.6
    path, uid = make_instance(tmp_path)
    assert "no C-STORE response" in h.failed(stored_event(path, uid)).reason
    assert not h.scu.worker.is_open
    wait_until(lambda: scp.aborted == 1)


def test_missing_file(h: Harness, scp: StorageSCP, tmp_path: Path) -> None:
    """An event whose file is gone fails the delivery naming the SOP Instance UID, not the path."""
    err = h.failed(stored_event(tmp_path / "gone.dcm", "1.2.3.4"))
    assert err.reason == "instance file missing (SOP Instance 1.2.3.4)"
    assert scp.accepted == 0


def test_file_without_meta(h: Harness, tmp_path: Path) -> None:
    """A file that is not DICOM Part 10 fails the delivery."""
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"not dicom at all" * 20)
    assert "file meta" in h.failed(stored_event(path, "1.2.3")).reason


@pytest.mark.parametrize(
    "content",
    [
        "MSH|^~\\&|RIS|HOSP",
        '{"event": "dicom.stored"}',
        Event("mpps.created", {}, {"path": "/x.dcm"}).text,
        Event("dicom.stored", {}, {"size": 3}).text,
    ],
)
def test_bad_content(h: Harness, content: str) -> None:
    """Content that is not a dicom.stored event with a path fails the delivery without touching the peer."""
    assert "not a dicom.stored event" in h.failed(content).reason
    assert h.scu.worker.associations == 0


def test_relative_path_without_archive(scp: StorageSCP, tmp_path: Path) -> None:
    """A relative path with no archive in the context fails the delivery."""
    ctx = BuildContext(reactor=Clock(), channel="ch", component="pacs", config_dir=tmp_path, data_dir=tmp_path)
    inbox = Inbox()
    scu = DicomSCU(DicomSCUConfig(ae_title="X", host="127.0.0.1", port=scp.port), ctx, call_from_thread=inbox)
    with pytest.raises(DeliveryError, match="no archive"):
        scu.resolve(stored_event("a/b.dcm", "1.2"))


def test_not_started(scp: StorageSCP, tmp_path: Path) -> None:
    """A send before start() fails instead of hanging."""
    ctx = BuildContext(reactor=Clock(), channel="ch", component="pacs", config_dir=tmp_path, data_dir=tmp_path)
    scu = DicomSCU(DicomSCUConfig(ae_title="X", host="127.0.0.1", port=scp.port), ctx, call_from_thread=Inbox())
    box: list[Any] = []
    scu.send_cb(stored_event("/x.dcm", "1.2"), INFO, lambda ok, value: box.append((ok, value)))
    assert box and not box[0][0] and "not started" in box[0][1].reason


def test_send_deferred(h: Harness, scp: StorageSCP, tmp_path: Path) -> None:
    """send() fires its Deferred with the response text."""
    path, uid = make_instance(tmp_path)
    d = h.scu.send(stored_event(path, uid), INFO)
    results: list[Any] = []
    d.addBoth(results.append)
    h.inbox.run_until(lambda: results)
    assert results == ["C-STORE status 0x0000"]


def test_nodelay_on_association_socket(h: Harness, tmp_path: Path) -> None:
    """The association socket has Nagle disabled."""
    path, uid = make_instance(tmp_path)
    assert h.send(stored_event(path, uid))[0]
    sock = h.scu.worker.assoc.dul.socket.socket
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_idle_association_released(h: Harness, scp: StorageSCP, tmp_path: Path) -> None:
    """After idle_close without sends the association is released; the next send opens a new one."""
    path, uid = make_instance(tmp_path)
    assert h.send(stored_event(path, uid))[0]
    h.clock.advance(24)  # idle_close defaults to 25 s
    h.idle()
    assert scp.released == 0 and h.scu.worker.is_open
    h.clock.advance(1)
    h.idle()
    wait_until(lambda: scp.released == 1)
    assert not h.scu.worker.is_open and h.scu.timer is None
    assert h.send(stored_event(path, uid))[0]
    assert h.scu.worker.associations == 2


def test_stop_releases_association(h: Harness, scp: StorageSCP, tmp_path: Path) -> None:
    """stop() releases the open association and ends the worker thread."""
    path, uid = make_instance(tmp_path)
    assert h.send(stored_event(path, uid))[0]
    h.stop()
    wait_until(lambda: scp.released == 1)
    assert h.scu.stop() is None


def test_echo_health_check(scp: StorageSCP, harness_factory: Callable[..., Harness], tmp_path: Path) -> None:
    """With echo_interval the idle worker C-ECHOes at start and every interval, reporting peer_up."""
    h = harness_factory(scp.port, echo_interval=10)
    h.clock.advance(0)
    h.idle()
    assert scp.echoes == 1 and h.peer_up() == 1.0
    path, uid = make_instance(tmp_path)
    assert h.send(stored_event(path, uid))[0]  # a send resets the echo timer
    h.clock.advance(9)
    h.idle()
    assert scp.echoes == 1
    h.clock.advance(1)
    h.idle()
    assert scp.echoes == 2 and h.scu.worker.associations == 1  # echoed on the open association
    scp.stop()
    h.clock.advance(10)
    h.idle()
    assert h.peer_up() == 0.0


def test_config_validation() -> None:
    """AE titles are 1-16 characters without backslashes; echo_interval must be positive."""
    base = {"type": "dicom_scu", "host": "pacs", "port": 104}
    DicomSCUConfig(ae_title="PACS", **base, echo_interval="30s")
    for bad in ({"ae_title": "A" * 17}, {"ae_title": " "}, {"ae_title": "A\\B"}, {"ae_title": "P", "echo_interval": 0}):
        with pytest.raises(ValidationError):
            DicomSCUConfig(**{**base, **bad})
    with pytest.raises(ValidationError):
        DicomSCUConfig(ae_title="PACS", **base, unknown=1)


def test_register() -> None:
    """register() adds the dicom_scu destination with its config model."""
    registry = Registry()
    register(registry)
    entry = registry.get("destination", "dicom_scu")
    assert entry.model is DicomSCUConfig and entry.build is DicomSCU
