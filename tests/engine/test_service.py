"""Tests for ChannelService end to end without network: pipeline, store, queues and ACKs on a Clock."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from twisted.internet import defer
from twisted.internet.task import Clock

from channels.memory import MemoryDestination, MemoryDestinationConfig
from engine.chain import ChannelDestination, ChannelDestinationConfig
from engine.components import BuildContext, DeliveryError, DeliveryInfo, IngestResult
from engine.config.models import AckConfig, DedupeConfig, PruneConfig, RetryConfig
from engine.filters import compile_filters
from engine.hl7.message import HL7Message
from engine.metrics import Metrics
from engine.pipeline import CompiledChannel, Route
from engine.queue import DestinationQueue
from engine.service import ChannelService
from engine.store.queries import thd_get_message
from engine.store.schema import ERROR, FILTERED, QUEUED, SENT, TRANSFORMED, deliveries, messages
from engine.store.store import Store
from tests.engine.conftest import flush, has_result, message_values, orm, result_of

RETRY = RetryConfig(max_attempts=2, initial_delay=1, multiplier=2)


class FakeDestination:
    """Records sends; answers at once (``auto``) or with Deferreds the test fires."""

    def __init__(self, auto: bool = True) -> None:
        self.auto = auto
        self.calls: list[tuple[str, DeliveryInfo, defer.Deferred]] = []
        self.started = False

    def start(self) -> None:
        """Mark started."""
        self.started = True

    def stop(self) -> None:
        """Mark stopped."""
        self.started = False

    def send(self, content: str, info: DeliveryInfo) -> defer.Deferred:
        """Record the send; succeed now when ``auto``, else leave it to the test."""
        d: defer.Deferred = defer.Deferred()
        self.calls.append((content, info, d))
        if self.auto:
            d.callback("ACK")
        return d

    @property
    def sent(self) -> list[str]:
        """Contents sent so far."""
        return [c for c, _, _ in self.calls]


class Boom:
    """A transformer that always raises."""

    def transform(self, msg: HL7Message, context: dict[str, Any]) -> str | None:
        """Fail."""
        raise RuntimeError("template exploded")


def make_service(
    store: Store,
    clock: Clock,
    dest: Any,
    *,
    name: str = "in",
    flt: str | None = 'MSH-9.1 in ["ORM", "ADT"]',
    transformer: Any = None,
    ack: AckConfig | None = None,
    dedupe: DedupeConfig | None = None,
    prune: PruneConfig | None = None,
    metrics: Metrics | None = None,
    charset: str = "utf-8",
    start: bool = True,
) -> ChannelService:
    """A ChannelService with one route 'out' to *dest*, started (store reads are inline)."""
    compiled = CompiledChannel(name, filter=compile_filters(flt), routes=[Route("out", transformer=transformer)])
    queue = DestinationQueue(name, "out", dest, store, clock, RETRY, poll_interval=0, metrics=metrics)
    svc = ChannelService(
        compiled, None, {"out": queue}, store, clock, metrics=metrics, charset=charset, ack=ack, dedupe=dedupe,
        prune=prune,
    )  # fmt: skip
    if start:
        assert result_of(svc.startService()) is None
    return svc


def ingest(svc: ChannelService, clock: Clock, raw: bytes | str, origin: str = "test") -> IngestResult:
    """Ingest *raw*, let the writer commit, and return the IngestResult."""
    d = svc.ingest(raw.encode() if isinstance(raw, str) else raw, origin)
    flush(svc.store, clock)
    result = result_of(d)
    assert isinstance(result, IngestResult), result
    return result


def ack_of(result: IngestResult, codec: str = "utf-8") -> HL7Message:
    """The result's ACK parsed."""
    assert result.ack is not None
    return HL7Message(result.ack.decode(codec))


def stored(store: Store, mid: int) -> dict[str, Any]:
    """A stored message with its deliveries."""
    return store.read_sync(thd_get_message, mid)


def count(store: Store, table: Any, *where: Any) -> int:
    """Rows of *table* matching *where*."""
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


@pytest.fixture
def dest() -> FakeDestination:
    """A destination that succeeds at once."""
    return FakeDestination()


@pytest.fixture
def metrics() -> Metrics:
    """A fresh metrics registry."""
    return Metrics()


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    """One metric sample value."""
    return metrics.registry.get_sample_value(name, labels)


