"""Run one test case against the engine built from its config, offline.

The validated config goes through :class:`engine.app.App` exactly as ``radbridge run`` builds
it, with three changes: every source whose type is not registered ``offline`` (an MLLP listener,
a DICOM SCP, a file drop) becomes a ``memory`` source, every destination that is not ``offline``
(an MLLP sender, a DICOM SCU, a file writer) becomes a ``memory`` destination answering what the
case's ``mocks`` say, and the store, the archive and every folder move to a fresh temporary data
folder (a copy of a migrated SQLite file: no database server). In-process components (the RIS,
``channel`` destinations, ``internal`` sources) stay real. The engine runs on a fake clock, so a
case is deterministic and takes milliseconds.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from engine.config.validate import ValidatedConfig
from engine.event import Event
from engine.hl7.message import HL7Message
from engine.testing.cases import Case, Mock

ROUNDS = 200  # upper bound of clock steps while waiting for deliveries to settle
SERVERS = ("metrics", "admin")  # root sections that listen on a port: off in a test
RETRY_STEP = 1.0  # seconds the fake clock moves per step while a delivery waits for a retry


@dataclass
class Outcome:
    """What one case produced."""

    acks: list[str] = field(default_factory=list)  # MSA-1 per input message ("" for an event)
    ack_texts: list[str] = field(default_factory=list)  # the whole ACKs
    outputs: dict[str, list[str]] = field(default_factory=dict)  # "channel.destination" -> payloads
    kept: dict[str, str] = field(default_factory=dict)  # "channel.destination" -> type, not swapped
    error: str = ""  # the case could not run (unknown channel, a template that fails ...)
    ris: Any = None
    store: Any = None


def messages(case: Case, base: Path) -> list[str]:
    """The case's HL7 input messages (segments separated by CR)."""
    items: list[str] = []
    if case.input is not None:
        items = [case.input] if isinstance(case.input, str) else list(case.input)
    elif case.input_file is not None:
        files = [case.input_file] if isinstance(case.input_file, str) else list(case.input_file)
        items = [(base / f).read_text(encoding="utf-8") for f in files]
    return [normalise(text) for text in items]


def normalise(text: str) -> str:
    """HL7 text as written in YAML (LF or CRLF line ends, a trailing newline) → CR-separated segments."""
    lines = [line for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if line.strip()]
    return "\r".join(lines) + "\r"


def _drive(d: defer.Deferred, store: Any, clock: Clock, rounds: int = ROUNDS) -> Any:
    """Commit and step the clock until *d* fired; its result (its failure raised)."""
    box: list[Any] = []
    d.addBoth(box.append)
    for _ in range(rounds):
        if box:
            break
        store.writer.drain()
        clock.advance(0)
    if not box:
        raise TimeoutError("the engine did not answer")
    result = box[0]
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


