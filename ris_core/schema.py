"""Tables of the RIS core, in the engine's store (same MetaData; migration 0005 creates them).

patients ← orders ← scheduled procedure steps (the worklist), performed steps (MPPS), reports,
the state history of every order, and the studies seen in the archive (image matching and
reconciliation). Values are normalised at write time like the archive's (``archive/schema.py``):
DA ``YYYYMMDD``, TM ``HHMMSS.ffffff`` padded, person names in DICOM ``^`` form plus an upper-case
copy for case-insensitive matching, multi-valued attributes backslash-separated.

The worklist table ``ris_sps`` repeats the patient and order values a Modality Worklist query
matches on (patient id/name, accession, requested procedure, study UID), so a C-FIND is one
indexed table; the RIS keeps them current when a patient is updated or merged or an order changes.
``ris_sps.item`` is the worklist item as rendered by the mapping template (DICOM JSON, PS3.18 F.2),
returned for every key without a column.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint

from engine.store.schema import IdType, metadata

UID = String(64)
PN = String(320)

ris_patients = Table(
    "ris_patients",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("patient_key", String(130), nullable=False, unique=True),  # PID-3.1 "^" assigning authority
    Column("patient_id", String(64), nullable=False),
    Column("issuer", String(64)),
    Column("other_ids", Text),  # JSON list of {"id", "issuer", "type"}: every PID-3 repetition
    Column("name", PN),
    Column("name_upper", PN),
    Column("birth_date", String(8)),
    Column("sex", String(16)),
    Column("attrs", Text),  # JSON: further demographics (address, phone, ...)
    Column("merged_into", BigInteger, ForeignKey("ris_patients.id")),  # ADT^A40: the surviving patient
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_ris_patients_id", "patient_id"),
    Index("ix_ris_patients_name", "name_upper"),
)

ris_orders = Table(
    "ris_orders",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("patient_ref", BigInteger, ForeignKey("ris_patients.id"), nullable=False),
    Column("placer_number", String(64)),  # ORC-2 / OBR-2, as "id^namespace"
    Column("filler_number", String(64)),  # ORC-3 / OBR-3
    Column("accession", String(16), nullable=False, unique=True),  # OBR-18 (2.3.1) / IPC-1; generated if absent
    Column("requested_procedure_id", String(16)),  # OBR-19 / IPC-2
    Column("study_uid", UID, nullable=False),  # ZDS-1 / IPC-3; generated if absent
    Column("procedure_code", String(64)),  # OBR-4.1 (or OBR-44.1)
    Column("procedure_text", String(128)),  # OBR-4.2
    Column("procedure_scheme", String(32)),  # OBR-4.3
    Column("modality", String(16)),  # OBR-24 / IPC-5
    Column("reason", Text),  # OBR-31 / ORC-16
    Column("ordering_provider", PN),  # ORC-12 / OBR-16
    Column("referring_physician", PN),  # PV1-8
    Column("priority", String(16)),  # ORC-7.6 / OBR-27.6 / TQ1-9
    Column("state", String(20), nullable=False),  # ris_core.states
    Column("reconcile", Integer, nullable=False, default=0),  # 1: created from an unscheduled acquisition
    Column("placer_app", String(180)),  # MSH-3^MSH-4 of the placer (order status goes back there)
    Column("attrs", Text),  # JSON: the order as received (what templates need beyond the columns)
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_ris_orders_patient", "patient_ref"),
    Index("ix_ris_orders_state", "state"),
    Index("ix_ris_orders_placer", "placer_number"),
    Index("ix_ris_orders_study", "study_uid"),
)

ris_sps = Table(
    "ris_sps",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("order_ref", BigInteger, ForeignKey("ris_orders.id"), nullable=False),
    Column("sps_id", String(16), nullable=False),  # OBR-20 / IPC-4; generated if absent
    Column("status", String(16), nullable=False),  # DICOM SPS status: SCHEDULED, ARRIVED, STARTED, COMPLETED ...
    Column("modality", String(16)),
    Column("station_ae", String(160)),  # ScheduledStationAETitle, backslash-separated (multi-valued)
    Column("station_name", String(16)),
    Column("start_date", String(8)),
    Column("start_time", String(13)),
    Column("description", String(64)),
    Column("performing_physician", PN),
    # Patient and order values repeated for one-table worklist matching:
    Column("patient_id", String(64)),
    Column("issuer", String(64)),
    Column("patient_name", PN),
    Column("patient_name_upper", PN),
    Column("accession", String(16)),
    Column("requested_procedure_id", String(16)),
    Column("study_uid", UID),
    Column("item", Text),  # the rendered worklist item (DICOM JSON)
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("order_ref", "sps_id", name="uq_ris_sps_order_sps"),
    Index("ix_ris_sps_modality_date", "modality", "start_date"),
    Index("ix_ris_sps_date", "start_date"),
    Index("ix_ris_sps_accession", "accession"),
    Index("ix_ris_sps_patient", "patient_id"),
    Index("ix_ris_sps_name", "patient_name_upper"),
    Index("ix_ris_sps_status", "status"),
)

ris_mpps = Table(
    "ris_mpps",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("sop_instance_uid", UID, nullable=False, unique=True),  # the MPPS instance (N-CREATE's Affected SOP)
    Column("order_ref", BigInteger, ForeignKey("ris_orders.id")),  # None: no order found (reconciliation)
    Column("status", String(16), nullable=False),  # IN PROGRESS, COMPLETED, DISCONTINUED
    Column("station_ae", String(16)),
    Column("sps_refs", Text),  # JSON list of {"accession", "sps_id", "study_uid", "requested_procedure_id"}
    Column("attrs", Text),  # DICOM JSON: the N-CREATE attributes with every N-SET applied
    Column("unscheduled", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_ris_mpps_order", "order_ref"),
)

ris_reports = Table(
    "ris_reports",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("order_ref", BigInteger, ForeignKey("ris_orders.id"), nullable=False),
    Column("version", Integer, nullable=False),  # 1, 2, ... in arrival order
    Column("status", String(1), nullable=False),  # OBR-25: P preliminary, F final, C corrected
    Column("text", Text),  # OBX-5 values joined
    Column("author", PN),  # OBR-32 (principal result interpreter)
    Column("observed_at", String(26)),  # OBR-7 / OBR-22
    Column("message_id", BigInteger),  # the ORU^R01 in the message store
    Column("created_at", Float, nullable=False),
    UniqueConstraint("order_ref", "version", name="uq_ris_reports_version"),
    Index("ix_ris_reports_order", "order_ref"),
)

ris_history = Table(
    "ris_history",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("order_ref", BigInteger, ForeignKey("ris_orders.id"), nullable=False),
    Column("from_state", String(20)),  # None for the creating event
    Column("to_state", String(20), nullable=False),
    Column("event", String(32), nullable=False),  # ris_core.states event name
    Column("source", String(80)),  # what triggered it: MSH-10, MPPS SOP UID, Study UID, "timeout"
    Column("message_id", BigInteger),  # the store message that carried it, when there was one
    Column("detail", Text),
    Column("at", Float, nullable=False),
    Index("ix_ris_history_order", "order_ref"),
)

ris_studies = Table(
    "ris_studies",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("study_uid", UID, nullable=False, unique=True),
    Column("order_ref", BigInteger, ForeignKey("ris_orders.id")),  # None: unmatched (reconciliation list)
    Column("accession", String(64)),
    Column("patient_id", String(64)),
    Column("instances", Integer, nullable=False, default=0),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),  # the study-stable timeout counts from here
    Column("stable", Integer, nullable=False, default=0),  # 1 once the study-stable timeout fired
    Index("ix_ris_studies_order", "order_ref"),
    Index("ix_ris_studies_pending", "stable", "last_seen"),
)

TABLES = (ris_patients, ris_orders, ris_sps, ris_mpps, ris_reports, ris_history, ris_studies)
