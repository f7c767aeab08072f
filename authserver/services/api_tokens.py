"""API tokens: minting, expiry rules, and personal tokens of workspace admins.

A token stops working at `revoked_at`. Deleting sets it to now with reason
"deleted" (a deleted token is gone: 404 from then on); replacing sets it to now
or now + grace with reason "replaced". A grace period never lengthens a cut
already scheduled: a token's `revoked_at` only ever moves earlier.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import func, or_, select

from .. import tokens
from ..errors import Conflict, NotFound, ValidationError, field_error
from ..extensions import db
from ..models import ApiToken, TechnicalUser, User, Workspace
from ..models.types import utcnow
from .audit import Actor, EventType, Origin, Target, record_event

DESCRIPTION_MAX = 500
REASON_DELETED = "deleted"
REASON_REPLACED = "replaced"
# The newest token first; the id breaks ties between tokens made in the same microsecond.
NEWEST_FIRST = (ApiToken.created_at.desc(), ApiToken.id.desc())
PERSONAL_TOKEN_SORTS = {"createdAt": ApiToken.created_at, "expiry": ApiToken.expires_at}


def check_description(value, field: str = "description") -> str:
    """Free text up to DESCRIPTION_MAX characters; no control characters but tab and newline."""
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string", [field_error(field, "must be a string")])
    if len(value) > DESCRIPTION_MAX:
        raise ValidationError(
            f"{field} is too long",
            [field_error(field, f"must be at most {DESCRIPTION_MAX} characters")],
        )
    if any(not ch.isprintable() and ch not in "\t\n\r" for ch in value):
        raise ValidationError(
            f"{field} is invalid", [field_error(field, "must not contain control characters")]
        )
    return value


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
        raise ValidationError(
            "Expiry is in the past", [field_error(field, "must be in the future")]
        )
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


def token_status(token: ApiToken, now: datetime) -> str:
    """ACTIVE, EXPIRED or REVOKED, as the exchange would judge the token right now."""
    if token.revoked_at is not None and token.revoked_at <= now:
        return "REVOKED"
    if token.expires_at <= now:
        return "EXPIRED"
    return "ACTIVE"


def cut_off(token: ApiToken, at: datetime, reason: str) -> bool:
    """Make the token stop working at `at` (never later than already set); True if it changed."""
    if token.revoked_at is not None and token.revoked_at <= at:
        return False
    token.revoked_at = at
    token.revoke_reason = reason
    return True


def token_snapshot(token: ApiToken) -> dict:
    """The audit view of a token's editable state (never its secret)."""
    return {
        "id": token.id,
        "description": token.description,
        "expiry": token.expires_at.isoformat(),
        "hint": token.hint,
    }


def check_still_live(token: ApiToken, field: str, now: datetime) -> None:
    """A dead token is not revived by a new expiry: its secret may be out of anyone's control."""
    if not token.is_live(now):
        raise Conflict(
            "The API token has expired or was revoked; issue a new one instead",
            [field_error(field, "cannot be changed on an expired or revoked token")],
        )


@dataclass(frozen=True)
class TokenChanges:
    """The fields of an edit; None means "leave as it is"."""

    description: str | None = None
    expires_at: datetime | None = None


def apply_token_changes(token: ApiToken, changes: TokenChanges, field: str, now: datetime) -> bool:
    """Apply an edit to a token row; True if anything changed. Expiry was checked by the caller."""
    changed = False
    if changes.description is not None and changes.description != token.description:
        token.description = changes.description
        changed = True
    if changes.expires_at is not None and changes.expires_at != token.expires_at:
        check_still_live(token, field, now)
        token.expires_at = changes.expires_at
        changed = True
    return changed


def _personal_tokens(workspace_id: str, owner_id: str):
    """The owner's personal tokens in the workspace that were not deleted."""
    return select(ApiToken).where(
        ApiToken.workspace_id == workspace_id,
        ApiToken.user_id == owner_id,
        or_(ApiToken.revoke_reason.is_(None), ApiToken.revoke_reason != REASON_DELETED),
    )


