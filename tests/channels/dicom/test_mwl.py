"""The Modality Worklist C-FIND handler on an in-process pynetdicom acceptor, queried by dcmtk and pynetdicom.

The worklist is ``ris_sps`` rows in a SQLite store (tests/ris/test_worklist.py's ``add_step``), read
by a stand-in RIS through ``ris_core.worklist.paged``. dcmtk ``findscu -W`` (responses extracted
with ``-X``) covers matching, sequences and character sets end to end; pynetdicom covers cancel,
failure statuses and the fallback to the Query/Retrieve handler. Every wait is bounded and the
server is stopped in ``finally``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    ModalityWorklistInformationFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from channels.dicom import mwl
from engine.store.store import Store
from ris_core import worklist
from tests.channels.dicom.test_qr import Recorder
from tests.engine import conftest as engine_fixtures
from tests.ris.test_worklist import add_step

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
TIMEOUT = 30
clock, sqlite_store = engine_fixtures.clock, engine_fixtures.sqlite_store
SPS_KEYS = ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
            "ScheduledProcedureStepID", "ScheduledProcedureStepStatus")  # fmt: skip


class FakeRis:
    """The RIS service's worklist method: ``ris_core.worklist.paged`` over the store (or an error)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.error: Exception | None = None

    def worklist(self, identifier: dict[str, Any], **kw: Any) -> Iterator[dict[str, Any]]:
        """Rows of the worklist query, one short read connection per page."""
        if self.error is not None:
            raise self.error
        return worklist.paged(self.store.read_sync, identifier, page_size=4, **kw)


def qr_fallback(event: Any) -> Iterator[tuple[int, Dataset | None]]:
    """A stand-in for the archive's C-FIND handler: one match whatever was asked."""
    ds = Dataset()
    ds.QueryRetrieveLevel, ds.StudyInstanceUID = "STUDY", "1.2.3"
    yield 0xFF00, ds


@pytest.fixture
def rig(sqlite_store: Store, tmp_path: Path) -> Iterator[SimpleNamespace]:
    """An AE serving the worklist (and the Q/R stand-in) on a free 127.0.0.1 port; stopped after."""
    with sqlite_store.engine.begin() as conn:
        add_step(conn, accession="W1", modality="CT", station_ae="CT1\\CT2", start_date="20240301")
        add_step(conn, accession="W2", modality="MR", station_ae="MR1", start_date="20240301")
        add_step(conn, accession="W3", modality="CT", start_date="20240302", patient_name="Müller^Jürgen")
        add_step(conn, accession="W4", modality="CT", start_date="20240301", status="COMPLETED", state="COMPLETED")
    ris, metrics = FakeRis(sqlite_store), Recorder()
    ae = AE("RADBRIDGE")
    ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = 10, 20, 20
    for cx in mwl.contexts():
        ae.add_supported_context(cx.abstract_syntax, cx.transfer_syntax)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(Verification)
    echo = (evt.EVT_C_ECHO, lambda event: 0x0000)
    handlers = mwl.bind(ris=ris, channel="wl", metrics=metrics, handlers=[echo, (evt.EVT_C_FIND, qr_fallback)])
    server = None
    try:
        server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        yield SimpleNamespace(port=server.server_address[1], store=sqlite_store, ris=ris, metrics=metrics, tmp=tmp_path)
    finally:
        if server is not None:
            server.shutdown()


