"""Audit events: immutable, hash-chained per workspace after commit."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import BigIntId, UTCDateTime, Uuid, utcnow

UNSEALED = text("chain_hash IS NULL")
HASHED = text("chain_hash IS NOT NULL")  # the complement of UNSEALED
SEALED = text("chain_seq IS NOT NULL")


def _log_index(name: str, *filtered: str) -> Index:
    """An index of the workspace's log by `filtered`, in listing order, of sealed events."""
    columns = ("workspace_id", *filtered, "created_at", "id")
    return Index(name, *columns, sqlite_where=HASHED, postgresql_where=HASHED)


class AuditEvent(db.Model):
    """One immutable record of a grant, denial, change or revocation.

    Events are inserted with `chain_hash` and `chain_seq` NULL, so writers never
    wait on one another; a sealing step later chains them per workspace and
    gives each its position in the chain (see `authserver.audit_chain`).
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        # The workspace's log, filtered by nothing, type, actor or target (each with or
        # without a time range), in the order it is listed: (created_at, id). Sealed
        # events only: the INSERT every grant makes maintains none of these four, the
        # sealer adds its batch to them. Unsealed events (the last few seconds) are
        # found through ix_audit_events_unsealed (see `services.events`).
        _log_index("ix_audit_events_sealed_workspace_created_at"),
        _log_index("ix_audit_events_sealed_workspace_type", "type"),
        _log_index("ix_audit_events_sealed_workspace_actor", "actor_id"),
        _log_index("ix_audit_events_sealed_workspace_target", "target_id"),
        # Sealed events only: the hot-path INSERT (chain_seq NULL) maintains no entry here.
        Index(
            "uq_audit_events_workspace_chain_seq",
            "workspace_id",
            "chain_seq",
            unique=True,
            sqlite_where=SEALED,
            postgresql_where=SEALED,
        ),
        Index(
            "ix_audit_events_unsealed",
            "id",
            sqlite_where=UNSEALED,
            postgresql_where=UNSEALED,
        ),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    workspace_id: Mapped[str | None] = mapped_column(Uuid)
    workspace_name: Mapped[str | None] = mapped_column(String(64))
    actor_id: Mapped[str | None] = mapped_column(String(64))
    actor_user_name: Mapped[str | None] = mapped_column(String(254))
    actor_technical: Mapped[bool | None] = mapped_column(Boolean)
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    target_name: Mapped[str | None] = mapped_column(String(254))
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    chain_hash: Mapped[str | None] = mapped_column(String(64))
    chain_seq: Mapped[int | None] = mapped_column(BigInteger)


class AuditCheckpoint(db.Model):
    """Where a workspace's chain stands: the last sealed event and its hash.

    `chain_key` is the workspace id, or "-" for events that belong to no
    workspace (denials for unknown tokens). `last_seq` is the position of the
    last sealed event. After a prune, `pruned_through_id`, `pruned_through_seq`
    and the hash kept at that point let verification resume from there.
    """

    __tablename__ = "audit_checkpoints"

    chain_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_event_id: Mapped[int] = mapped_column(BigIntId, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    pruned_through_id: Mapped[int] = mapped_column(BigIntId, default=0)
    pruned_hash: Mapped[str | None] = mapped_column(String(64))
    pruned_through_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
