"""The audit trail (SPEC §10): append-only entries, hash-chained per organization once sealed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Base
from app.models.base import UTCDateTime

GENESIS_HASH = "0" * 64  # the chain of every organization's audit log starts here


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("org_id", "seq"),
        # Every list query is "this org, newest first", optionally narrowed by one filter.
        Index("ix_audit_events_org_time", "org_id", "created_at", "id"),
        Index("ix_audit_events_org_action_time", "org_id", "action", "created_at", "id"),
        Index("ix_audit_events_org_actor_time", "org_id", "actor_id", "created_at", "id"),
        Index("ix_audit_events_org_result_time", "org_id", "result", "created_at", "id"),
        # The sealer's work list: entries not yet chained.
        Index("ix_audit_events_unsealed", "org_id", sqlite_where=text("seq IS NULL"),
              postgresql_where=text("seq IS NULL")),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    seq: Mapped[int | None] = mapped_column(BigInteger, default=None)  # set when sealed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_type: Mapped[str] = mapped_column(String(20))
    actor_id: Mapped[str | None] = mapped_column(String(64))
    actor_name: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str | None] = mapped_column(String(128))
    ip_address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    result: Mapped[str] = mapped_column(String(10))
    prev_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    hash: Mapped[str | None] = mapped_column(String(64), default=None)


class AuditChainHead(Base):
    """The newest sealed link of an organization's chain; its row lock serializes sealers."""

    __tablename__ = "audit_chain_heads"

    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))
