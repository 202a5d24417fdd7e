"""Fixtures for archive tests: the engine's stores and clock, DICOM files made from pydicom's CT_small."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from twisted.internet import defer

from archive.archive import Archive
from archive.destination import ArchiveDestination, ArchiveDestinationConfig
from engine.components import BuildContext, DeliveryInfo
from engine.config.models import ArchiveConfig
from tests.engine import conftest as engine_fixtures

# The engine's fixtures, shared here: a Clock and stores on SQLite (and PostgreSQL for ``any_store``).
clock, sqlite_store, any_store = engine_fixtures.clock, engine_fixtures.sqlite_store, engine_fixtures.any_store
store_url, pg_url = engine_fixtures.store_url, engine_fixtures.pg_url

CT_SMALL = get_testdata_file("CT_small.dcm")


def make_dicom(
    path: Path, *, study: str | None = None, series: str | None = None, sop: str | None = None, **attrs: Any
) -> Path:
    """Write CT_small with fresh (or the given) UIDs and *attrs* (keyword → value, None deletes) to *path*."""
    ds = pydicom.dcmread(CT_SMALL)
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.SOPInstanceUID = sop or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tests set invalid values on purpose
        for keyword, value in attrs.items():
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
    return path


def inline(f: Callable[..., Any], *args: Any) -> defer.Deferred:
    """Run blocking work inline (tests drive the reactor with a Clock)."""
    return defer.maybeDeferred(f, *args)


@pytest.fixture
def make_archive(tmp_path: Path, sqlite_store: Any, clock: Any) -> Callable[..., Archive]:
    """A factory of started archives under ``tmp_path/archive`` on the SQLite store (fsync off unless asked)."""
    made: list[Archive] = []

    def make(store: Any = None, **config: Any) -> Archive:
        config.setdefault("fsync", False)
        archive = Archive(
            tmp_path / "archive", ArchiveConfig(**config), store or sqlite_store, clock, run_blocking=inline
        )
        archive.start()
        made.append(archive)
        return archive

    yield make
    for archive in made:
        archive.stop()


@pytest.fixture
def incoming_file(tmp_path: Path) -> Callable[..., Path]:
    """A factory of received temp files (as pynetdicom writes them) in ``tmp_path/archive/.incoming``."""
    counter = iter(range(1_000_000))

    def make(**kw: Any) -> Path:
        return make_dicom(tmp_path / "archive" / ".incoming" / f"tmp{next(counter)}.dcm", **kw)

    return make


def receive(archive: Archive, temp: Path, **overrides: Any) -> Any:
    """``archive.receive`` with the request values taken from the file itself."""
    ds = pydicom.dcmread(temp, stop_before_pixels=True)
    kw = {
        "sop_class_uid": str(ds.SOPClassUID), "sop_instance_uid": str(ds.SOPInstanceUID),
        "transfer_syntax": str(ds.file_meta.TransferSyntaxUID), "calling_ae": "MODALITY", "channel": "dicom-in",
    }  # fmt: skip
    kw.update(overrides)
    return archive.receive(temp, **kw)


def run_op(store: Any, clock: Any, op: Callable[..., Any], message_id: int | None = None) -> Any:
    """Commit *op* through the store's writer and return its result."""
    d = store.writer.submit(lambda cur, stmts: op(cur, stmts, message_id))
    engine_fixtures.flush(store, clock)
    result = engine_fixtures.result_of(d)
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


def populate(archive: Archive, store: Any, clock: Any, n: int = 3) -> list:
    """Receive and index *n* instances, and archive one HL7 message."""
    stored = []
    for i in range(n):
        s = receive(archive, make_dicom(archive.incoming / f"t{i}.dcm"))
        run_op(store, clock, archive.index_op(s))
        stored.append(s)
    ctx = BuildContext(clock, "adt-in", "arch", archive.root, archive.root, store=store, archive=archive)
    dest = ArchiveDestination(ArchiveDestinationConfig(), ctx)
    dest.run_blocking = inline
    dest.send_cb("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|C1|P|2.3\r", DeliveryInfo(1, 5, 1), lambda ok, v: None)
    engine_fixtures.flush(store, clock)
    return stored


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config file whose data_dir (store and archive) is under tmp_path."""
    cfg = tmp_path / "radbridge.yaml"
    cfg.write_text("data_dir: ./data\nmetrics: {enabled: false}\narchive: {fsync: false}\nchannels: []\n")
    return cfg