def list_personal_tokens(
    workspace_id: str, owner_id: str, *, sort: tuple[str, bool], offset: int, limit: int
) -> tuple[list[ApiToken], int]:
    """One page of the owner's personal tokens and the total count."""
    query = _personal_tokens(workspace_id, owner_id)
    total = db.session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    column = PERSONAL_TOKEN_SORTS[sort[0]]
    order = (column.asc(), ApiToken.id.asc()) if sort[1] else (column.desc(), ApiToken.id.desc())
    rows = db.session.execute(query.order_by(*order).offset(offset).limit(limit)).scalars()
    return list(rows), total


def get_personal_token(
    workspace_id: str, owner_id: str, token_id: str, *, lock: bool = False
) -> ApiToken:
    """The owner's token; another admin's, another workspace's or a deleted one is NotFound."""
    query = _personal_tokens(workspace_id, owner_id).where(ApiToken.id == token_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    token = db.session.execute(query).scalar()
    if token is None:
        raise NotFound("No such API token", [field_error("id", "not found")])
    return token


def update_personal_token(
    workspace: Workspace,
    token: ApiToken,
    changes: TokenChanges,
    *,
    actor: Actor,
    origin: Origin,
) -> bool:
    """Edit description and expiry of a personal token; audited with before and after."""
    before = token_snapshot(token)
    if not apply_token_changes(token, changes, "expiry", utcnow()):
        return False
    db.session.flush()
    record_event(
        EventType.APITOKEN_UPDATE,
        workspace=(workspace.id, workspace.name),
        actor=actor,
        target=token_target(token, actor.user_name),
        origin=origin,
        payload={"before": before, "after": token_snapshot(token)},
    )
    return True


def delete_personal_token(
    workspace: Workspace, token: ApiToken, *, actor: Actor, origin: Origin
) -> None:
    """Delete a personal token: it stops working at once and is gone from the API."""
    now = utcnow()
    cut_off(token, now, REASON_DELETED)
    token.revoke_reason = REASON_DELETED  # even if it was already revoked, it is now deleted
    db.session.flush()
    record_event(
        EventType.APITOKEN_DELETE,
        workspace=(workspace.id, workspace.name),
        actor=actor,
        target=token_target(token, actor.user_name),
        origin=origin,
        payload={"hint": token.hint, "revokedAt": token.revoked_at.isoformat()},
    )


@dataclass(frozen=True)
class ExpiringToken:
    """A live API token that expires soon, with whom it belongs to (never its secret)."""

    id: str
    hint: str
    expires_at: datetime
    workspace_name: str
    owner: str
    technical_user: bool


def expiring_tokens(
    now: datetime, within: timedelta, workspace_id: str | None = None
) -> list[ExpiringToken]:
    """Live API tokens (of live owners) that expire within `within` of `now`, soonest first."""
    query = (
        select(
            ApiToken.id,
            ApiToken.hint,
            ApiToken.expires_at,
            Workspace.name,
            TechnicalUser.user_name,
            User.user_name,
        )
        .join(Workspace, Workspace.id == ApiToken.workspace_id)
        .outerjoin(TechnicalUser, TechnicalUser.id == ApiToken.technical_user_id)
        .outerjoin(User, User.id == ApiToken.user_id)
        .where(
            ApiToken.expires_at > now,
            ApiToken.expires_at <= now + within,
            or_(ApiToken.revoked_at.is_(None), ApiToken.revoked_at > now),
            or_(ApiToken.technical_user_id.is_(None), TechnicalUser.deleted_at.is_(None)),
        )
        .order_by(ApiToken.expires_at, ApiToken.id)
    )
    if workspace_id is not None:
        query = query.where(ApiToken.workspace_id == workspace_id)
    return [
        ExpiringToken(
            id=row[0],
            hint=row[1],
            expires_at=row[2],
            workspace_name=row[3],
            owner=row[4] or row[5],
            technical_user=row[4] is not None,
        )
        for row in db.session.execute(query)
    ]