def test_ack_only_after_commit(sqlite_store: Store, clock: Clock, dest: FakeDestination, metrics: Metrics) -> None:
    """ingest answers AA only once the message is committed, and the destination gets it after the commit."""
    svc = make_service(sqlite_store, clock, dest, metrics=metrics)
    d = svc.ingest(orm(cid="CTRL1").encode(), "mllp:1.2.3.4:5")
    assert not has_result(d)
    assert dest.sent == []
    assert count(sqlite_store, messages) == 0
    flush(sqlite_store, clock)
    result = result_of(d)
    assert result.code == "AA" and result.reason == ""
    assert dest.sent == [orm(cid="CTRL1")]
    msg = stored(sqlite_store, result.message_id)
    assert (msg["status"], msg["control_id"], msg["origin"]) == (TRANSFORMED, "CTRL1", "mllp:1.2.3.4:5")
    assert (msg["patient_id"], msg["accession"], msg["message_type"]) == ("P1", "ACC1", "ORM^O01")
    flush(sqlite_store, clock)
    assert [x["status"] for x in stored(sqlite_store, result.message_id)["deliveries"]] == [SENT]
    assert sample(metrics, "radbridge_messages_received_total", channel="in") == 1
    assert sample(metrics, "radbridge_acks_sent_total", channel="in", code="AA") == 1
    assert sample(metrics, "radbridge_processing_seconds_count", channel="in") == 1


def test_ack_fields(sqlite_store: Store, clock: Clock, dest: FakeDestination) -> None:
    """The AA ACK echoes MSH-10 in MSA-2 and swaps sender and receiver."""
    result = ingest(make_service(sqlite_store, clock, dest), clock, orm(cid="CTRL42"))
    ack = ack_of(result)
    assert ack["MSA-1"] == "AA"
    assert ack["MSA-2"] == "CTRL42"
    assert (ack["MSH-3"], ack["MSH-4"], ack["MSH-5"], ack["MSH-6"]) == ("PACS", "RAD", "RIS", "HOSP")
    assert ack["MSH-9"] == "ACK^O01^ACK"
    assert ack["MSH-10"] and ack["MSH-10"] != "CTRL42"
    assert ack.count("ERR") == 0


def test_filtered_message_is_acked_and_not_queued(sqlite_store: Store, clock: Clock, dest: FakeDestination, metrics: Metrics) -> None:  # fmt: skip
    """A message the channel filter rejects is stored FILTERED, answered AA and sent nowhere."""
    svc = make_service(sqlite_store, clock, dest, flt='MSH-9.1 == "ADT"', metrics=metrics)
    result = ingest(svc, clock, orm())
    assert result.code == "AA"
    msg = stored(sqlite_store, result.message_id)
    assert msg["status"] == FILTERED and msg["filter_info"] == 'channel filter: MSH-9.1 == "ADT" was false'
    assert msg["deliveries"] == [] and dest.sent == []
    assert sample(metrics, "radbridge_messages_filtered_total", channel="in") == 1


@pytest.mark.parametrize("raw", [b"this is not HL7", b"", b"MSH"], ids=["text", "empty", "short"])
def test_unparseable_is_rejected_and_stored(sqlite_store: Store, clock: Clock, dest: FakeDestination, raw: bytes, metrics: Metrics) -> None:  # fmt: skip
    """Input that is not HL7 is answered AR and stored as ERROR with the raw bytes."""
    result = ingest(make_service(sqlite_store, clock, dest, metrics=metrics), clock, raw)
    assert result.code == "AR"
    ack = ack_of(result, "latin-1")
    assert ack["MSA-1"] == "AR" and ack.count("ERR") == 1
    msg = stored(sqlite_store, result.message_id)
    assert msg["status"] == ERROR and msg["error"].startswith("parse: ")
    assert bytes(msg["raw"]) == raw
    assert dest.sent == []
    assert sample(metrics, "radbridge_messages_errored_total", channel="in", stage="parse") == 1


def test_latin1_message_with_msh18_is_decoded(sqlite_store: Store, clock: Clock, dest: FakeDestination) -> None:
    """Latin-1 bytes declared by MSH-18 8859/1 are decoded, stored raw, delivered as text and ACKed in Latin-1."""
    text = orm(cid="L1").replace("|P|2.3.1", "|P|2.3.1||||||8859/1", 1).replace("DOE^JOHN", "MÜLLER^JÖRG")
    raw = text.encode("latin-1")
    result = ingest(make_service(sqlite_store, clock, dest), clock, raw)
    assert result.code == "AA"
    msg = stored(sqlite_store, result.message_id)
    assert bytes(msg["raw"]) == raw
    assert msg["charset"] == "iso8859-1"
    assert dest.sent == [text]
    ack = ack_of(result, "latin-1")
    assert ack["MSA-2"] == "L1" and ack["MSH-18"] == "8859/1"


