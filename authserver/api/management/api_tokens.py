"""Personal API tokens: the caller's own; every other admin's answer 404."""

from ...extensions import db
from ...models import User
from ...models.types import utcnow
from ...services import api_tokens as service
from . import bp, caller, caller_workspace, render
from .params import (
    FieldErrors,
    check_fields,
    json_object,
    origin,
    paging,
    parse_datetime,
    path_id,
    sort_order,
    string,
)

TYPE = "ApiToken"
READ_ONLY = frozenset({"id", "hint", "status", "createdAt", "revokedAt", "lastUsedAt"})


def _fields(body: dict, expiry_required: bool) -> service.TokenChanges:
    """{description?, expiry}, checked; every error at once."""
    errors = FieldErrors()
    check_fields(body, {"description", "expiry"}, errors, ignored=READ_ONLY)
    expiry = string(body, "expiry", "expiry", errors, expiry_required)
    description = string(body, "description", "description", errors, False)
    if expiry is not None:
        expiry = errors.check(parse_datetime, expiry, "expiry")
        if expiry is not None:
            expiry = errors.check(service.check_expiry, expiry, "expiry")
    if description is not None:
        description = errors.check(service.check_description, description)
    errors.raise_any()
    return service.TokenChanges(description=description, expires_at=expiry)


@bp.get("/apiTokens")
def list_api_tokens():
    """The caller's personal tokens (not deleted), newest first by default."""
    offset, limit = paging()
    sort = sort_order(tuple(service.PERSONAL_TOKEN_SORTS), "createdAt-DESC")
    me = caller()
    rows, total = service.list_personal_tokens(
        me.workspace_id, me.user_id, sort=sort, offset=offset, limit=limit
    )
    now = utcnow()
    return render.ok([render.api_token(row, now) for row in rows], TYPE, total=total)


@bp.post("/apiTokens")
def create_api_token():
    """A new ADMIN-level personal token for the caller; the token is in this response only."""
    fields = _fields(json_object(), expiry_required=True)
    me = caller()
    token, secret = service.create_personal_token(
        caller_workspace(),
        db.session.get(User, me.user_id),
        expires_at=fields.expires_at,
        description=fields.description or "",
        actor=me.actor,
        origin=origin(),
    )
    return render.ok(render.api_token(token, utcnow(), secret), TYPE, status=201)


@bp.get("/apiTokens/<id>")
def get_api_token(id: str):
    """One of the caller's personal tokens, never its secret."""
    me = caller()
    token = service.get_personal_token(me.workspace_id, me.user_id, path_id(id))
    return render.ok(render.api_token(token, utcnow()), TYPE)


@bp.put("/apiTokens/<id>")
def update_api_token(id: str):
    """Edit the description or expiry of one of the caller's tokens."""
    token_id = path_id(id)
    fields = _fields(json_object(), expiry_required=False)
    me = caller()
    token = service.get_personal_token(me.workspace_id, me.user_id, token_id, lock=True)
    service.update_personal_token(
        caller_workspace(), token, fields, actor=me.actor, origin=origin()
    )
    return render.ok(render.api_token(token, utcnow()), TYPE)


@bp.delete("/apiTokens/<id>")
def delete_api_token(id: str):
    """Delete one of the caller's tokens: it stops working at once."""
    me = caller()
    token = service.get_personal_token(me.workspace_id, me.user_id, path_id(id), lock=True)
    service.delete_personal_token(caller_workspace(), token, actor=me.actor, origin=origin())
    return "", 204
