"""The audit trail: who did or saw what, when, from where; in the store and optionally as RFC 5424 syslog.

The syslog message is an IHE ATNA style DICOM audit message (PS3.15 A.5) in the RFC 5424 MSG part,
MSGID ``IHE+RFC-3881``, facility 10 (security/authorization), over UDP (RFC 5426). Rows are only
inserted, never updated or deleted.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from engine.admin.schema import admin_audit

log = logging.getLogger("radbridge.admin")

SUCCESS, FAILURE = "success", "failure"
FACILITY, SEVERITY_OK, SEVERITY_FAILED = 10, 5, 4  # security/authorization; notice, warning

#: action prefix -> (DICOM EventID code, meaning, EventActionCode)
EVENT_CODES = {
    "login": ("110114", "User Authentication", "E"),
    "logout": ("110114", "User Authentication", "E"),
    "channel": ("110100", "Application Activity", "E"),
    "message.search": ("110112", "Query", "E"),
    "message.view": ("110110", "Patient Record", "R"),
    "message.reprocess": ("110110", "Patient Record", "C"),
    "message.resend": ("110106", "Export", "R"),
    "queue": ("110100", "Application Activity", "U"),
    "ris": ("110110", "Patient Record", "R"),
    "archive": ("110110", "Patient Record", "R"),
    "user": ("110136", "Security Roles Changed", "U"),
    "audit": ("110112", "Query", "E"),
}


@dataclass(frozen=True)
class AuditRecord:
    """One audit event."""

    action: str
    username: str | None
    role: str | None
    target: str | None
    outcome: str
    remote: str | None
    detail: dict[str, Any] | None = None
    at: float = 0.0

    def row(self) -> dict[str, Any]:
        """Column values for ``admin_audit``."""
        return {
            "at": self.at or time.time(), "username": self.username, "role": self.role, "action": self.action[:64],
            "target": (self.target or "")[:255] or None, "outcome": self.outcome, "remote": (self.remote or "")[:64],
            "detail": json.dumps(self.detail, sort_keys=True, default=str) if self.detail else None,
        }  # fmt: skip


def thd_audit_insert(conn: Connection, row: dict[str, Any]) -> int:
    """Insert one audit row; its id."""
    return int(conn.execute(admin_audit.insert().values(**row)).inserted_primary_key[0])


def thd_audit_list(conn: Connection, *, user: str | None = None, action: str | None = None,
                   since: float | None = None, until: float | None = None, limit: int = 200) -> list[dict[str, Any]]:  # fmt: skip
    """Audit rows newest first; *action* matches a whole action or a prefix before a dot (``login``)."""
    a = admin_audit.c
    query = select(admin_audit)
    if user:
        query = query.where(a.username == user)
    if action:
        query = query.where((a.action == action) | a.action.like(action.replace("%", "") + ".%"))
    if since is not None:
        query = query.where(a.at >= since)
    if until is not None:
        query = query.where(a.at < until)
    out = []
    for r in conn.execute(query.order_by(a.id.desc()).limit(limit)):
        row = dict(r._mapping)
        row["detail"] = json.loads(row["detail"]) if row["detail"] else None
        out.append(row)
    return out


def _event(action: str) -> tuple[str, str, str]:
    for key in (action, action.split(".", 1)[0]):
        if key in EVENT_CODES:
            return EVENT_CODES[key]
    return "110100", "Application Activity", "E"


def atna_xml(record: AuditRecord, source_id: str) -> str:
    """A DICOM audit message (PS3.15 A.5.1) describing *record*."""
    code, meaning, action_code = _event(record.action)
    root = ET.Element("AuditMessage")
    when = datetime.fromtimestamp(record.at or time.time(), UTC).isoformat(timespec="milliseconds")
    outcome = "0" if record.outcome == SUCCESS else "4"
    ev = ET.SubElement(root, "EventIdentification", EventActionCode=action_code, EventDateTime=when,
                       EventOutcomeIndicator=outcome)  # fmt: skip
    ET.SubElement(ev, "EventID", csd_code=code, codeSystemName="DCM", originalText=meaning)
    ET.SubElement(ev, "EventTypeCode", csd_code=record.action, codeSystemName="radbridge", originalText=record.action)
    ET.SubElement(root, "ActiveParticipant", UserID=record.username or "-", UserIsRequestor="true",
                  NetworkAccessPointID=record.remote or "-", NetworkAccessPointTypeCode="2")  # fmt: skip
    ET.SubElement(root, "AuditSourceIdentification", AuditSourceID=source_id)
    if record.target:
        ET.SubElement(root, "ParticipantObjectIdentification", ParticipantObjectID=record.target,
                      ParticipantObjectTypeCode="2")  # fmt: skip
    return ET.tostring(root, encoding="unicode").replace("csd_code=", "csd-code=")


def rfc5424(record: AuditRecord, app_name: str, hostname: str | None = None) -> bytes:
    """One RFC 5424 syslog message (UTF-8 MSG with BOM) carrying the ATNA XML of *record*."""
    pri = FACILITY * 8 + (SEVERITY_OK if record.outcome == SUCCESS else SEVERITY_FAILED)
    stamp = datetime.fromtimestamp(record.at or time.time(), UTC).isoformat(timespec="microseconds")
    host = (hostname or socket.gethostname() or "-")[:255]
    header = f"<{pri}>1 {stamp.replace('+00:00', 'Z')} {host} {app_name} {os.getpid()} IHE+RFC-3881 -"
    return header.encode("ascii", errors="replace") + b" \xef\xbb\xbf" + atna_xml(record, app_name).encode("utf-8")


class AuditTrail:
    """Records audit events in the store (and as syslog when configured)."""

    def __init__(self, store: Any, syslog: Any = None) -> None:
        self.store = store
        self.syslog = syslog
        self._sock: socket.socket | None = None
        if syslog is not None:
            family = socket.AF_INET6 if ":" in syslog.host else socket.AF_INET
            self._sock = socket.socket(family, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    def record(self, record: AuditRecord) -> Any:
        """Store *record* (a Deferred firing with its id) and send it to syslog."""
        if not record.at:
            record = AuditRecord(**{**record.__dict__, "at": time.time()})
        if self._sock is not None:
            try:
                self._sock.sendto(rfc5424(record, self.syslog.app_name), (self.syslog.host, self.syslog.port))
            except OSError as exc:
                log.warning("audit syslog to %s:%d failed: %s", self.syslog.host, self.syslog.port, exc.strerror)
        d = self.store.transact(thd_audit_insert, record.row())

        def failed(f: Any) -> Any:
            log.error("audit record %s not stored: %s", record.action, f.getErrorMessage())
            return f  # the caller answers 500 rather than show PHI without a record

        return d.addErrback(failed)

    def close(self) -> None:
        """Close the syslog socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
