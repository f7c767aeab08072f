"""Technical users: create, list, read, edit, replace the token, delete (archive).

Used by the CLI and the management API. Every function here adds and flushes;
the request wrapper commits. Rows are locked (SELECT ... FOR UPDATE, a no-op on
SQLite, whose writers are serialised anyway) before a change, so concurrent
edits, replacements and deletions of one technical user queue up. Replacing
and deleting also lock the API token rows they cut off, which waits for the
grants in flight on them (see `credentials.resolve_principal`).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict, NotFound, ValidationError, field_error
from ..extensions import db
from ..models import ApiToken, Role, TechnicalUser, Workspace
from ..models.types import utcnow
from .api_tokens import (
    NEWEST_FIRST,
    REASON_DELETED,
    REASON_REPLACED,
    TokenChanges,
    apply_token_changes,
    cut_off,
    mint_token,
    token_snapshot,
    token_target,
)
from .audit import Actor, EventType, Origin, Target, record_event

USER_NAME_MAX = 100
SORTS = {
    "userName": TechnicalUser.user_name,
    "createdAt": TechnicalUser.created_at,
    "updatedAt": TechnicalUser.updated_at,
    "permissionRole": TechnicalUser.permission_role,
}


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
            "userName is too long",
            [field_error(field, f"must be at most {USER_NAME_MAX} characters")],
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


def _name_taken() -> Conflict:
    return Conflict(
        "A technical user with this userName exists",
        [field_error("userName", "is already taken in this workspace")],
    )


def _workspace_ref(workspace: Workspace) -> tuple[str, str]:
    return (workspace.id, workspace.name)


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
        raise _name_taken()
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
    try:
        db.session.flush()
    except IntegrityError:
        # A concurrent create of the same name committed between the check and the
        # insert (PostgreSQL); the partial unique index caught it. The handler rolls back.
        raise _name_taken() from None
    token, secret = mint_token(
        workspace,
        expires_at=expires_at,
        description=token_description,
        creator_id=actor.id if actor.id != "cli" else None,
        technical_user_id=technical_user.id,
    )
    record_event(
        EventType.TECHNICAL_USER_CREATE,
        workspace=_workspace_ref(workspace),
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
        workspace=_workspace_ref(workspace),
        actor=actor,
        target=token_target(token, user_name),
        origin=origin,
        payload={"owner": {"id": technical_user.id, "technicalUser": True}, "hint": token.hint},
    )
    return technical_user, token, secret


# --- reading ---------------------------------------------------------------------------


def get_technical_user(
    workspace_id: str, technical_user_id: str, *, lock: bool = False, deleted: bool = False
) -> TechnicalUser:
    """A technical user of the workspace (live only unless `deleted`), or NotFound."""
    query = select(TechnicalUser).where(
        TechnicalUser.workspace_id == workspace_id, TechnicalUser.id == technical_user_id
    )
    if not deleted:
        query = query.where(TechnicalUser.deleted_at.is_(None))
    if lock:
        # Re-read after the lock is granted, so we act on what the previous holder committed.
        query = query.with_for_update().execution_options(populate_existing=True)
    technical_user = db.session.execute(query).scalar()
    if technical_user is None:
        raise NotFound("No such technical user", [field_error("id", "not found")])
    return technical_user


def escape_like(text: str) -> str:
    """Escape LIKE wildcards so user input matches literally (escape character \\)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_technical_users(
    workspace_id: str,
    *,
    user_name_contains: str | None,
    sort: tuple[str, bool],
    offset: int,
    limit: int,
) -> tuple[list[TechnicalUser], int]:
    """One page of the workspace's live technical users and the total count."""
    query = select(TechnicalUser).where(
        TechnicalUser.workspace_id == workspace_id, TechnicalUser.deleted_at.is_(None)
    )
    if user_name_contains:
        pattern = "%" + escape_like(user_name_contains.lower()) + "%"
        query = query.where(func.lower(TechnicalUser.user_name).like(pattern, escape="\\"))
    total = db.session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    column = SORTS[sort[0]]
    if column is TechnicalUser.user_name:
        column = func.lower(TechnicalUser.user_name)
    key = (
        (column.asc(), TechnicalUser.id.asc())
        if sort[1]
        else (column.desc(), TechnicalUser.id.desc())
    )
    rows = db.session.execute(query.order_by(*key).offset(offset).limit(limit)).scalars()
    return list(rows), total


def current_tokens(technical_user_ids: list[str]) -> dict[str, ApiToken]:
    """Each technical user's current API token: the newest one it was given."""
    if not technical_user_ids:
        return {}
    query = (
        select(ApiToken)
        .where(ApiToken.technical_user_id.in_(technical_user_ids))
        .order_by(*NEWEST_FIRST)
    )
    current: dict[str, ApiToken] = {}
    for token in db.session.execute(query).scalars():
        current.setdefault(token.technical_user_id, token)
    return current


def current_token(technical_user: TechnicalUser) -> ApiToken:
    """The technical user's current API token (every technical user has one from creation)."""
    return current_tokens([technical_user.id])[technical_user.id]


def token_ids(technical_user_id: str) -> list[str]:
    """The ids of every API token the technical user ever had."""
    query = select(ApiToken.id).where(ApiToken.technical_user_id == technical_user_id)
    return list(db.session.execute(query).scalars())


# --- changing --------------------------------------------------------------------------


@dataclass(frozen=True)
class TechnicalUserChanges:
    """The fields of an edit; None means "leave as it is"."""

    description: str | None = None
    role: Role | None = None
    token: TokenChanges = TokenChanges()