def test_invalid_utf8_without_msh18_is_rejected(sqlite_store: Store, clock: Clock, dest: FakeDestination) -> None:
    """Bytes that are not valid in the channel default charset are answered AR, MSA-2 salvaged from the header."""
    raw = orm(cid="U1").replace("DOE^JOHN", "M\xfcller").encode("latin-1")
    result = ingest(make_service(sqlite_store, clock, dest), clock, raw)
    assert result.code == "AR"
    ack = ack_of(result, "latin-1")
    assert ack["MSA-2"] == "U1"
    assert stored(sqlite_store, result.message_id)["error"].startswith("charset: ")


def test_channel_default_charset_used_when_msh18_empty(sqlite_store: Store, clock: Clock, dest: FakeDestination) -> None:  # fmt: skip
    """With MSH-18 empty the channel's configured charset decodes the message."""
    text = orm().replace("DOE^JOHN", "MÜLLER")
    result = ingest(make_service(sqlite_store, clock, dest, charset="latin-1"), clock, text.encode("latin-1"))
    assert result.code == "AA" and dest.sent == [text]


def test_unknown_msh18_is_rejected(sqlite_store: Store, clock: Clock, dest: FakeDestination) -> None:
    """An MSH-18 naming no known character set is answered AR and stored as ERROR."""
    raw = orm(cid="K1").replace("|P|2.3.1", "|P|2.3.1||||||KLINGON-8", 1).encode()
    result = ingest(make_service(sqlite_store, clock, dest), clock, raw)
    assert result.code == "AR"
    assert "KLINGON-8" in result.reason
    assert ack_of(result, "latin-1")["MSA-2"] == "K1"
    msg = stored(sqlite_store, result.message_id)
    assert msg["status"] == ERROR and msg["error"].startswith("charset: ")
    assert dest.sent == []


def test_duplicate_is_acked_stored_filtered_not_queued(sqlite_store: Store, clock: Clock, dest: FakeDestination, metrics: Metrics) -> None:  # fmt: skip
    """A resent MSH-10 from the same MSH-3/4 is answered AA, stored FILTERED with duplicate_of and not delivered again."""
    svc = make_service(sqlite_store, clock, dest, metrics=metrics)
    first = ingest(svc, clock, orm(cid="D1"))
    second = ingest(svc, clock, orm(cid="D1"))
    assert second.code == "AA" and ack_of(second)["MSA-2"] == "D1"
    dup = stored(sqlite_store, second.message_id)
    assert dup["status"] == FILTERED
    assert dup["duplicate_of"] == first.message_id
    assert "duplicate" in dup["filter_info"]
    assert dup["deliveries"] == []
    assert len(dest.sent) == 1
    assert count(sqlite_store, deliveries) == 1
    assert sample(metrics, "radbridge_messages_duplicate_total", channel="in") == 1


def test_same_control_id_other_facility_is_not_duplicate(sqlite_store: Store, clock: Clock, dest: FakeDestination) -> None:  # fmt: skip
    """The same MSH-10 from a different MSH-4 (or MSH-3) is a new message."""
    svc = make_service(sqlite_store, clock, dest)
    ingest(svc, clock, orm(cid="D1"))
    other_facility = ingest(svc, clock, orm(cid="D1", facility="CLINIC"))
    other_app = ingest(svc, clock, orm(cid="D1", app="LAB"))
    for result in (other_facility, other_app):
        assert stored(sqlite_store, result.message_id)["duplicate_of"] is None
    assert len(dest.sent) == 3


def test_dedupe_disabled_delivers_resends(sqlite_store: Store, clock: Clock, dest: FakeDestination) -> None:
    """With dedupe disabled a resent MSH-10 is delivered again."""
    svc = make_service(sqlite_store, clock, dest, dedupe=DedupeConfig(enabled=False))
    ingest(svc, clock, orm(cid="D1"))
    ingest(svc, clock, orm(cid="D1"))
    assert len(dest.sent) == 2


