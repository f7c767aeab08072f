"""Human users and their per-workspace permissions."""

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .enums import Role, Status, check_in
from .types import UTCDateTime, Uuid, new_id, utcnow


class User(db.Model):
    """A human, identified by email."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(check_in("status", Status), name="status"),)

    id: Mapped[str] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_name: Mapped[str] = mapped_column(String(254), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), default=Status.ACTIVE.value)
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Permission(db.Model):
    """A user's role in one workspace."""

    __tablename__ = "permissions"
    __table_args__ = (
        UniqueConstraint("user_id", "workspace_id", name="uq_permissions_user_workspace"),
        CheckConstraint(check_in("role", Role), name="role"),
        CheckConstraint(check_in("status", Status), name="status"),
    )

    id: Mapped[str] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=Status.ACTIVE.value)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(lazy="joined")

    @property
    def is_active_admin(self) -> bool:
        """True if this permission makes its user an ACTIVE ADMIN of the workspace."""
        return (
            self.role == Role.ADMIN
            and self.status == Status.ACTIVE
            and self.user.status == Status.ACTIVE
        )
