"""The storage fast path (``channels/dicom/native.py``) against ``radbridge run``: same files and statuses as the
pynetdicom path, fragmentation both ways, protocol errors answered with A-ABORT, nothing partial kept, and a stop
that ends open associations."""

from __future__ import annotations

import io
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, _config, build_context
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, ImplementationClassUIDNotification, MaximumLengthNotification
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind, Verification

from channels.dicom.fastdimse import encode_response
from channels.dicom.incoming import create_file_meta
from tests.integration.dicom import dcmtk, dicom_config, make_study, metric, scrape, scu_associate
from tests.integration.helpers import EngineProcess, free_port, wait_until

pytestmark = pytest.mark.integration
FAST_PATH_LOG = "storage fast path serving an association"


class Rig:
    """A running engine with one dicom_scp channel (DEBUG log, so the fast path's line shows)."""

    def __init__(self, tmp: Path, engine: EngineProcess, port: int, metrics_port: int) -> None:
        self.tmp, self.engine, self.port, self.metrics_port = tmp, engine, port, metrics_port
        self.archive = tmp / "data" / "archive"

    def archived(self) -> dict[str, bytes]:
        """Archive-relative path → bytes of every instance file (not the incoming folder)."""
        return {
            str(p.relative_to(self.archive)): p.read_bytes()
            for p in sorted(self.archive.rglob("*.dcm"))
            if ".incoming" not in p.parts
        }

    def incoming(self) -> list[Path]:
        """Files left in the incoming folder."""
        folder = self.archive / ".incoming"
        return list(folder.iterdir()) if folder.exists() else []

    def fast_path_uses(self) -> int:
        """How many associations the fast path served so far."""
        return self.engine.log().count(FAST_PATH_LOG)


def start_rig(tmp: Path, factory: Callable[..., EngineProcess], extra: str = "") -> Rig:
    """The engine at DEBUG with *extra* source settings."""
    port, metrics_port = free_port(), free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "radbridge.yaml"
    text = dicom_config(tmp / "data", port, metrics_port, extra_source=extra).replace("level: INFO", "level: DEBUG")
    config.write_text(text)
    return Rig(tmp, factory(config).start_ready(), port, metrics_port)


@pytest.fixture
def rig(tmp_path: Path, engine_factory: Callable[..., EngineProcess]) -> Iterator[Rig]:
    """The engine with the fast path on (the default) and a 16 KiB maximum PDU, stopped afterwards."""
    r = start_rig(tmp_path, engine_factory, "      max_pdu: 16384")
    try:
        yield r
    finally:
        r.engine.terminate()


def send(port: int, files: list[Path], *contexts: str, max_pdu: int = 16384) -> list[int]:
    """C-STORE each file as it is over one pynetdicom association; the statuses."""
    assoc = scu_associate(port, contexts or (CTImageStorage, Verification), max_pdu=max_pdu)
    try:
        return [int(assoc.send_c_store(f).Status) for f in files]
    finally:
        assoc.release()


@pytest.fixture
def chunked(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom sends a file's data set bytes as they are."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def test_fast_path_stores_what_the_pynetdicom_path_stores(
    tmp_path: Path, engine_factory: Callable[..., EngineProcess], chunked: None
) -> None:
    """The same files, a duplicate and a C-ECHO give the same archive bytes, statuses and metrics on both paths."""
    files = make_study(tmp_path / "study", 4, series=2)
    outcomes = {}
    for name, fast in (("fast", "true"), ("slow", "false")):
        rig = start_rig(tmp_path / name, engine_factory, f"      storage_fast_path: {fast}")
        try:
            statuses = send(rig.port, [*files, files[0]], max_pdu=4096)  # small PDUs: fragmented data sets
            assert dcmtk("echoscu", "-aec", "RADBRIDGE", "127.0.0.1", str(rig.port)).returncode == 0
            text = scrape(rig.metrics_port)
            counts = [
                metric(text, "radbridge_dicom_instances_stored_total", channel="images"),
                metric(text, "radbridge_dicom_stored_bytes_total", channel="images"),
                metric(text, "radbridge_dimse_requests_total", channel="images", service="C-ECHO", status="success"),
            ]
            outcomes[name] = (statuses, rig.archived(), counts, rig.fast_path_uses())
        finally:
            rig.engine.terminate()
    fast, slow = outcomes["fast"], outcomes["slow"]
    assert fast[0] == slow[0] == [0, 0, 0, 0, 0xB006]
    assert fast[1] == slow[1] and len(fast[1]) == 4
    assert fast[2] == slow[2]
    assert (fast[3], slow[3]) == (2, 0)  # pynetdicom's association and echoscu's; none with it off
    for data in fast[1].values():
        ds = dcmread(io.BytesIO(data))
        meta = create_file_meta(sop_class_uid=ds.SOPClassUID, sop_instance_uid=ds.SOPInstanceUID,
                                transfer_syntax=ExplicitVRLittleEndian)  # fmt: skip
        assert data.startswith(b"\0" * 128 + b"DICM" + meta)


