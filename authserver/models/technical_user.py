"""Technical users: a workspace's service accounts."""

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .enums import Role, check_in
from .types import UTCDateTime, Uuid, new_id, utcnow

LIVE = text("deleted_at IS NULL")


class TechnicalUser(db.Model):
    """A service account with a permission role; deleting archives it."""

    __tablename__ = "technical_users"
    __table_args__ = (
        CheckConstraint(check_in("permission_role", Role), name="permission_role"),
        # userName is unique only among live technical users, so a deleted name can return.
        Index(
            "uq_technical_users_live_user_name",
            "workspace_id",
            "user_name",
            unique=True,
            sqlite_where=LIVE,
            postgresql_where=LIVE,
        ),
        Index("ix_technical_users_workspace_id", "workspace_id"),
    )

    id: Mapped[str] = mapped_column(Uuid, primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"))
    user_name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(500), default="")
    permission_role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def is_live(self) -> bool:
        """False once the technical user is deleted."""
        return self.deleted_at is None
