"""The RIS core: patients, orders, scheduled and performed procedure steps, reports, history, studies.

Mirrors ``ris_core/schema.py`` (see its docstring for the normalisation of values).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the RIS tables."""
    op.create_table(
        "ris_patients",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("patient_key", sa.String(130), nullable=False, unique=True),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("issuer", sa.String(64)),
        sa.Column("other_ids", sa.Text),
        sa.Column("name", sa.String(320)),
        sa.Column("name_upper", sa.String(320)),
        sa.Column("birth_date", sa.String(8)),
        sa.Column("sex", sa.String(16)),
        sa.Column("attrs", sa.Text),
        sa.Column("merged_into", sa.BigInteger, sa.ForeignKey("ris_patients.id")),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_ris_patients_id", "ris_patients", ["patient_id"])
    op.create_index("ix_ris_patients_name", "ris_patients", ["name_upper"])
    op.create_table(
        "ris_orders",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("patient_ref", sa.BigInteger, sa.ForeignKey("ris_patients.id"), nullable=False),
        sa.Column("placer_number", sa.String(64)),
        sa.Column("filler_number", sa.String(64)),
        sa.Column("accession", sa.String(16), nullable=False, unique=True),
        sa.Column("requested_procedure_id", sa.String(16)),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("procedure_code", sa.String(64)),
        sa.Column("procedure_text", sa.String(128)),
        sa.Column("procedure_scheme", sa.String(32)),
        sa.Column("modality", sa.String(16)),
        sa.Column("reason", sa.Text),
        sa.Column("ordering_provider", sa.String(320)),
        sa.Column("referring_physician", sa.String(320)),
        sa.Column("priority", sa.String(16)),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("reconcile", sa.Integer, nullable=False, server_default="0"),
        sa.Column("placer_app", sa.String(180)),
        sa.Column("attrs", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_ris_orders_patient", "ris_orders", ["patient_ref"])
    op.create_index("ix_ris_orders_placer", "ris_orders", ["placer_number"])
    op.create_index("ix_ris_orders_state", "ris_orders", ["state"])
    op.create_index("ix_ris_orders_study", "ris_orders", ["study_uid"])
    op.create_table(
        "ris_sps",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("order_ref", sa.BigInteger, sa.ForeignKey("ris_orders.id"), nullable=False),
        sa.Column("sps_id", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("modality", sa.String(16)),
        sa.Column("station_ae", sa.String(160)),
        sa.Column("station_name", sa.String(16)),
        sa.Column("start_date", sa.String(8)),
        sa.Column("start_time", sa.String(13)),
        sa.Column("description", sa.String(64)),
        sa.Column("performing_physician", sa.String(320)),
        sa.Column("patient_id", sa.String(64)),
        sa.Column("issuer", sa.String(64)),
        sa.Column("patient_name", sa.String(320)),
        sa.Column("patient_name_upper", sa.String(320)),
        sa.Column("accession", sa.String(16)),
        sa.Column("requested_procedure_id", sa.String(16)),
        sa.Column("study_uid", sa.String(64)),
        sa.Column("item", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("order_ref", "sps_id", name="uq_ris_sps_order_sps"),
    )
    op.create_index("ix_ris_sps_accession", "ris_sps", ["accession"])
    op.create_index("ix_ris_sps_date", "ris_sps", ["start_date"])
    op.create_index("ix_ris_sps_modality_date", "ris_sps", ["modality", "start_date"])
    op.create_index("ix_ris_sps_name", "ris_sps", ["patient_name_upper"])
    op.create_index("ix_ris_sps_patient", "ris_sps", ["patient_id"])
    op.create_index("ix_ris_sps_status", "ris_sps", ["status"])
    op.create_table(
        "ris_mpps",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("order_ref", sa.BigInteger, sa.ForeignKey("ris_orders.id")),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("station_ae", sa.String(16)),
        sa.Column("sps_refs", sa.Text),
        sa.Column("attrs", sa.Text),
        sa.Column("unscheduled", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_ris_mpps_order", "ris_mpps", ["order_ref"])
    op.create_table(
        "ris_reports",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("order_ref", sa.BigInteger, sa.ForeignKey("ris_orders.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(1), nullable=False),
        sa.Column("text", sa.Text),
        sa.Column("author", sa.String(320)),
        sa.Column("observed_at", sa.String(26)),
        sa.Column("message_id", sa.BigInteger),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("order_ref", "version", name="uq_ris_reports_version"),
    )
    op.create_index("ix_ris_reports_order", "ris_reports", ["order_ref"])
    op.create_table(
        "ris_history",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("order_ref", sa.BigInteger, sa.ForeignKey("ris_orders.id"), nullable=False),
        sa.Column("from_state", sa.String(20)),
        sa.Column("to_state", sa.String(20), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("source", sa.String(80)),
        sa.Column("message_id", sa.BigInteger),
        sa.Column("detail", sa.Text),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_ris_history_order", "ris_history", ["order_ref"])
    op.create_table(
        "ris_studies",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("study_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("order_ref", sa.BigInteger, sa.ForeignKey("ris_orders.id")),
        sa.Column("accession", sa.String(64)),
        sa.Column("patient_id", sa.String(64)),
        sa.Column("instances", sa.Integer, nullable=False, server_default="0"),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("stable", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_ris_studies_order", "ris_studies", ["order_ref"])
    op.create_index("ix_ris_studies_pending", "ris_studies", ["stable", "last_seen"])


def downgrade() -> None:
    """Drop the RIS tables."""
    for table in ("ris_studies", "ris_history", "ris_reports", "ris_mpps", "ris_sps", "ris_orders", "ris_patients"):
        op.drop_table(table)
