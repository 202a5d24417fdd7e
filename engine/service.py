"""ChannelService: a channel's I/O, lifecycle and acks around the pure pipeline (DESIGN.md §3.1, §3.2)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer

from engine.components import IngestResult, Reply, Source
from engine.config.models import AckConfig, DedupeConfig, PruneConfig
from engine.dedupe import DedupeIndex
from engine.event import Event
from engine.hl7.ack import AckPolicy, ack_policy, build_ack
from engine.hl7.charset import CharsetError, decode_message
from engine.hl7.header import header_values
from engine.hl7.message import HL7Error, HL7Message
from engine.pipeline import CompiledChannel, PipelineResult, run_pipeline
from engine.queue import DestinationQueue
from engine.store.queries import QueuedItem, thd_find_key, thd_prune_batch, thd_recent_keys
from engine.store.schema import ERROR, FILTERED

log = logging.getLogger("radbridge.channel")
ORIGINAL = AckPolicy(enhanced=False)


@dataclass
class _Pending:
    """An after_delivery ACK waiting for its deliveries."""

    remaining: set[int]
    failures: list[str]
    reply: Reply
    timeout: Any = None
    finish: Any = None


class ChannelService(Service):
    """Runs one channel: feeds the pipeline, writes the store, answers the source, drives the queues."""

    def __init__(
        self,
        compiled: CompiledChannel,
        source: Source | None,
        queues: dict[str, DestinationQueue],
        store: Any,
        reactor: Any,
        *,
        metrics: Any = None,
        charset: str = "utf-8",
        ack: AckConfig | None = None,
        dedupe: DedupeConfig | None = None,
        prune: PruneConfig | None = None,
    ) -> None:
        self.name = compiled.name
        self.compiled = compiled
        self.source = source
        self.queues = queues
        self.store = store
        self.reactor = reactor
        self.metrics = metrics
        self.charset = charset
        self.ack = ack or AckConfig()
        self.dedupe_cfg = dedupe or DedupeConfig()
        self.prune_cfg = prune or PruneConfig()
        self.dedupe = DedupeIndex(self.dedupe_cfg.window, self.dedupe_cfg.max_keys)
        self._waiting: dict[int, _Pending] = {}
        self._prune_call: Any = None
        self.paused = False  # the source is stopped; the queues keep draining (admin API pause/resume)
        for queue in queues.values():
            queue.listeners.append(self._delivery_done)

    # -- lifecycle -------------------------------------------------------
    @defer.inlineCallbacks
    def startService(self):
        """Load recent keys, start the queues, then the source."""
        Service.startService(self)
        self.paused = False
        if self.dedupe_cfg.enabled:
            since = time.time() - self.dedupe_cfg.window
            limit = self.dedupe_cfg.max_keys
            keys = yield self.store.read(thd_recent_keys, self.name, since, limit)
            if len(keys) >= limit:
                self.dedupe.mark_incomplete(keys[0][4])  # older keys of the window stay in the store
            for app, facility, control_id, mid, received_at in keys:
                self.dedupe.add((app or "", facility or "", control_id), mid, received_at)
        for queue in self.queues.values():
            yield defer.maybeDeferred(queue.connector.start)
            yield queue.start()
        if self.source is not None:
            try:
                yield defer.maybeDeferred(self.source.start, self)
            except BaseException:
                self._source_up(False)  # failed to bind: radbridge_listener_up 0
                raise
            self._source_up(True)
        if self.prune_cfg.max_age is not None:
            self._prune_call = self.reactor.callLater(min(60.0, self.prune_cfg.interval), self.prune)

    @defer.inlineCallbacks
    def stopService(self):
        """Stop the source first, then the queues and connectors."""
        Service.stopService(self)
        if self._prune_call is not None and self._prune_call.active():
            self._prune_call.cancel()
        if self.source is not None:
            self._source_up(False)
            yield defer.maybeDeferred(self.source.stop)
        for queue in self.queues.values():
            queue.stop()
            yield defer.maybeDeferred(queue.connector.stop)

    def _source_up(self, up: bool) -> None:
        """``radbridge_listener_up`` for this channel's source, labelled with its YAML ``type:``."""
        if self.metrics is not None:
            connector = getattr(getattr(self.source, "config", None), "type", None) or "source"
            self.metrics.listener_up(self.name, connector, up)

    @defer.inlineCallbacks
    def pause(self):
        """Stop the source accepting (new connections, files, events); destinations keep draining."""
        if self.running and not self.paused and self.source is not None:
            yield defer.maybeDeferred(self.source.stop)
            self._source_up(False)
        self.paused = True

    @defer.inlineCallbacks
    def resume(self):
        """Start the source again after :meth:`pause`."""
        if self.running and self.paused and self.source is not None:
            try:
                yield defer.maybeDeferred(self.source.start, self)
            except BaseException:
                self._source_up(False)
                raise
            self._source_up(True)
        self.paused = False

    # -- the hot path ----------------------------------------------------
    def ingest(
        self, raw: bytes, origin: str, *, text: str | None = None, parent_id: int | None = None, dedupe: bool = True
    ) -> defer.Deferred:
        """Store, process and answer one inbound message; fires with an :class:`IngestResult`."""
        d: defer.Deferred = defer.Deferred()
        try:
            self.ingest_cb(raw, origin, d.callback, text=text, parent_id=parent_id, dedupe=dedupe)
        except Exception:  # noqa: BLE001 - a bug surfaces as the Deferred's failure
            d.errback()
        return d

    def ingest_cb(
        self,
        raw: bytes,
        origin: str,
        reply: Reply,
        *,
        text: str | None = None,
        parent_id: int | None = None,
        dedupe: bool = True,
    ) -> None:
        """:meth:`ingest` for sources on the hot path: ``reply(IngestResult)`` once there is an answer.

        ``reply`` may be called before this returns (a store failure) or later (after COMMIT).
        """
        started = time.perf_counter()
        now = time.time()
        metrics = self.metrics
        if metrics:
            metrics.received(self.name)
        codec = "utf-8"
        try:
            if text is None:
                text, codec = decode_message(raw, self.charset)
            msg = HL7Message(text)
        except (CharsetError, HL7Error) as exc:
            stage = "charset" if isinstance(exc, CharsetError) else "parse"
            self._store_failure(raw, origin, now, stage, str(exc), started, codec, text, reply)
            return
        values = header_values(msg)
        values.update(
            channel=self.name, received_at=now, charset=codec, origin=origin[:255], raw=raw, parent_id=parent_id
        )
        policy = ack_policy(msg)
        key = None
        if dedupe and self.dedupe_cfg.enabled and values["control_id"]:
            key = (values["sending_app"] or "", values["sending_facility"] or "", values["control_id"])
            seen = self.dedupe.lookup(key, now)
            if seen is None and not self.dedupe.covers(now):
                # A feed busier than max_keys per window: ask the MSH-10 index (rare, synchronous).
                seen = self.store.read_sync(thd_find_key, self.name, key, now - self.dedupe_cfg.window)
            if seen is not None:
                self._store_duplicate(msg, policy, values, seen[0], started, codec, reply)
                return
            self.dedupe.add(key, None, now)
        result = run_pipeline(msg, self.compiled)
        values.update(
            status=result.status,
            transformed=result.transformed,
            filter_info=result.filter_info,
            error=result.error,
            duplicate_of=None,
        )

        def stored(ok: bool, ids: Any) -> None:
            if ok:
                self._committed(msg, policy, result, ids, key, now, started, codec, reply)
            else:
                reply(self._store_failed(msg, policy, ids, started, codec, key))

        self.store.writer.store_message_cb(values, result.outputs, stored)

    # -- events (DICOM instances, ...) ------------------------------------
    def ingest_event(
        self,
        event: Event,
        origin: str,
        *,
        extra_op: Callable[[Any, Any, int], Any] | None = None,
        sending_app: str | None = None,
        skip_reason: str | None = None,
    ) -> defer.Deferred:
        """Store an event as a message, route it, and queue its deliveries; fires after COMMIT.

        *extra_op* ``(cursor, stmts, message_id) -> result`` runs in the same transaction (the
        archive's index rows), so the event and what it describes are committed together. Fires
        with ``(message_id, delivery_ids, extra_result)``; fails if the transaction failed (nothing
        of it is stored then). With *skip_reason* the event is stored as FILTERED for that reason
        and not routed (a duplicate instance the archive kept the first copy of). Runs in the
        reactor thread.
        """
        started = time.perf_counter()
        now = time.time()
        if self.metrics:
            self.metrics.received(self.name)
        attrs = event.attrs
        text = event.text
        values = {
            "channel": self.name, "received_at": now, "charset": "utf-8", "origin": origin[:255],
            "raw": text.encode("utf-8"), "parent_id": None, "duplicate_of": None,
            "control_id": event.control_id[:64] or None, "sending_app": (sending_app or "")[:180] or None,
            "sending_facility": None, "message_type": event.kind[:32],
            "patient_id": attrs.get("PatientID", "")[:64] or None,
            "accession": attrs.get("AccessionNumber", "")[:64] or None,
        }  # fmt: skip
        result = (
            run_pipeline(event, self.compiled)
            if skip_reason is None
            else PipelineResult(FILTERED, filter_info=skip_reason)
        )
        values.update(
            status=result.status, transformed=result.transformed, filter_info=result.filter_info, error=result.error
        )
        d: defer.Deferred = defer.Deferred()
        outputs = result.outputs

        def op(cur: Any, stmts: Any) -> tuple[int, list[int], Any]:
            mid, dids = store_op(cur, stmts)
            return mid, dids, extra_op(cur, stmts, mid) if extra_op is not None else None

        def stored(ok: bool, value: Any) -> None:
            if not ok:
                if self.metrics:
                    self.metrics.errored(self.name, "store")
                log.error("channel %s could not store event %s: %s", self.name, event.kind, type(value).__name__)
                d.errback(value)
                return
            mid, dids, _ = value
            if result.status == ERROR:
                if self.metrics:
                    self.metrics.errored(self.name, result.error_stage or "pipeline")
                log.warning(
                    "channel %s event %s (message %s) errored at %s", self.name, event.kind, mid, result.error_stage
                )
            elif result.status == FILTERED and self.metrics:
                self.metrics.filtered(self.name)
            self._handoff(outputs, dids, mid, now)
            if self.metrics:
                self.metrics.processed(self.name, time.perf_counter() - started)
            d.callback(value)

        store_op = self.store.writer.message_op(values, outputs)
        self.store.writer.submit_cb(op, stored)
        return d

    def _store_duplicate(self, msg, policy, values, original: int, started, codec, reply: Reply) -> None:
        if self.metrics:
            self.metrics.duplicate(self.name)
        values.update(
            status=FILTERED,
            transformed=None,
            error=None,
            duplicate_of=original,
            filter_info=f"duplicate of message {original} (same MSH-3/4/10 within the dedupe window)",
        )

        def stored(ok: bool, ids: Any) -> None:
            if ok:
                reply(self._answer(msg, policy, "accept", "", ids[0], started, codec))
            else:
                reply(self._store_failed(msg, policy, ids, started, codec, None))

        self.store.writer.store_message_cb(values, [], stored)

    def _committed(self, msg, policy, result, ids, key, now, started, codec, reply: Reply) -> None:
        mid, delivery_ids = ids
        if key is not None:
            if result.status == ERROR:
                self.dedupe.forget(key)
            else:
                self.dedupe.set_id(key, mid)
        if result.status == ERROR:
            if self.metrics:
                self.metrics.errored(self.name, result.error_stage or "pipeline")
            # The error text may quote field values (PHI): it is in the store, and only at DEBUG here.
            log.warning(
                "channel %s message %s (MSH-10 %s) errored at %s", self.name, mid, msg.control_id, result.error_stage
            )
            log.debug("channel %s message %s error: %s", self.name, mid, result.error)
            reply(self._answer(msg, policy, "error", result.error or "", mid, started, codec))
            return
        if result.status == FILTERED and self.metrics:
            self.metrics.filtered(self.name)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("channel %s stored message %s (MSH-10 %s) %s", self.name, mid, msg.control_id, result.status)
        if self.ack.mode == "after_delivery" and delivery_ids:
            # Wait before the handoff: a destination may complete synchronously inside it.
            self._wait_for_delivery(msg, policy, mid, delivery_ids, started, codec, reply)
            self._handoff(result.outputs, delivery_ids, mid, now)
            return
        # ACK first: the sender is waiting for it; the deliveries are already durable.
        reply(self._answer(msg, policy, "accept", "", mid, started, codec))
        self._handoff(result.outputs, delivery_ids, mid, now)

    def _handoff(self, outputs, delivery_ids, mid, now) -> None:
        queues = self.queues
        for (dest, content), did in zip(outputs, delivery_ids):
            queues[dest].handoff(QueuedItem(did, mid, content, 0, now))

    def _answer(self, msg, policy, outcome, reason, mid, started, codec) -> IngestResult:
        code = policy.code_for(outcome)
        ack = None
        if not policy.enhanced or policy.should_send(outcome == "accept"):
            text = build_ack(msg, code, reason=reason)
            ack = text.encode(codec, errors="replace")
            if self.metrics:
                self.metrics.ack_sent(self.name, code)
        if self.metrics:
            self.metrics.processed(self.name, time.perf_counter() - started)
        return IngestResult(code, ack, mid, reason)

    def _store_failed(self, msg, policy, exc, started, codec, key) -> IngestResult:
        if key is not None:
            self.dedupe.forget(key)
        if self.metrics:
            self.metrics.errored(self.name, "store")
        log.error("channel %s could not store MSH-10 %s: %s", self.name, msg.control_id, type(exc).__name__)
        log.debug("channel %s store failure: %s", self.name, exc)
        return self._answer(msg, policy, "reject", "message could not be stored; send it again", None, started, codec)

    def _store_failure(self, raw, origin, now, stage, reason, started, codec, text, reply: Reply) -> None:
        """Unreadable input: store it as ERROR, then answer AR with the reason."""
        if self.metrics:
            self.metrics.errored(self.name, stage)
        header = (text if text is not None else raw[:2048].decode("latin-1")).split("\r", 1)[0]
        values = {
            "channel": self.name, "received_at": now, "status": ERROR, "charset": codec, "origin": origin[:255],
            "raw": raw, "transformed": None, "filter_info": None, "error": f"{stage}: {reason}",
            "duplicate_of": None, "parent_id": None, "control_id": None, "sending_app": None,
            "sending_facility": None, "message_type": None, "patient_id": None, "accession": None,
        }  # fmt: skip

        def answer(ok: bool, ids: Any) -> None:
            mid = ids[0] if ok else None
            log.warning("channel %s message %s rejected at %s: %s", self.name, mid, stage, reason)
            ack = build_ack(None, "AR", reason=reason, raw_header=header)
            if self.metrics:
                self.metrics.ack_sent(self.name, "AR")
                self.metrics.processed(self.name, time.perf_counter() - started)
            reply(IngestResult("AR", ack.encode("latin-1", errors="replace"), mid, reason))

        self.store.writer.store_message_cb(values, [], answer)

    def reject(self, raw: bytes, origin: str, reason: str) -> defer.Deferred:
        """Record input that could not be framed (e.g. oversize) and answer AR."""
        if self.metrics:
            self.metrics.received(self.name)
        d: defer.Deferred = defer.Deferred()
        self._store_failure(
            raw, origin, time.time(), "framing", reason, time.perf_counter(), "latin-1", None, d.callback
        )
        return d

    # -- after_delivery --------------------------------------------------
    def _wait_for_delivery(self, msg, policy, mid, delivery_ids, started, codec, reply: Reply) -> None:
        pending = _Pending(set(delivery_ids), [], reply)

        def expire() -> None:
            for did in pending.remaining:
                self._waiting.pop(did, None)
            reason = f"delivery not confirmed within {self.ack.delivery_timeout:g}s (message stays queued)"
            reply(self._answer(msg, policy, "error", reason, mid, started, codec))

        pending.timeout = self.reactor.callLater(self.ack.delivery_timeout, expire)
        for did in delivery_ids:
            self._waiting[did] = pending
        pending.finish = lambda: reply(
            self._answer(
                msg, policy, "error" if pending.failures else "accept", "; ".join(pending.failures), mid, started, codec
            )
        )

    def _delivery_done(self, delivery_id: int, ok: bool, reason: str) -> None:
        if not self._waiting:
            return
        pending = self._waiting.pop(delivery_id, None)
        if pending is None:
            return
        pending.remaining.discard(delivery_id)
        if not ok:
            pending.failures.append(reason)
        if not pending.remaining:
            if pending.timeout.active():
                pending.timeout.cancel()
            pending.finish()

    # -- pruning ---------------------------------------------------------
    @defer.inlineCallbacks
    def prune(self):
        """Delete old messages in small batches, yielding to the reactor between them."""
        cfg = self.prune_cfg
        total = 0
        try:
            before = time.time() - (cfg.max_age or 0)
            while True:
                n = yield self.store.transact(thd_prune_batch, self.name, before, cfg.keep_errors, cfg.batch_size)
                total += n
                if n < cfg.batch_size:
                    break
                yield _sleep(self.reactor, 0.05)
        except Exception as exc:  # noqa: BLE001 - pruning must never stop the channel
            log.warning("channel %s pruning failed: %s", self.name, exc)
        if total:
            log.info("channel %s pruned %d messages", self.name, total)
        if self.running and cfg.max_age is not None:
            self._prune_call = self.reactor.callLater(cfg.interval, self.prune)
        return total


def _sleep(reactor: Any, seconds: float) -> defer.Deferred:
    d: defer.Deferred = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