def findscu(rig: SimpleNamespace, *keys: str | bytes) -> list[Dataset]:
    """Responses of ``findscu -W`` with *keys*, extracted with ``-X``, in order."""
    out = rig.tmp / f"find-{time.monotonic_ns()}"
    out.mkdir()
    args: list[str | bytes] = ["findscu", "-W", "-aet", "MODALITY", "-aec", "RADBRIDGE", "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    result = subprocess.run([*args, "127.0.0.1", str(rig.port)], env=DCMTK_ENV, capture_output=True,
                            timeout=TIMEOUT, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


def sq(*keys: str) -> list[str]:
    """findscu keys inside the first ScheduledProcedureStepSequence item."""
    return [f"ScheduledProcedureStepSequence[0].{k}" for k in keys]


def test_findscu_modality_and_day_returns_open_steps_with_requested_keys(rig: SimpleNamespace) -> None:
    """findscu -W by Modality and date: the open CT steps of that day, with the requested keys only."""
    keys = sq("Modality=CT", "ScheduledProcedureStepStartDate=20240301", *SPS_KEYS[1:2], *SPS_KEYS[3:])
    found = findscu(rig, "PatientName", "AccessionNumber", "PatientBirthDate", "StudyInstanceUID", *keys)
    assert [ds.AccessionNumber for ds in found] == ["W1"]
    ds = found[0]
    assert (str(ds.PatientName), ds.PatientBirthDate) == ("Doe^John", "19700101")
    item = ds.ScheduledProcedureStepSequence[0]
    assert list(item.ScheduledStationAETitle) == ["CT1", "CT2"] and item.ScheduledProcedureStepStartTime == "080000"
    assert item.ScheduledProcedureStepStatus == "SCHEDULED"
    assert "SpecificCharacterSet" not in ds and "ScheduledProcedureStepLocation" not in item
    assert ("wl", "C-FIND-MWL", "success") in rig.metrics.calls


def test_findscu_station_ae_and_status(rig: SimpleNamespace) -> None:
    """A second stored station AE title matches; asking for COMPLETED returns the completed step only."""
    assert [ds.AccessionNumber for ds in findscu(rig, "AccessionNumber", *sq("ScheduledStationAETitle=CT2"))] == ["W1"]
    done = findscu(rig, "AccessionNumber", *sq("ScheduledProcedureStepStatus=COMPLETED"))
    assert [ds.AccessionNumber for ds in done] == ["W4"]


def test_findscu_latin1_request_matches_and_answers_utf8(rig: SimpleNamespace) -> None:
    """A request in ISO_IR 100 matches the stored name case-insensitively; the answer is ISO_IR 192."""
    found = findscu(rig, b"SpecificCharacterSet=ISO_IR 100", "PatientName=m\xfcller*".encode("latin-1"),
                    "AccessionNumber")  # fmt: skip
    assert [(ds.AccessionNumber, ds.SpecificCharacterSet, str(ds.PatientName)) for ds in found] == [
        ("W3", "ISO_IR 192", "Müller^Jürgen")
    ]


def scu() -> AE:
    """A pynetdicom SCU proposing the worklist and Study Root FIND."""
    ae = AE("PYSCU")
    ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = 10, 20, 20
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(Verification)
    return ae


def identifier(**keys: Any) -> Dataset:
    """A request identifier from keyword values (lists of dicts become sequences)."""
    ds = Dataset()
    for keyword, value in keys.items():
        if isinstance(value, list):
            value = [identifier(**item) for item in value]
        setattr(ds, keyword, value)
    return ds


STEPS = 3_000


def test_pynetdicom_cancel_stops_the_responses(rig: SimpleNamespace) -> None:
    """A C-CANCEL after the first pending response ends the query with 0xFE00 before every match was sent."""
    with rig.store.engine.begin() as conn:
        for n in range(STEPS):  # far more than can be answered before the C-CANCEL arrives
            add_step(conn, accession=f"C{n}")
    assoc = scu().associate("127.0.0.1", rig.port, ae_title="RADBRIDGE")
    assert assoc.is_established
    try:
        context_id = next(cx.context_id for cx in assoc.accepted_contexts
                          if cx.abstract_syntax == ModalityWorklistInformationFind)  # fmt: skip
        statuses = []
        for status, _ds in assoc.send_c_find(identifier(AccessionNumber=""), ModalityWorklistInformationFind, msg_id=7):
            statuses.append(status.Status)
            if len(statuses) == 1:
                assoc.send_c_cancel(7, context_id)
        assert statuses[-1] == 0xFE00 and len(statuses) < STEPS
    finally:
        assoc.release()
    assert ("wl", "C-FIND-MWL", "failure") in rig.metrics.calls


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_pynetdicom_failures_carry_an_error_comment(rig: SimpleNamespace) -> None:
    """A malformed date is 0xC000, a two-item sequence key 0xA900 and a RIS fault 0xC001, each with a comment."""
    assoc = scu().associate("127.0.0.1", rig.port, ae_title="RADBRIDGE")
    assert assoc.is_established
    try:
        bad_date = identifier(ScheduledProcedureStepSequence=[{"ScheduledProcedureStepStartDate": "2024-xx"}])
        two_items = identifier(ScheduledProcedureStepSequence=[{"Modality": "CT"}, {"Modality": "MR"}])
        for ds, expected in ((bad_date, 0xC000), (two_items, 0xA900)):
            [(status, found)] = list(assoc.send_c_find(ds, ModalityWorklistInformationFind))
            assert (status.Status, found) == (expected, None) and status.ErrorComment
        rig.ris.error = RuntimeError("database is gone")
        [(status, _)] = list(assoc.send_c_find(identifier(PatientID=""), ModalityWorklistInformationFind))
        assert status.Status == 0xC001 and status.ErrorComment == "unable to process the worklist query"
    finally:
        assoc.release()


def test_other_find_models_go_to_the_fallback(rig: SimpleNamespace) -> None:
    """A Study Root C-FIND on the same server is answered by the handler the worklist replaced."""
    assoc = scu().associate("127.0.0.1", rig.port, ae_title="RADBRIDGE")
    assert assoc.is_established
    try:
        ds = identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="")
        responses = list(assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind))
        assert [s.Status for s, _ in responses] == [0xFF00, 0x0000]
        assert responses[0][1].StudyInstanceUID == "1.2.3"
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    assert not any(call[1] == "C-FIND-MWL" for call in rig.metrics.calls)


