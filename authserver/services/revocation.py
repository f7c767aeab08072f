"""Revocation (RFC 7009): the access-token denylist and revoking API tokens.

An access token is a signed JWT that resource APIs check offline, so it cannot
be recalled; revoking one puts its `jti` on a denylist that introspection and
the management API consult, until the token's own `exp`. After that the row
is useless and is pruned: opportunistically on every revocation, and by
`authserver tokens prune-denylist`.

An API token is revoked as if deleted: `revoked_at` becomes now.

Who may revoke what (the seed's management rules, section 2 of DESIGN): a
workspace admin may revoke any technical user's credentials in its workspace
and its own personal ones, never another admin's personal ones (to it they do
not exist); a technical user may revoke only its own.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import ApiToken, RevokedAccessToken
from .audit import EventType, Origin, Target, record_event
from .credentials import Principal

REVOKE_REASON = "revoked"


@dataclass(frozen=True)
class Owner:
    """Whom a credential (an API token or an access token) belongs to."""

    id: str
    technical_user: bool


def may_revoke(caller: Principal, owner: Owner) -> bool:
    """True if the caller may revoke a credential of its own workspace owned by `owner`."""
    if owner.id == caller.subject_id and owner.technical_user == caller.technical_user:
        return True
    # A personal token is ADMIN-level by construction (resolve_principal refuses it
    # otherwise), so a human caller is an admin: it manages technical users only.
    return not caller.technical_user and owner.technical_user


def _owner_payload(owner: Owner) -> dict:
    return {"id": owner.id, "technicalUser": owner.technical_user}


def is_access_token_revoked(jti: str) -> bool:
    """True if this access token's jti is on the denylist."""
    query = select(RevokedAccessToken.jti).where(RevokedAccessToken.jti == jti)
    return db.session.execute(query).first() is not None


def deny_access_token(jti: str, workspace_id: str, expires_at: datetime) -> bool:
    """Put a jti on the denylist until `expires_at`; False if it was already there."""
    if db.session.get(RevokedAccessToken, jti) is not None:
        return False
    try:
        # A savepoint: a concurrent revocation of the same jti must not fail the request.
        with db.session.begin_nested():
            db.session.add(
                RevokedAccessToken(jti=jti, workspace_id=workspace_id, expires_at=expires_at)
            )
    except IntegrityError:
        return False
    return True


def prune_denylist(now: datetime) -> int:
    """Delete denylist rows whose access token has expired; return how many."""
    result = db.session.execute(
        delete(RevokedAccessToken)
        .where(RevokedAccessToken.expires_at <= now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def revoke_access_token(
    *,
    jti: str,
    expires_at: datetime,
    owner: Owner,
    owner_name: str,
    client_id: str,
    caller: Principal,
    origin: Origin,
    now: datetime,
) -> bool:
    """Deny an access token of the caller's workspace until its exp; audit it. False if no-op."""
    prune_denylist(now)
    if expires_at <= now or not deny_access_token(jti, caller.workspace_id, expires_at):
        return False  # expired already, or revoked before: nothing changes
    record_event(
        EventType.ACCESS_TOKEN_REVOKE,
        workspace=caller.workspace,
        actor=caller.actor,
        target=Target(type="ACCESS_TOKEN", id=jti, name=owner_name),
        origin=origin,
        payload={
            "kind": "access_token",
            "jti": jti,
            "exp": int(expires_at.timestamp()),
            "outcome": "revoked",
            "clientId": client_id,
            "owner": _owner_payload(owner),
        },
    )
    return True


def revoke_api_token(
    token: ApiToken, *, owner_name: str | None, caller: Principal, origin: Origin, now: datetime
) -> bool:
    """Revoke an API token of the caller's workspace as if deleted; audit it. False if no-op."""
    # Lock the row first, as deletion does: this waits for the grants in flight on the
    # token (they hold KEY SHARE, see credentials.resolve_principal), which a plain
    # UPDATE would not. Then one conditional UPDATE, so two concurrent revocations
    # record one event.
    db.session.execute(select(ApiToken.id).where(ApiToken.id == token.id).with_for_update())
    result = db.session.execute(
        update(ApiToken)
        .where(
            ApiToken.id == token.id,
            ApiToken.expires_at > now,
            or_(ApiToken.revoked_at.is_(None), ApiToken.revoked_at > now),
        )
        .values(revoked_at=now, revoke_reason=REVOKE_REASON)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False  # expired or revoked already
    record_event(
        EventType.ACCESS_TOKEN_REVOKE,
        workspace=caller.workspace,
        actor=caller.actor,
        target=Target(type="API_TOKEN", id=token.id, name=owner_name),
        origin=origin,
        payload={
            "kind": "api_token",
            "tokenId": token.id,
            "hint": token.hint,
            "outcome": "revoked",
            "owner": _owner_payload(api_token_owner(token)),
        },
    )
    return True


def record_refused_revocation(
    *, kind: str, target: Target, caller: Principal, origin: Origin
) -> None:
    """Audit a revocation the caller may not make (a credential it does not manage)."""
    record_event(
        EventType.ACCESS_TOKEN_REVOKE,
        workspace=caller.workspace,
        actor=caller.actor,
        target=target,
        origin=origin,
        payload={"kind": kind, "outcome": "refused", "reason": "not_permitted"},
    )


def api_token_owner(token: ApiToken) -> Owner:
    """The technical user or the admin who owns an API token."""
    if token.technical_user_id is not None:
        return Owner(id=token.technical_user_id, technical_user=True)
    return Owner(id=token.user_id, technical_user=False)