def test_mixed_associations_stay_on_pynetdicom(rig: Rig, tmp_path: Path, chunked: None) -> None:
    """An association that also proposes C-FIND is served by pynetdicom: both services answer on it."""
    files = make_study(tmp_path / "study", 2)
    statuses = send(rig.port, files, CTImageStorage, StudyRootQueryRetrieveInformationModelFind)
    assert statuses == [0, 0]
    assert rig.fast_path_uses() == 0
    assert send(rig.port, files) == [0xB006, 0xB006]
    assert rig.fast_path_uses() == 1


# -- raw PDUs -------------------------------------------------------------------------------------
def associate_raw(port: int, max_pdu: int = 16384) -> socket.socket:
    """An established association on a plain socket (CT Image Storage as context 1, Verification as 3)."""
    prim = A_ASSOCIATE()
    prim.application_context_name = "1.2.840.10008.3.1.1.1"
    prim.calling_ae_title, prim.called_ae_title = "RAWSCU", "RADBRIDGE"
    contexts = []
    for cid, uid in ((1, CTImageStorage), (3, Verification)):
        cx = build_context(uid, ExplicitVRLittleEndian)
        cx.context_id = cid
        contexts.append(cx)
    prim.presentation_context_definition_list = contexts
    length, impl = MaximumLengthNotification(), ImplementationClassUIDNotification()
    length.maximum_length_received, impl.implementation_class_uid = max_pdu, PYNETDICOM_IMPLEMENTATION_UID
    prim.user_information = [length, impl]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(prim)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(pdu.encode())
    pdu_type, _ = read_pdu(sock)
    assert pdu_type == 0x02  # A-ASSOCIATE-AC
    return sock


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """(type, body) of the next PDU; (0, b"") when the peer closed the connection."""
    head = recv_exact(sock, 6)
    if not head:
        return 0, b""
    pdu_type, length = struct.unpack(">BxI", head)
    return pdu_type, recv_exact(sock, length)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return data
        data += chunk
    return data


def p_data(context_id: int, control: int, data: bytes) -> bytes:
    """One P-DATA-TF PDU with one PDV."""
    pdv = struct.pack(">IBB", len(data) + 2, context_id, control) + data
    return struct.pack(">BxI", 0x04, len(pdv)) + pdv


def command_set(sop_class: str, field: int = 0x0001, message_id: int = 1, sop_uid: str | None = None) -> bytes:
    """A DIMSE-C request command set (Implicit VR LE): C-STORE-RQ by default, with a data set unless C-ECHO."""

    def el(elem: int, value: bytes) -> bytes:
        return struct.pack("<HHI", 0, elem, len(value)) + value

    def ui(uid: str) -> bytes:
        raw = uid.encode()
        return raw + b"\0" if len(raw) % 2 else raw

    parts = [el(0x0002, ui(sop_class)), el(0x0100, struct.pack("<H", field)), el(0x0110, struct.pack("<H", message_id))]
    if field == 0x0001:
        parts.append(el(0x0700, struct.pack("<H", 0)))
    parts.append(el(0x0800, struct.pack("<H", 0x0101 if field == 0x0030 else 0x0000)))
    if sop_uid is not None:
        parts.append(el(0x1000, ui(sop_uid)))
    body = b"".join(parts)
    return el(0x0000, struct.pack("<I", len(body))) + body


def expect_abort(sock: socket.socket, source: int = 0x02) -> int:
    """The next PDU is an A-ABORT from *source*, then the connection closes; its reason."""
    pdu_type, body = read_pdu(sock)
    assert pdu_type == 0x07, (pdu_type, body)
    assert body[2] == source
    assert read_pdu(sock) == (0, b"")
    return body[3]


def dataset_bytes(path: Path) -> bytes:
    """The data set of a Part-10 file (Implicit VR LE here), without preamble and meta."""
    ds = dcmread(path)
    raw = path.read_bytes()
    return raw[raw.index(b"DICM") + 4 + 12 + ds.file_meta.FileMetaInformationGroupLength :]


@pytest.mark.parametrize(
    ("what", "pdus", "reason"),
    [
        ("an unknown PDU type", [b"\x09\x00\x00\x00\x00\x02\x00\x00"], 0x01),
        ("an A-ASSOCIATE-RQ again", [b"\x01\x00\x00\x00\x00\x02\x00\x00"], 0x02),
        ("a data fragment without a command", [p_data(1, 0x02, b"\x08\x00\x10\x00")], 0x02),
        ("a PDV longer than its PDU", [b"\x04\x00\x00\x00\x00\x08" + struct.pack(">IBB", 100, 1, 3) + b"\0\0"], 0x06),
        ("a PDU over our maximum", [b"\x04\x00" + struct.pack(">I", 1 << 20)], 0x06),
        ("a command set without end", [p_data(1, 0x01, b"\0" * 16000)] * 5, 0x06),
        ("a message on a context not accepted", [p_data(5, 0x03, command_set(CTImageStorage, sop_uid="1.2.3"))], 0x00),
        ("a command the association cannot carry", [p_data(3, 0x03, command_set(Verification, sop_uid="1.2.3"))], 0x00),
    ],
)
def test_protocol_errors_get_an_abort_and_the_scp_goes_on(rig: Rig, what: str, pdus: list[bytes], reason: int) -> None:
    """Each violation is answered with an A-ABORT (service provider, PS3.8 9.3.8 reason); the SCP keeps serving."""
    with associate_raw(rig.port) as sock:
        for pdu in pdus:
            sock.sendall(pdu)
        assert expect_abort(sock) == reason, what
    assert dcmtk("echoscu", "-aec", "RADBRIDGE", "127.0.0.1", str(rig.port)).returncode == 0
    assert rig.incoming() == [] and rig.archived() == {}