class Harness:
    """One case's engine: built from an offline copy of the config, started on a fake clock."""

    def __init__(self, vc: ValidatedConfig, template_db: Path | None = None) -> None:
        self.vc = vc
        self.template_db = template_db
        self.tmp = Path(tempfile.mkdtemp(prefix="radbridge-test-"))
        self.clock = Clock()
        self.app: Any = None

    def offline_config(self, mocks: dict[str, Mock]) -> ValidatedConfig:
        """The config with external connectors swapped and every path in the temporary folder."""
        vc, reg = self.vc, self.vc.registry
        memory_source = reg.get("source", "memory").model
        memory_destination = reg.get("destination", "memory").model
        channels = []
        for spec in vc.channels:
            source = spec.source
            stype = reg.find("source", getattr(source, "type", ""))
            if stype is None or not stype.offline:
                source = memory_source.model_validate({"type": "memory"})
            destinations = []
            for dest in spec.destinations:
                dtype = reg.find("destination", dest.config.type)
                if dtype is not None and dtype.offline:
                    destinations.append(dest)
                    continue
                mock = mocks.get(f"{spec.config.name}.{dest.config.name}") or mocks.get(dest.config.name) or Mock()
                connector = memory_destination.model_validate({"type": "memory", **mock.model_dump()})
                config = dest.config.model_copy(update={"type": "memory"})
                destinations.append(dataclasses.replace(dest, config=config, connector=connector))
            channels.append(dataclasses.replace(spec, source=source, destinations=destinations))
        servers = {key: getattr(vc.root, key) for key in SERVERS if getattr(vc.root, key, None) is not None}
        root = vc.root.model_copy(update={k: v.model_copy(update={"enabled": False}) for k, v in servers.items()})
        archive = vc.archive.model_copy(update={"root": None, "fsync": False}) if vc.archive is not None else None
        data = self.tmp / "data"
        db = data / "radbridge.db"
        data.mkdir(parents=True, exist_ok=True)
        if self.template_db is not None and self.template_db.exists():
            shutil.copyfile(self.template_db, db)
        return dataclasses.replace(
            vc, root=root, data_dir=data, database_url=f"sqlite:///{db}", channels=channels, archive=archive
        )

    def start(self, mocks: dict[str, Mock]) -> None:
        """Build and start the engine."""
        from engine.app import App

        self.app = App(self.offline_config(mocks), self.clock)
        _drive(self.app.start(), self.app.store, self.clock)

    def stop(self) -> None:
        """Stop the engine and delete the temporary folder."""
        try:
            if self.app is not None:
                _drive(self.app.stop(), self.app.store, self.clock)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- running ------------------------------------------------------------------------------------
    def run(self, case: Case, base: Path) -> Outcome:
        """Feed the case's input to its channel, let every delivery settle, collect what came out."""
        app, out = self.app, Outcome()
        for i, step in enumerate(case.before):
            setup = Outcome()
            if not self._feed(step, base, setup):
                out.error = f"before[{i}]: {setup.error}"
                return out
            self._settle()
            bad = [(code, text) for code, text in zip(setup.acks, setup.ack_texts) if code not in ("AA", "CA", "")]
            if bad:
                out.error = f"before[{i}]: {step.channel} answered {bad[0][0]}: {bad[0][1].strip()!r}"
                return out
        before = self._collect(out) if case.before else {}
        if not self._feed(case, base, out):
            return out
        self._settle()
        self._collect(out)
        for key, n in before.items():  # what the before steps produced is not this case's output
            out.outputs[key] = out.outputs.get(key, [])[n:]
        out.ris, out.store = app.ris, app.store
        return out

    def _collect(self, out: Outcome) -> dict[str, int]:
        """Fill ``out.outputs`` and ``out.kept`` with everything delivered so far; the count per destination."""
        app = self.app
        for name, svc in app.services.items():
            for dest, queue in svc.queues.items():
                received = getattr(queue.connector, "received", None)
                if received is not None:
                    out.outputs[f"{name}.{dest}"] = list(received)
        for spec in self.vc.channels:
            for dest in spec.destinations:
                dtype = self.vc.registry.find("destination", dest.config.type)
                if dtype is not None and dtype.offline:
                    out.kept[f"{spec.config.name}.{dest.config.name}"] = dest.config.type
        delivered = app.store.read_sync(thd_delivered)
        for key in out.kept:  # what the in-process destinations were given, from the store
            out.outputs[key] = delivered.get(key, [])
        return {key: len(texts) for key, texts in out.outputs.items()}

    def _feed(self, step: Any, base: Path, out: Outcome) -> bool:
        """Give *step*'s input to its channel's source; the ACKs into *out* (False and ``out.error`` if it cannot)."""
        app = self.app
        service = app.services.get(step.channel or "")
        if service is None:
            out.error = f"no enabled channel {step.channel!r} (channels: {', '.join(app.services) or 'none'})"
            return False
        if step.dicom is not None:
            _drive(service.ingest_event(dicom_event(step.dicom), "test:dicom"), app.store, self.clock)
            out.acks.append("")
            out.ack_texts.append("")
            return True
        if not hasattr(service.source, "inject"):
            out.error = f"channel {step.channel!r} is fed by the engine ({type(service.source).__name__}): test the channel that feeds it"
            return False
        for text in messages(step, base):
            result = _drive(service.source.inject(text, "test"), app.store, self.clock)
            ack = result.ack.decode("utf-8", "replace") if result.ack else ""
            out.ack_texts.append(ack)
            out.acks.append(HL7Message(ack)["MSA-1"] if ack.startswith("MSH") else "")
        return True

    def _pending(self) -> int:
        """Deliveries still QUEUED (waiting to be sent or retried)."""
        return self.app.store.read_sync(thd_queued)

    def _settle(self) -> None:
        """Commit, deliver and retry until nothing is waiting (or ROUNDS steps)."""
        store, clock = self.app.store, self.clock
        for _ in range(ROUNDS):
            for _ in range(3):
                store.writer.drain()
                clock.advance(0)
            if not self._pending():
                return
            clock.advance(RETRY_STEP)


def thd_queued(conn: Any) -> int:
    """How many deliveries are QUEUED."""
    from sqlalchemy import func, select

    from engine.store.schema import QUEUED, deliveries

    return int(conn.execute(select(func.count()).where(deliveries.c.status == QUEUED)).scalar_one())


def thd_delivered(conn: Any) -> dict[str, list[str]]:
    """Every delivery's content by ``channel.destination``, in order."""
    from sqlalchemy import func, select

    from engine.store.schema import deliveries as d
    from engine.store.schema import messages as m

    query = select(d.c.channel, d.c.destination, func.coalesce(d.c.content, m.c.transformed, m.c.raw))
    out: dict[str, list[str]] = {}
    for channel, destination, content in conn.execute(query.join(m, m.c.id == d.c.message_id).order_by(d.c.id)):
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content or ""
        out.setdefault(f"{channel}.{destination}", []).append(text)
    return out


def dicom_event(attrs: dict[str, Any]) -> Event:
    """A ``dicom.stored`` event for an instance with *attrs* (UIDs generated when absent)."""
    values = {str(k): "\\".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in attrs.items()}
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        values.setdefault(key, f"2.25.{uuid.uuid4().int}")
    values.setdefault("SOPClassUID", "1.2.840.10008.5.1.4.1.1.2")
    payload = {
        "path": f"{values['StudyInstanceUID']}/{values['SeriesInstanceUID']}/{values['SOPInstanceUID']}.dcm",
        "sop_class_uid": values["SOPClassUID"], "sop_instance_uid": values["SOPInstanceUID"],
        "transfer_syntax": "1.2.840.10008.1.2.1", "size": 0, "sha256": "", "calling_ae": "TEST",
        "outcome": "stored", "received_at": time.time(),
    }  # fmt: skip
    return Event("dicom.stored", values, payload)
