"""Every model, imported here so metadata and Alembic see them all."""

from .account import Account, Workspace
from .api_token import ApiToken
from .audit import AuditCheckpoint, AuditEvent
from .enums import Role, Status, WorkspaceStatus
from .revocation import RevokedAccessToken
from .technical_user import TechnicalUser
from .user import Permission, User

__all__ = [
    "Account",
    "ApiToken",
    "AuditCheckpoint",
    "AuditEvent",
    "Permission",
    "RevokedAccessToken",
    "Role",
    "Status",
    "TechnicalUser",
    "User",
    "Workspace",
    "WorkspaceStatus",
]