def _snapshot(technical_user: TechnicalUser, token: ApiToken) -> dict:
    return {
        "userName": technical_user.user_name,
        "description": technical_user.description,
        "permissionRole": technical_user.permission_role,
        "apiTokenData": token_snapshot(token),
    }


def update_technical_user(
    workspace: Workspace,
    technical_user: TechnicalUser,
    changes: TechnicalUserChanges,
    *,
    actor: Actor,
    origin: Origin,
) -> bool:
    """Edit description, role and the current token's expiry/description; audited before/after.

    One TECHNICAL_USER_UPDATE event covers the token's fields too. A new role
    applies to access tokens issued from now on. Nothing changed, nothing recorded.
    """
    now = utcnow()
    token = current_token(technical_user)
    before = _snapshot(technical_user, token)
    changed = apply_token_changes(token, changes.token, "apiTokenData.expiry", now)
    if changes.description is not None and changes.description != technical_user.description:
        technical_user.description = changes.description
        changed = True
    if changes.role is not None and changes.role.value != technical_user.permission_role:
        technical_user.permission_role = changes.role.value
        changed = True
    if not changed:
        return False
    technical_user.updated_at = now
    db.session.flush()
    record_event(
        EventType.TECHNICAL_USER_UPDATE,
        workspace=_workspace_ref(workspace),
        actor=actor,
        target=technical_user_target(technical_user),
        origin=origin,
        payload={"before": before, "after": _snapshot(technical_user, token)},
    )
    return True


def check_grace_period(seconds: int, field: str = "gracePeriodSeconds") -> int:
    """0 up to MAX_GRACE_PERIOD seconds."""
    limit = current_app.config["MAX_GRACE_PERIOD"]
    if seconds < 0 or seconds > limit:
        raise ValidationError(
            "gracePeriodSeconds is out of range",
            [field_error(field, f"must be between 0 and {limit}")],
        )
    return seconds


def _lock_live_tokens(technical_user: TechnicalUser, now: datetime) -> list[ApiToken]:
    """The technical user's tokens that still work (or will, in a grace period), locked.

    FOR UPDATE waits for every grant holding one of them (KEY SHARE), so those
    grants commit before this change does and later ones see its result.
    """
    live = (
        select(ApiToken)
        .where(
            ApiToken.technical_user_id == technical_user.id,
            (ApiToken.revoked_at.is_(None)) | (ApiToken.revoked_at > now),
        )
        .order_by(ApiToken.id)  # one lock order for every writer
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return list(db.session.execute(live).scalars())


def replace_token(
    workspace: Workspace,
    technical_user: TechnicalUser,
    *,
    grace_seconds: int,
    changes: TokenChanges,
    actor: Actor,
    origin: Origin,
) -> tuple[ApiToken, str]:
    """Give the (locked) technical user a new secret; every older token stops after the grace.

    The new token keeps the old one's expiry and description unless `changes`
    gives new ones. If the old token has expired, a new expiry is required.
    """
    check_grace_period(grace_seconds)
    live = _lock_live_tokens(technical_user, utcnow())
    now = utcnow()  # after the wait for grants in flight
    old = current_token(technical_user)
    expires_at = changes.expires_at or old.expires_at
    if expires_at <= now:
        raise ValidationError(
            "The current API token has expired; give the new one an expiry",
            [field_error("apiTokenData.expiry", "is required: the current token has expired")],
        )
    description = old.description if changes.description is None else changes.description
    cut_at = now + timedelta(seconds=grace_seconds)
    for token in live:
        cut_off(token, cut_at, REASON_REPLACED)
    new, secret = mint_token(
        workspace,
        expires_at=expires_at,
        description=description,
        creator_id=actor.id,
        technical_user_id=technical_user.id,
    )
    technical_user.updated_at = now
    db.session.flush()
    record_event(
        EventType.APITOKEN_REPLACE,
        workspace=_workspace_ref(workspace),
        actor=actor,
        target=token_target(new, technical_user.user_name),
        origin=origin,
        payload={
            "technicalUser": {"id": technical_user.id, "userName": technical_user.user_name},
            "replaced": {"id": old.id, "hint": old.hint, "revokedAt": old.revoked_at.isoformat()},
            "gracePeriodSeconds": grace_seconds,
            "hint": new.hint,
            "expiry": expires_at.isoformat(),
        },
    )
    return new, secret


def delete_technical_user(
    workspace: Workspace, technical_user: TechnicalUser, *, actor: Actor, origin: Origin
) -> None:
    """Archive the (locked) technical user; every token it has stops at once; history stays."""
    live = _lock_live_tokens(technical_user, utcnow())
    now = utcnow()  # after the wait for grants in flight: they were issued before this moment
    technical_user.deleted_at = now
    technical_user.updated_at = now
    cut = [token for token in live if cut_off(token, now, REASON_DELETED)]
    db.session.flush()
    record_event(
        EventType.TECHNICAL_USER_DELETE,
        workspace=_workspace_ref(workspace),
        actor=actor,
        target=technical_user_target(technical_user),
        origin=origin,
        payload={"userName": technical_user.user_name, "revokedTokens": [t.id for t in cut]},
    )
    for token in cut:
        record_event(
            EventType.APITOKEN_DELETE,
            workspace=_workspace_ref(workspace),
            actor=actor,
            target=token_target(token, technical_user.user_name),
            origin=origin,
            payload={
                "technicalUser": {"id": technical_user.id, "userName": technical_user.user_name},
                "hint": token.hint,
                "revokedAt": now.isoformat(),
            },
        )