def test_bind_replaces_only_the_find_entry_and_refuses_without_fallback() -> None:
    """bind() keeps the other handlers; without a fallback another FIND model is refused with 0x0122."""
    echo = (evt.EVT_C_ECHO, lambda event: 0)
    bound = mwl.bind(ris=None, channel="wl", handlers=[echo, (evt.EVT_C_FIND, qr_fallback)])
    assert [e for e, _ in bound] == [evt.EVT_C_ECHO, evt.EVT_C_FIND] and bound[1][1].keywords["fallback"] is qr_fallback
    event = SimpleNamespace(request=SimpleNamespace(AffectedSOPClassUID=StudyRootQueryRetrieveInformationModelFind))
    [(status, ds)] = list(mwl.handle_find(event, ris=None, channel="wl"))
    assert (status.Status, ds) == (0x0122, None)


ROWS = [
    {"PatientName": "Doe^John", "AccessionNumber": "A1", "AdmissionID": None, "StudyInstanceUID": "1.2.3",
     "ScheduledProcedureStepSequence": [{"Modality": "CT", "ScheduledStationAETitle": ["CT1", "CT2"],
                                         "ScheduledProcedureStepStartTime": "0815", "ScheduledProtocolCodeSequence": []}]},
    {"SpecificCharacterSet": "ISO_IR 192", "PatientName": "Müller^Jürgen=山田^太郎", "PatientWeight": 72.5,
     "RequestedProcedureCodeSequence": [{"CodeValue": "X1", "CodeMeaning": "Tête"}, {}], "PatientComments": "a\\b"},
    {"RetrieveURL": "https://pacs/wado", "TextValue": "x" * 70_000, "PatientID": ""},
]  # fmt: skip


