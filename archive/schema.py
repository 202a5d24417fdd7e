"""Index tables of the archive, in the engine's store (same MetaData; migration 0004 creates them).

Four DICOM levels (patient → study → series → instance) plus the HL7 raw-message archive.
Columns hold the attributes C-FIND matches on, normalised at write time so that matching is
plain SQL (see ``archive/query.py``):

* dates (DA) are ``YYYYMMDD`` strings, times (TM) ``HHMMSS.ffffff`` strings padded on the right
  (``"1012"`` → ``"101200.000000"``), so ranges compare as strings;
* person names keep the value as received (``patient_name``) and an upper-case copy
  (``patient_name_upper``) for case-insensitive matching;
* multi-valued attributes (``modalities``) are stored backslash-separated, as DICOM encodes them;
* ``attrs`` is the DICOM JSON model (PS3.18 F.2) of that level's attributes from the instance that
  created or last updated the row, without bulk data; C-FIND returns keys that have no column
  from it.

Paths in ``dicom_instances.path`` and ``hl7_archive.path`` are relative to the archive root.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, ForeignKey, Index, Integer, String, Table, Text

from engine.store.schema import IdType, metadata

UID = String(64)

dicom_patients = Table(
    "dicom_patients",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    # PatientID and IssuerOfPatientID joined with "^" (an empty issuer keeps the "^"): one row each.
    Column("patient_key", String(130), nullable=False, unique=True),
    Column("patient_id", String(64), nullable=False),
    Column("issuer", String(64)),
    Column("patient_name", String(320)),
    Column("patient_name_upper", String(320)),
    Column("birth_date", String(8)),
    Column("sex", String(16)),
    Column("attrs", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_dicom_patients_id", "patient_id"),
    Index("ix_dicom_patients_name", "patient_name_upper"),
)

dicom_studies = Table(
    "dicom_studies",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("study_uid", UID, nullable=False, unique=True),
    Column("patient_ref", BigInteger, ForeignKey("dicom_patients.id"), nullable=False),
    Column("study_date", String(8)),
    Column("study_time", String(13)),
    Column("accession", String(64)),
    Column("study_id", String(16)),
    Column("description", String(64)),
    Column("referring_physician", String(320)),
    Column("modalities", String(160)),  # ModalitiesInStudy, backslash-separated, sorted
    Column("num_series", Integer, nullable=False, default=0),
    Column("num_instances", Integer, nullable=False, default=0),
    Column("attrs", Text),
    Column("received_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_dicom_studies_patient", "patient_ref"),
    Index("ix_dicom_studies_date", "study_date"),
    Index("ix_dicom_studies_accession", "accession"),
    Index("ix_dicom_studies_received", "received_at"),
)

dicom_series = Table(
    "dicom_series",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("series_uid", UID, nullable=False, unique=True),
    Column("study_ref", BigInteger, ForeignKey("dicom_studies.id"), nullable=False),
    Column("modality", String(16)),
    Column("series_number", Integer),
    Column("description", String(64)),
    Column("series_date", String(8)),
    Column("series_time", String(13)),
    Column("body_part", String(16)),
    Column("station_name", String(16)),
    Column("num_instances", Integer, nullable=False, default=0),
    Column("attrs", Text),
    Column("received_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_dicom_series_study", "study_ref"),
    Index("ix_dicom_series_modality", "modality"),
)

dicom_instances = Table(
    "dicom_instances",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("sop_uid", UID, nullable=False, unique=True),
    Column("series_ref", BigInteger, ForeignKey("dicom_series.id"), nullable=False),
    Column("study_uid", UID, nullable=False),  # denormalised: retrieval by study without joins
    Column("sop_class_uid", UID, nullable=False),
    Column("instance_number", Integer),
    Column("transfer_syntax", UID, nullable=False),
    Column("path", String(1024), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("received_at", Float, nullable=False),
    Column("calling_ae", String(16)),
    Column("channel", String(64)),
    Column("message_id", BigInteger),  # the store message recording this instance's arrival
    Column("attrs", Text),
    Index("ix_dicom_instances_series", "series_ref"),
    Index("ix_dicom_instances_study", "study_uid"),
    Index("ix_dicom_instances_received", "received_at"),
)

hl7_archive = Table(
    "hl7_archive",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("message_id", BigInteger),
    Column("channel", String(64), nullable=False),
    Column("control_id", String(64)),
    Column("path", String(1024), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("archived_at", Float, nullable=False),
    Index("ix_hl7_archive_message", "message_id"),
    Index("ix_hl7_archive_time", "archived_at"),
)

TABLES = (dicom_patients, dicom_studies, dicom_series, dicom_instances, hl7_archive)
