"""The archive's index: DICOM patients, studies, series, instances, and archived HL7 messages.

Mirrors ``archive/schema.py`` (see its docstring for how values are normalised).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UID = sa.String(64)


def upgrade() -> None:
    """Create the archive tables."""
    op.create_table(
        "dicom_patients",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("patient_key", sa.String(130), nullable=False, unique=True),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("issuer", sa.String(64)),
        sa.Column("patient_name", sa.String(320)),
        sa.Column("patient_name_upper", sa.String(320)),
        sa.Column("birth_date", sa.String(8)),
        sa.Column("sex", sa.String(16)),
        sa.Column("attrs", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_dicom_patients_id", "dicom_patients", ["patient_id"])
    op.create_index("ix_dicom_patients_name", "dicom_patients", ["patient_name_upper"])
    op.create_table(
        "dicom_studies",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("study_uid", UID, nullable=False, unique=True),
        sa.Column("patient_ref", sa.BigInteger, sa.ForeignKey("dicom_patients.id"), nullable=False),
        sa.Column("study_date", sa.String(8)),
        sa.Column("study_time", sa.String(13)),
        sa.Column("accession", sa.String(64)),
        sa.Column("study_id", sa.String(16)),
        sa.Column("description", sa.String(64)),
        sa.Column("referring_physician", sa.String(320)),
        sa.Column("modalities", sa.String(160)),
        sa.Column("num_series", sa.Integer, nullable=False, server_default="0"),
        sa.Column("num_instances", sa.Integer, nullable=False, server_default="0"),
        sa.Column("attrs", sa.Text),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    for name, cols in (
        ("ix_dicom_studies_patient", ["patient_ref"]),
        ("ix_dicom_studies_date", ["study_date"]),
        ("ix_dicom_studies_accession", ["accession"]),
        ("ix_dicom_studies_received", ["received_at"]),
    ):
        op.create_index(name, "dicom_studies", cols)
    op.create_table(
        "dicom_series",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("series_uid", UID, nullable=False, unique=True),
        sa.Column("study_ref", sa.BigInteger, sa.ForeignKey("dicom_studies.id"), nullable=False),
        sa.Column("modality", sa.String(16)),
        sa.Column("series_number", sa.Integer),
        sa.Column("description", sa.String(64)),
        sa.Column("series_date", sa.String(8)),
        sa.Column("series_time", sa.String(13)),
        sa.Column("body_part", sa.String(16)),
        sa.Column("station_name", sa.String(16)),
        sa.Column("num_instances", sa.Integer, nullable=False, server_default="0"),
        sa.Column("attrs", sa.Text),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_dicom_series_study", "dicom_series", ["study_ref"])
    op.create_index("ix_dicom_series_modality", "dicom_series", ["modality"])
    op.create_table(
        "dicom_instances",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("sop_uid", UID, nullable=False, unique=True),
        sa.Column("series_ref", sa.BigInteger, sa.ForeignKey("dicom_series.id"), nullable=False),
        sa.Column("study_uid", UID, nullable=False),
        sa.Column("sop_class_uid", UID, nullable=False),
        sa.Column("instance_number", sa.Integer),
        sa.Column("transfer_syntax", UID, nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("calling_ae", sa.String(16)),
        sa.Column("channel", sa.String(64)),
        sa.Column("message_id", sa.BigInteger),
        sa.Column("attrs", sa.Text),
    )
    op.create_index("ix_dicom_instances_series", "dicom_instances", ["series_ref"])
    op.create_index("ix_dicom_instances_study", "dicom_instances", ["study_uid"])
    op.create_index("ix_dicom_instances_received", "dicom_instances", ["received_at"])
    op.create_table(
        "hl7_archive",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.BigInteger),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("control_id", sa.String(64)),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("archived_at", sa.Float, nullable=False),
    )
    op.create_index("ix_hl7_archive_message", "hl7_archive", ["message_id"])
    op.create_index("ix_hl7_archive_time", "hl7_archive", ["archived_at"])


def downgrade() -> None:
    """Drop the archive tables."""
    for table in ("hl7_archive", "dicom_instances", "dicom_series", "dicom_studies", "dicom_patients"):
        op.drop_table(table)