def test_dedupe_keys_reloaded_at_start(sqlite_store: Store, clock: Clock, dest: FakeDestination) -> None:
    """A restarted channel recognises a duplicate of a message stored before the restart."""
    first_svc = make_service(sqlite_store, clock, dest)
    first = ingest(first_svc, clock, orm(cid="R1"))
    result_of(first_svc.stopService())
    flush(sqlite_store, clock)  # as Store.stop does at shutdown: the lazy "sent" update is written
    restarted = make_service(sqlite_store, clock, dest)
    assert len(restarted.dedupe) == 1
    again = ingest(restarted, clock, orm(cid="R1"))
    assert stored(sqlite_store, again.message_id)["duplicate_of"] == first.message_id
    assert len(dest.sent) == 1


def test_dedupe_beyond_max_keys_asks_the_store(sqlite_store: Store, clock: Clock, dest: FakeDestination) -> None:
    """With more keys in the window than max_keys, an evicted key is still recognised through the store."""
    svc = make_service(sqlite_store, clock, dest, dedupe=DedupeConfig(max_keys=2))
    first = ingest(svc, clock, orm(cid="K1"))
    ingest(svc, clock, orm(cid="K2"))
    ingest(svc, clock, orm(cid="K3"))
    assert len(svc.dedupe) == 2 and not svc.dedupe.covers(time.time())
    again = ingest(svc, clock, orm(cid="K1"))
    assert stored(sqlite_store, again.message_id)["duplicate_of"] == first.message_id
    assert len(dest.sent) == 3


def test_dedupe_reload_is_bounded_by_max_keys(sqlite_store: Store, clock: Clock, dest: FakeDestination) -> None:
    """A restart loads only the newest max_keys keys and still finds older ones in the store."""
    svc = make_service(sqlite_store, clock, dest)
    first = ingest(svc, clock, orm(cid="M1"))
    ingest(svc, clock, orm(cid="M2"))
    ingest(svc, clock, orm(cid="M3"))
    result_of(svc.stopService())
    flush(sqlite_store, clock)
    restarted = make_service(sqlite_store, clock, dest, dedupe=DedupeConfig(max_keys=2))
    assert len(restarted.dedupe) == 2
    again = ingest(restarted, clock, orm(cid="M1"))
    assert stored(sqlite_store, again.message_id)["duplicate_of"] == first.message_id


def test_dedupe_reload_skips_keys_outside_window(sqlite_store: Store, clock: Clock, dest: FakeDestination) -> None:
    """Keys of messages older than the dedupe window are not reloaded at start."""
    d = sqlite_store.writer.store_message(message_values(channel="in", received_at=1.0, control_id="OLD"), [])
    flush(sqlite_store, clock)
    result_of(d)
    svc = make_service(sqlite_store, clock, dest, dedupe=DedupeConfig(window=3600))
    assert len(svc.dedupe) == 0


def test_transformer_error_answers_ae_with_err(sqlite_store: Store, clock: Clock, dest: FakeDestination, metrics: Metrics) -> None:  # fmt: skip
    """A transformer error is stored as ERROR and answered AE with an ERR segment; a resend is not a duplicate."""
    svc = make_service(sqlite_store, clock, dest, transformer=Boom(), metrics=metrics)
    result = ingest(svc, clock, orm(cid="E1"))
    assert result.code == "AE"
    ack = ack_of(result)
    assert ack["MSA-1"] == "AE" and ack["MSA-2"] == "E1"
    assert ack.count("ERR") == 1 and "template exploded" in ack["ERR-8"]
    msg = stored(sqlite_store, result.message_id)
    assert msg["status"] == ERROR and "destination out" in msg["error"]
    assert dest.sent == []
    assert sample(metrics, "radbridge_messages_errored_total", channel="in", stage="transform") == 1
    again = ingest(svc, clock, orm(cid="E1"))
    assert again.code == "AE"
    assert stored(sqlite_store, again.message_id)["duplicate_of"] is None


def test_store_failure_answers_ar(sqlite_store: Store, clock: Clock, dest: FakeDestination, metrics: Metrics) -> None:
    """When the store cannot commit, the sender gets AR asking to resend, and the key is forgotten."""
    svc = make_service(sqlite_store, clock, dest, metrics=metrics)
    sqlite_store.writer._conn.close()
    result = ingest(svc, clock, orm(cid="S1"))
    assert result.code == "AR" and result.message_id is None
    assert "send it again" in result.reason
    assert ack_of(result)["MSA-2"] == "S1"
    assert len(svc.dedupe) == 0
    assert sample(metrics, "radbridge_messages_errored_total", channel="in", stage="store") == 1


