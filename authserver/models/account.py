"""Accounts (the customer) and workspaces (the tenant)."""

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .enums import WorkspaceStatus, check_in
from .types import UTCDateTime, Uuid, new_id, utcnow


class Account(db.Model):
    """The customer; owns workspaces and users."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Workspace(db.Model):
    """The tenant: every credential lives in exactly one workspace."""

    __tablename__ = "workspaces"
    __table_args__ = (CheckConstraint(check_in("status", WorkspaceStatus), name="status"),)

    id: Mapped[str] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=WorkspaceStatus.ACTIVE.value)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    account: Mapped[Account] = relationship(lazy="joined")