def test_raw_store_echo_release_and_fragmented_response(rig: Rig, tmp_path: Path) -> None:
    """A store in many PDVs, a C-ECHO, responses fragmented to a 32-byte peer PDU limit, then a release."""
    path = make_study(tmp_path / "study", 1)[0]
    ds = dcmread(path)
    with associate_raw(rig.port, max_pdu=32) as sock:
        command = command_set(CTImageStorage, message_id=7, sop_uid=ds.SOPInstanceUID)
        sock.sendall(p_data(1, 0x01, command[:20]) + p_data(1, 0x03, command[20:]))
        data = dataset_bytes(path)
        pieces = [data[i : i + 1000] for i in range(0, len(data), 1000)]
        for i, piece in enumerate(pieces):
            sock.sendall(p_data(1, 0x02 if i == len(pieces) - 1 else 0x00, piece))
        response = b""
        while True:
            pdu_type, body = read_pdu(sock)
            assert pdu_type == 0x04 and len(body) <= 32
            _length, cid, control = struct.unpack(">IBB", body[:6])
            response += body[6:]
            if control & 0x02:
                break
        assert cid == 1 and control == 0x03
        expected = encode_response(command_field=0x8001, sop_class_uid=CTImageStorage, message_id=7, status=0,
                                   sop_instance_uid=ds.SOPInstanceUID)  # fmt: skip
        assert response == expected
        sock.sendall(p_data(3, 0x03, command_set(Verification, field=0x0030, message_id=8)))
        pdu_type, body = read_pdu(sock)
        assert pdu_type == 0x04 and body[4] == 3  # the C-ECHO-RSP begins (more fragments follow)
        while not body[5] & 0x02:
            _, body = read_pdu(sock)
        sock.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")
        assert read_pdu(sock) == (0x06, b"\x00\x00\x00\x00")
    archived = rig.archived()
    assert list(archived) == [f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"]
    assert next(iter(archived.values())).endswith(data)
    assert rig.fast_path_uses() == 1


def test_connection_lost_mid_dataset_leaves_nothing(rig: Rig, tmp_path: Path) -> None:
    """Half a data set, then the connection drops: no file anywhere, counted as incomplete, SCP still serving."""
    path = make_study(tmp_path / "study", 1)[0]
    ds = dcmread(path)
    with associate_raw(rig.port) as sock:
        sock.sendall(p_data(1, 0x03, command_set(CTImageStorage, sop_uid=ds.SOPInstanceUID)))
        sock.sendall(p_data(1, 0x00, dataset_bytes(path)[:5000]))
        wait_until(lambda: len(rig.incoming()) == 1, 10, what="the partial file in .incoming")
    wait_until(
        lambda: metric(scrape(rig.metrics_port), "radbridge_dicom_instances_failed_total", channel="images",
                       reason="incomplete") == 1, 10, what="the incomplete instance counted",
    )  # fmt: skip
    assert rig.incoming() == [] and rig.archived() == {}
    assert dcmtk("echoscu", "-aec", "RADBRIDGE", "127.0.0.1", str(rig.port)).returncode == 0


def test_stopping_the_engine_aborts_open_fast_path_associations(rig: Rig) -> None:
    """SIGTERM with an idle fast-path association open: the peer gets an A-ABORT and the engine exits promptly."""
    with associate_raw(rig.port) as sock:
        wait_until(lambda: rig.fast_path_uses() == 1, 10, what="the fast path serving")
        started = time.monotonic()
        rig.engine.terminate()
        assert expect_abort(sock, source=0x00) == 0x00
    assert time.monotonic() - started < 10
    assert not rig.engine.running


def test_an_idle_association_is_aborted_after_the_network_timeout(
    tmp_path: Path, engine_factory: Callable[..., EngineProcess]
) -> None:
    """Idle longer than ``network_timeout``: an A-ABORT from the service provider (as dcm4chee's idle timeout)."""
    rig = start_rig(tmp_path, engine_factory, "      network_timeout: 1")
    try:
        with associate_raw(rig.port) as sock:
            sock.settimeout(10)
            started = time.monotonic()
            assert expect_abort(sock) == 0x00
            assert 0.8 < time.monotonic() - started < 8
        text = scrape(rig.metrics_port)
        assert metric(text, "radbridge_dicom_associations_total", channel="images", outcome="aborted") == 1
    finally:
        rig.engine.terminate()