def test_after_delivery_acks_once_delivered(sqlite_store: Store, clock: Clock) -> None:
    """In after_delivery mode AA comes only after the destination confirmed the delivery."""
    dest = FakeDestination(auto=False)
    svc = make_service(sqlite_store, clock, dest, ack=AckConfig(mode="after_delivery", delivery_timeout=30))
    d = svc.ingest(orm(cid="AD1").encode(), "test")
    flush(sqlite_store, clock)
    assert dest.sent == [orm(cid="AD1")]
    assert not has_result(d)
    dest.calls[0][2].callback("ACK")
    result = result_of(d)
    assert result.code == "AA" and ack_of(result)["MSA-2"] == "AD1"
    clock.advance(60)  # the timeout was cancelled: nothing fires twice


def test_after_delivery_with_synchronous_destination(sqlite_store: Store, clock: Clock, tmp_path: Path) -> None:
    """In after_delivery mode a destination that answers at once (memory) still gives AA, not a timeout."""
    ctx = BuildContext(reactor=clock, channel="in", component="out", config_dir=tmp_path, data_dir=tmp_path)
    dest = MemoryDestination(MemoryDestinationConfig(), ctx)
    svc = make_service(sqlite_store, clock, dest, ack=AckConfig(mode="after_delivery", delivery_timeout=30))
    d = svc.ingest(orm(cid="AD2").encode(), "test")
    flush(sqlite_store, clock)
    assert dest.received == [orm(cid="AD2")]
    result = result_of(d)
    assert result.code == "AA"


def test_after_delivery_final_failure_answers_ae(sqlite_store: Store, clock: Clock) -> None:
    """In after_delivery mode a delivery failing its last attempt answers AE with the reason."""
    dest = FakeDestination(auto=False)
    svc = make_service(sqlite_store, clock, dest, ack=AckConfig(mode="after_delivery", delivery_timeout=30))
    d = svc.ingest(orm(cid="AD3").encode(), "test")
    flush(sqlite_store, clock)
    dest.calls[0][2].errback(DeliveryError("peer said no"))
    assert not has_result(d)
    clock.advance(RETRY.delay(1))
    dest.calls[1][2].errback(DeliveryError("peer still says no"))
    result = result_of(d)
    assert result.code == "AE" and "peer still says no" in result.reason
    assert ack_of(result)["MSA-1"] == "AE"


def test_after_delivery_timeout_answers_ae(sqlite_store: Store, clock: Clock) -> None:
    """In after_delivery mode no confirmation within delivery_timeout answers AE; the delivery stays queued."""
    dest = FakeDestination(auto=False)
    svc = make_service(sqlite_store, clock, dest, ack=AckConfig(mode="after_delivery", delivery_timeout=5))
    d = svc.ingest(orm(cid="AD4").encode(), "test")
    flush(sqlite_store, clock)
    clock.advance(4.9)
    assert not has_result(d)
    clock.advance(0.1)
    result = result_of(d)
    assert result.code == "AE" and "not confirmed within 5s" in result.reason
    assert count(sqlite_store, deliveries, deliveries.c.status == QUEUED) == 1
    dest.calls[0][2].callback("late ACK")  # a late confirmation is harmless
    flush(sqlite_store, clock)
    assert count(sqlite_store, deliveries, deliveries.c.status == SENT) == 1


def test_after_delivery_filtered_answers_at_once(sqlite_store: Store, clock: Clock, dest: FakeDestination) -> None:
    """In after_delivery mode a message with nothing to deliver is answered right after commit."""
    svc = make_service(
        sqlite_store, clock, dest, flt='MSH-9.1 == "ADT"', ack=AckConfig(mode="after_delivery", delivery_timeout=5)
    )
    assert ingest(svc, clock, orm()).code == "AA"


@pytest.mark.parametrize(
    ("msh15", "code", "sends"), [("NE", "CA", False), ("AL", "CA", True), ("ER", "CA", False), ("SU", "CA", True)]
)
def test_enhanced_mode_follows_msh15(sqlite_store: Store, clock: Clock, dest: FakeDestination, msh15: str, code: str, sends: bool) -> None:  # fmt: skip
    """With MSH-15 valued the answer is an accept ACK (CA), sent only when MSH-15 asks for it (NE: never)."""
    raw = orm(cid="EN1").replace("|P|2.3.1", f"|P|2.3.1|||{msh15}|NE", 1)
    result = ingest(make_service(sqlite_store, clock, dest), clock, raw)
    assert result.code == code
    assert (result.ack is not None) == sends
    if sends:
        assert ack_of(result)["MSA-1"] == "CA"
    assert dest.sent == [raw]


