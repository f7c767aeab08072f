"""Technical users: creation (used by the CLI and the management API)."""

from datetime import datetime

from sqlalchemy import select

from ..errors import Conflict, ValidationError, field_error
from ..extensions import db
from ..models import ApiToken, Role, TechnicalUser, Workspace
from ..models.types import utcnow
from .api_tokens import mint_token, token_target
from .audit import Actor, EventType, Origin, Target, record_event

USER_NAME_MAX = 100


def check_role(value, field: str = "permissionRole") -> Role:
    """A permission role: ADMIN, MEMBER or VIEWER."""
    try:
        return Role(value)
    except ValueError:
        raise ValidationError(
            "Unknown permission role", [field_error(field, "must be ADMIN, MEMBER or VIEWER")]
        ) from None


def check_user_name(value, field: str = "userName") -> str:
    """A technical user's name: 1 to 100 printable characters after trimming."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("userName is required", [field_error(field, "must not be empty")])
    name = value.strip()
    if len(name) > USER_NAME_MAX:
        raise ValidationError(
            "userName is too long", [field_error(field, f"must be at most {USER_NAME_MAX} characters")]
        )
    if not name.isprintable():
        raise ValidationError("userName is invalid", [field_error(field, "must be printable")])
    return name


def technical_user_target(technical_user: TechnicalUser) -> Target:
    """A technical user as an audit target."""
    return Target(type="TECHNICAL_USER", id=technical_user.id, name=technical_user.user_name)


def live_name_taken(workspace_id: str, user_name: str) -> bool:
    """True if a live technical user of the workspace already has this name."""
    query = select(TechnicalUser.id).where(
        TechnicalUser.workspace_id == workspace_id,
        TechnicalUser.user_name == user_name,
        TechnicalUser.deleted_at.is_(None),
    )
    return db.session.execute(query).first() is not None


def create_technical_user(
    workspace: Workspace,
    *,
    user_name: str,
    role: Role,
    description: str,
    expires_at: datetime,
    token_description: str,
    actor: Actor,
    origin: Origin,
) -> tuple[TechnicalUser, ApiToken, str]:
    """Create a technical user and its API token; the secret is returned once."""
    if live_name_taken(workspace.id, user_name):
        raise Conflict(
            "A technical user with this userName exists",
            [field_error("userName", "is already taken in this workspace")],
        )
    now = utcnow()
    technical_user = TechnicalUser(
        workspace_id=workspace.id,
        user_name=user_name,
        description=description,
        permission_role=role.value,
        created_by=actor.id if actor.id != "cli" else None,
        created_at=now,
        updated_at=now,
    )
    db.session.add(technical_user)
    db.session.flush()
    token, secret = mint_token(
        workspace,
        expires_at=expires_at,
        description=token_description,
        creator_id=actor.id if actor.id != "cli" else None,
        technical_user_id=technical_user.id,
    )
    record_event(
        EventType.TECHNICAL_USER_CREATE,
        workspace=(workspace.id, workspace.name),
        actor=actor,
        target=technical_user_target(technical_user),
        origin=origin,
        payload={
            "userName": user_name,
            "description": description,
            "permissionRole": role.value,
            "apiToken": {"id": token.id, "expiry": expires_at.isoformat(), "hint": token.hint},
        },
    )
    record_event(
        EventType.APITOKEN_CREATE,
        workspace=(workspace.id, workspace.name),
        actor=actor,
        target=token_target(token, user_name),
        origin=origin,
        payload={"owner": {"id": technical_user.id, "technicalUser": True}, "hint": token.hint},
    )
    return technical_user, token, secret