@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("implicit", [True, False])
def test_rows_are_encoded_as_pydicom_encodes_them(row: dict[str, Any], implicit: bool) -> None:
    """encode_row gives pydicom's bytes (via qr.to_dataset) for both little-endian VR encodings."""
    from pynetdicom.dsutils import encode

    from channels.dicom.qr import to_dataset

    assert mwl.encode_row(row, implicit_vr=implicit) == encode(to_dataset(row), implicit, True)


def test_unencodable_rows_fall_back_to_pydicom() -> None:
    """A binary VR or another character set is left to pydicom, and pynetdicom's encode still works for it."""
    from pynetdicom import service_class

    assert mwl.encode_row({"NumberOfFrames": "1", "Rows": 512}, implicit_vr=True) is None
    assert mwl.encode_row({"SpecificCharacterSet": "ISO_IR 100", "PatientName": "Ä"}, implicit_vr=True) is None
    # A value too long for a 2-byte length: explicit VR leaves it to pydicom, implicit VR encodes it.
    assert mwl.encode_row({"PatientComments": "y" * 65_537}, implicit_vr=False) is None
    assert mwl.encode_row({"PatientComments": "y" * 65_537}, implicit_vr=True) is not None
    mwl.install_fast_encode()
    row = mwl.RowIdentifier({"SpecificCharacterSet": "ISO_IR 100", "PatientName": "Ä"})
    assert (
        service_class.encode(row, True, True)
        == b"\x08\x00\x05\x00\x0a\x00\x00\x00ISO_IR 100\x10\x00\x10\x00\x02\x00\x00\x00\xc4 "
    )
    assert (
        service_class.encode(mwl.RowIdentifier(ROWS[0]), False, False)[:4]
        == b"\x00\x08\x00\x05"[:0] + b"\x00\x08\x00\x50"
    )


@pytest.mark.parametrize("max_pdu", [0, 16382, 64])
@pytest.mark.parametrize("identifier", [b"\x08\x00\x50\x00\x02\x00AB" * 20, None])
def test_find_responses_carry_pynetdicoms_pdvs(max_pdu: int, identifier: bytes | None) -> None:
    """Directly encoded C-FIND-RSPs hold pynetdicom's PDVs in order, in PDUs no larger than the peer's maximum."""
    from io import BytesIO

    from pynetdicom.dimse_messages import C_FIND_RSP
    from pynetdicom.dimse_primitives import C_FIND

    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo, rsp.AffectedSOPClassUID = 9, mwl.MWL_FIND
    rsp.Status = 0xFF00 if identifier else 0x0000
    if identifier:
        rsp.Identifier = BytesIO(identifier)
    message = C_FIND_RSP()
    message.primitive_to_message(rsp)
    expected = [pdv for p in message.encode_msg(3, max_pdu) for pdv in p.presentation_data_value_list]
    sent: list[Any] = []
    dimse = SimpleNamespace(send_msg=lambda *a: pytest.fail("not a plain response"), maximum_pdu_size=max_pdu,
                            dul=SimpleNamespace(send_pdu=sent.append))  # fmt: skip
    mwl.send_find_responses(dimse)
    dimse.send_msg(rsp, 3)
    assert [pdv for p in sent for pdv in p.presentation_data_value_list] == expected
    assert all(not max_pdu or sum(len(v) + 4 for _, v in p.presentation_data_value_list) <= max_pdu for p in sent)
    assert len(sent) == (1 if max_pdu != 64 else len(expected))


def test_failure_responses_go_through_pynetdicom() -> None:
    """A response with an Error Comment is sent by pynetdicom's own send_msg."""
    from pynetdicom.dimse_primitives import C_FIND

    calls: list[Any] = []
    dimse = SimpleNamespace(send_msg=lambda p, c: calls.append(p), maximum_pdu_size=0, dul=None)
    mwl.send_find_responses(dimse)
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo, rsp.Status, rsp.ErrorComment = 1, 0xC000, "bad"
    dimse.send_msg(rsp, 1)
    assert calls == [rsp]
