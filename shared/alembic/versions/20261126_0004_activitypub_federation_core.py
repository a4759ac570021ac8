"""ActivityPub: our keypair, remote actors, our objects, the activity outbox and its
deliveries, received inbox items, followers and following, reactions, remote objects, blocks.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ap_activities",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("uri", sa.String(length=2000), nullable=False),
        sa.Column("app", sa.String(length=20), nullable=False),
        sa.Column("activity_type", sa.String(length=40), nullable=False),
        sa.Column("object_uri", sa.String(length=2000), nullable=True),
        sa.Column("visibility", sa.String(length=20), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "target_inboxes",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("state", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ap_activities")),
        sa.UniqueConstraint("uri", name=op.f("uq_ap_activities_uri")),
    )
    op.create_index(
        "ix_ap_activities_app_visibility_id",
        "ap_activities",
        ["app", "visibility", "id"],
        unique=False,
    )
    op.create_index(
        "ix_ap_activities_pending",
        "ap_activities",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "ap_blocks",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("value", sa.String(length=2000), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ap_blocks")),
        sa.UniqueConstraint("kind", "value", name=op.f("uq_ap_blocks_kind_value")),
    )
    op.create_table(
        "ap_inbox_items",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("activity_uri", sa.String(length=2000), nullable=False),
        sa.Column("activity_type", sa.String(length=40), nullable=False),
        sa.Column("app", sa.String(length=20), nullable=True),
        sa.Column("actor_uri", sa.String(length=2000), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("state", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ap_inbox_items")),
        sa.UniqueConstraint("activity_uri", name=op.f("uq_ap_inbox_items_activity_uri")),
    )
    op.create_index(
        "ix_ap_inbox_items_pending",
        "ap_inbox_items",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "ap_keypairs",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("private_key_encrypted", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default="true", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ap_keypairs")),
    )
    op.create_table(
        "ap_objects",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("uri", sa.String(length=2000), nullable=False),
        sa.Column("app", sa.String(length=20), nullable=False),
        sa.Column("object_type", sa.String(length=40), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "published_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ap_objects")),
        sa.UniqueConstraint("uri", name=op.f("uq_ap_objects_uri")),
    )
    op.create_index(
        "ix_ap_objects_app_published", "ap_objects", ["app", "published_at"], unique=False
    )
    op.create_table(
        "ap_reactions",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("activity_uri", sa.String(length=2000), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("object_uri", sa.String(length=2000), nullable=False),
        sa.Column("actor_uri", sa.String(length=2000), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ap_reactions")),
        sa.UniqueConstraint("activity_uri", name=op.f("uq_ap_reactions_activity_uri")),
    )
    op.create_index("ix_ap_reactions_object_uri", "ap_reactions", ["object_uri"], unique=False)
    op.create_table(
        "ap_remote_actors",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("uri", sa.String(length=2000), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("actor_type", sa.String(length=40), nullable=False),
        sa.Column("preferred_username", sa.String(length=255), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("inbox", sa.String(length=2000), nullable=False),
        sa.Column("shared_inbox", sa.String(length=2000), nullable=True),
        sa.Column("key_id", sa.String(length=2000), nullable=True),
        sa.Column("public_key_pem", sa.Text(), nullable=True),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "fetched_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ap_remote_actors")),
        sa.UniqueConstraint("uri", name=op.f("uq_ap_remote_actors_uri")),
    )
    op.create_index("ix_ap_remote_actors_domain", "ap_remote_actors", ["domain"], unique=False)
    op.create_index("ix_ap_remote_actors_key_id", "ap_remote_actors", ["key_id"], unique=False)
    op.create_table(
        "ap_remote_objects",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("uri", sa.String(length=2000), nullable=False),
        sa.Column("actor_uri", sa.String(length=2000), nullable=False),
        sa.Column("object_type", sa.String(length=40), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ap_remote_objects")),
        sa.UniqueConstraint("uri", name=op.f("uq_ap_remote_objects_uri")),
    )
    op.create_index(
        "ix_ap_remote_objects_actor_uri", "ap_remote_objects", ["actor_uri"], unique=False
    )
    op.create_table(
        "ap_deliveries",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("activity_id", sa.BigInteger(), nullable=False),
        sa.Column("inbox", sa.String(length=2000), nullable=False),
        sa.Column("state", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_status", sa.SmallInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["activity_id"],
            ["ap_activities.id"],
            name=op.f("fk_ap_deliveries_activity_id_ap_activities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ap_deliveries")),
        sa.UniqueConstraint(
            "activity_id", "inbox", name=op.f("uq_ap_deliveries_activity_id_inbox")
        ),
    )
    op.create_index(
        "ix_ap_deliveries_pending",
        "ap_deliveries",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index("ix_ap_deliveries_state", "ap_deliveries", ["state"], unique=False)
    op.create_table(
        "ap_followers",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("app", sa.String(length=20), nullable=False),
        sa.Column("remote_actor_id", sa.BigInteger(), nullable=False),
        sa.Column("follow_uri", sa.String(length=2000), nullable=False),
        sa.Column("inbox", sa.String(length=2000), nullable=False),
        sa.Column("shared_inbox", sa.String(length=2000), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["remote_actor_id"],
            ["ap_remote_actors.id"],
            name=op.f("fk_ap_followers_remote_actor_id_ap_remote_actors"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ap_followers")),
        sa.UniqueConstraint(
            "app", "remote_actor_id", name=op.f("uq_ap_followers_app_remote_actor_id")
        ),
    )
    op.create_index("ix_ap_followers_app_id", "ap_followers", ["app", "id"], unique=False)
    op.create_table(
        "ap_following",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("app", sa.String(length=20), nullable=False),
        sa.Column("remote_actor_id", sa.BigInteger(), nullable=False),
        sa.Column("follow_uri", sa.String(length=2000), nullable=False),
        sa.Column("state", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["remote_actor_id"],
            ["ap_remote_actors.id"],
            name=op.f("fk_ap_following_remote_actor_id_ap_remote_actors"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ap_following")),
        sa.UniqueConstraint(
            "app", "remote_actor_id", name=op.f("uq_ap_following_app_remote_actor_id")
        ),
    )
    op.create_index("ix_ap_following_app_id", "ap_following", ["app", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ap_following_app_id", table_name="ap_following")
    op.drop_table("ap_following")
    op.drop_index("ix_ap_followers_app_id", table_name="ap_followers")
    op.drop_table("ap_followers")
    op.drop_index("ix_ap_deliveries_state", table_name="ap_deliveries")
    op.drop_index(
        "ix_ap_deliveries_pending",
        table_name="ap_deliveries",
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.drop_table("ap_deliveries")
    op.drop_index("ix_ap_remote_objects_actor_uri", table_name="ap_remote_objects")
    op.drop_table("ap_remote_objects")
    op.drop_index("ix_ap_remote_actors_key_id", table_name="ap_remote_actors")
    op.drop_index("ix_ap_remote_actors_domain", table_name="ap_remote_actors")
    op.drop_table("ap_remote_actors")
    op.drop_index("ix_ap_reactions_object_uri", table_name="ap_reactions")
    op.drop_table("ap_reactions")
    op.drop_index("ix_ap_objects_app_published", table_name="ap_objects")
    op.drop_table("ap_objects")
    op.drop_table("ap_keypairs")
    op.drop_index(
        "ix_ap_inbox_items_pending",
        table_name="ap_inbox_items",
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.drop_table("ap_inbox_items")
    op.drop_table("ap_blocks")
    op.drop_index(
        "ix_ap_activities_pending",
        table_name="ap_activities",
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.drop_index("ix_ap_activities_app_visibility_id", table_name="ap_activities")
    op.drop_table("ap_activities")