def test_reject_stores_error_and_answers_ar(sqlite_store: Store, clock: Clock, dest: FakeDestination, metrics: Metrics) -> None:  # fmt: skip
    """reject() (e.g. an oversize frame) stores the head as ERROR and answers AR with MSA-2 salvaged."""
    svc = make_service(sqlite_store, clock, dest, metrics=metrics)
    head = orm(cid="BIG1").encode()[:120]
    d = svc.reject(head, "mllp:peer", "message exceeds max_message_bytes (64)")
    assert not has_result(d)
    flush(sqlite_store, clock)
    result = result_of(d)
    assert result.code == "AR"
    ack = ack_of(result, "latin-1")
    assert ack["MSA-2"] == "BIG1"
    msg = stored(sqlite_store, result.message_id)
    assert msg["status"] == ERROR and msg["error"] == "framing: message exceeds max_message_bytes (64)"
    assert bytes(msg["raw"]) == head and msg["origin"] == "mllp:peer"
    assert sample(metrics, "radbridge_messages_errored_total", channel="in", stage="framing") == 1


def test_chained_channel_delivers_into_second_service(sqlite_store: Store, clock: Clock, tmp_path: Path) -> None:
    """A `channel` destination ingests into a second ChannelService, which stores and delivers it."""
    services: dict[str, Any] = {}
    final = FakeDestination()
    second = make_service(sqlite_store, clock, final, name="second", flt=None)
    services["second"] = second
    ctx = BuildContext(
        reactor=clock, channel="first", component="out", config_dir=tmp_path, data_dir=tmp_path, services=services
    )
    chain = ChannelDestination(ChannelDestinationConfig(type="channel", channel="second"), ctx)
    first = make_service(sqlite_store, clock, chain, name="first")
    result = ingest(first, clock, orm(cid="CH1"))
    assert result.code == "AA"
    flush(sqlite_store, clock)  # the second channel commits
    flush(sqlite_store, clock)  # the first channel records the delivery
    assert final.sent == [orm(cid="CH1")]
    (row,) = [r for r in sqlite_store.read_sync(lambda c: c.execute(select(messages)).all()) if r.channel == "second"]
    assert row.parent_id == result.message_id and row.origin == "channel:first"
    (delivery,) = stored(sqlite_store, result.message_id)["deliveries"]
    assert delivery["status"] == SENT and HL7Message(delivery["response"])["MSA-1"] == "AA"


def test_chained_channel_not_running_fails_delivery(sqlite_store: Store, clock: Clock, tmp_path: Path) -> None:
    """A `channel` destination whose target is not running fails the attempt (and is retried)."""
    ctx = BuildContext(reactor=clock, channel="first", component="out", config_dir=tmp_path, data_dir=tmp_path)
    chain = ChannelDestination(ChannelDestinationConfig(type="channel", channel="missing"), ctx)
    first = make_service(sqlite_store, clock, chain, name="first")
    result = ingest(first, clock, orm())
    flush(sqlite_store, clock)
    (delivery,) = stored(sqlite_store, result.message_id)["deliveries"]
    assert delivery["status"] == QUEUED and "not running" in delivery["last_error"]


def test_stop_service_stops_connectors(sqlite_store: Store, clock: Clock, dest: FakeDestination) -> None:
    """startService starts destination connectors and stopService stops them and their queues."""
    svc = make_service(sqlite_store, clock, dest)
    assert dest.started and svc.running
    result_of(svc.stopService())
    assert not dest.started and not svc.running
    assert not svc.queues["out"].running


def test_prune_deletes_old_messages(sqlite_store: Store, clock: Clock, dest: FakeDestination) -> None:
    """prune deletes messages older than max_age in batches, keeping recent ones."""
    for i in range(5):
        sqlite_store.writer.store_message(message_values(channel="in", received_at=1000.0 + i), [])
    flush(sqlite_store, clock)
    svc = make_service(sqlite_store, clock, dest, prune=PruneConfig(max_age=3600, batch_size=2, interval=3600))
    recent = ingest(svc, clock, orm())
    d = svc.prune()
    for _ in range(5):
        clock.advance(0.05)
    assert result_of(d) == 5
    assert count(sqlite_store, messages) == 1
    assert stored(sqlite_store, recent.message_id) is not None
