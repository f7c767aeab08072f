"""API tokens: the long-lived secrets, stored only as SHA-256."""

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime, Uuid, new_id, utcnow


class ApiToken(db.Model):
    """A long-lived API token owned by a technical user XOR a human admin.

    `revoked_at` is the moment the token stops working. Deleting sets it to now;
    replacing with a grace period sets it to now + grace, so the old secret
    keeps working until then.
    """

    __tablename__ = "api_tokens"
    __table_args__ = (
        # The ownership rule lives in the schema: exactly one owner.
        CheckConstraint(
            "(technical_user_id IS NULL) <> (user_id IS NULL)", name="exactly_one_owner"
        ),
    )

    id: Mapped[str] = mapped_column(Uuid, primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), index=True)
    technical_user_id: Mapped[str | None] = mapped_column(
        ForeignKey("technical_users.id"), index=True
    )
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), index=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(8))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    creator_id: Mapped[str | None] = mapped_column(Uuid)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoke_reason: Mapped[str | None] = mapped_column(String(32))
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_ip: Mapped[str | None] = mapped_column(String(45))

    def is_live(self, now: datetime) -> bool:
        """True if the token is neither expired nor past its revocation time."""
        if self.expires_at <= now:
            return False
        return self.revoked_at is None or self.revoked_at > now
