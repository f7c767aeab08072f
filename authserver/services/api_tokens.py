"""API tokens: minting, expiry rules, and personal tokens of workspace admins."""

from datetime import datetime, timedelta

from flask import current_app

from .. import tokens
from ..errors import ValidationError, field_error
from ..extensions import db
from ..models import ApiToken, User, Workspace
from ..models.types import utcnow
from .audit import Actor, EventType, Origin, Target, record_event

DESCRIPTION_MAX = 500


def check_expiry(expiry: datetime | None, field: str, now: datetime | None = None) -> datetime:
    """Expiry is required, in the future, and at most MAX_TOKEN_LIFETIME from now."""
    now = now or utcnow()
    if expiry is None:
        raise ValidationError("Expiry is required", [field_error(field, "is required")])
    if expiry.tzinfo is None:
        raise ValidationError(
            "Expiry needs a time zone", [field_error(field, "must be ISO 8601 with a time zone")]
        )
    if expiry <= now:
        raise ValidationError("Expiry is in the past", [field_error(field, "must be in the future")])
    limit = current_app.config["MAX_TOKEN_LIFETIME"]
    if expiry > now + timedelta(seconds=limit):
        raise ValidationError(
            "Expiry is too far away",
            [field_error(field, f"must be at most {limit // 86400} days from now")],
        )
    return expiry


def mint_token(
    workspace: Workspace,
    *,
    expires_at: datetime,
    description: str,
    creator_id: str | None,
    technical_user_id: str | None = None,
    user_id: str | None = None,
) -> tuple[ApiToken, str]:
    """Add a new API token row; return it with its secret, which is shown once and never stored."""
    new = tokens.generate(current_app.config["TOKEN_PREFIX"])
    token = ApiToken(
        workspace_id=workspace.id,
        technical_user_id=technical_user_id,
        user_id=user_id,
        description=description,
        secret_sha256=new.sha256,
        hint=new.hint,
        expires_at=expires_at,
        creator_id=creator_id,
    )
    db.session.add(token)
    db.session.flush()
    return token, new.secret


def token_target(token: ApiToken, name: str | None) -> Target:
    """An API token as an audit target."""
    return Target(type="API_TOKEN", id=token.id, name=name)


def create_personal_token(
    workspace: Workspace,
    owner: User,
    *,
    expires_at: datetime,
    description: str,
    actor: Actor,
    origin: Origin,
) -> tuple[ApiToken, str]:
    """Issue an ADMIN-level personal API token to `owner` (who must be an admin: caller checks)."""
    token, secret = mint_token(
        workspace,
        expires_at=expires_at,
        description=description,
        creator_id=owner.id,
        user_id=owner.id,
    )
    record_event(
        EventType.APITOKEN_CREATE,
        workspace=(workspace.id, workspace.name),
        actor=actor,
        target=token_target(token, owner.user_name),
        origin=origin,
        payload={
            "owner": {"id": owner.id, "userName": owner.user_name, "technicalUser": False},
            "description": description,
            "expiry": expires_at.isoformat(),
            "hint": token.hint,
        },
    )
    return token, secret
