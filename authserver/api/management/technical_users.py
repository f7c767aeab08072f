"""Technical users: list, create, get, update, replaceToken, delete, changelog."""

from ...models.types import utcnow
from ...services import api_tokens as token_rules
from ...services import events as event_queries
from ...services import technical_users as service
from ...services.api_tokens import TokenChanges
from ...services.audit import event_to_dict
from . import bp, caller, caller_workspace, render
from .params import (
    FieldErrors,
    check_fields,
    json_object,
    origin,
    paging,
    parse_datetime,
    path_id,
    query_int,
    query_text,
    sort_order,
    string,
    sub_object,
)

TYPE = "TechnicalUser"
GRACE_PARSE_MAX = 10**9  # parsing bound only; the service applies MAX_GRACE_PERIOD
# Members of our own representation a client may send back unchanged; they are ignored.
READ_ONLY = frozenset({"id", "status", "createdBy", "createdAt", "updatedAt"})
TOKEN_READ_ONLY = frozenset({"id", "hint", "status", "createdAt", "revokedAt", "lastUsedAt"})


def _token_fields(data: dict | None, errors: FieldErrors, expiry_required: bool) -> TokenChanges:
    """apiTokenData: {expiry, description?}."""
    if data is None:
        return TokenChanges()
    check_fields(data, {"expiry", "description"}, errors, "apiTokenData.", TOKEN_READ_ONLY)
    expiry = string(data, "expiry", "apiTokenData.expiry", errors, expiry_required)
    description = string(data, "description", "apiTokenData.description", errors, False)
    if expiry is not None:
        expiry = errors.check(parse_datetime, expiry, "apiTokenData.expiry")
        if expiry is not None:
            expiry = errors.check(token_rules.check_expiry, expiry, "apiTokenData.expiry")
    if description is not None:
        description = errors.check(
            token_rules.check_description, description, "apiTokenData.description"
        )
    return TokenChanges(description=description, expires_at=expiry)


def _common_fields(body: dict, errors: FieldErrors, required: bool) -> dict:
    """description and permissionRole, checked."""
    description = string(body, "description", "description", errors, False)
    if description is not None:
        description = errors.check(token_rules.check_description, description)
    role = string(body, "permissionRole", "permissionRole", errors, required)
    if role is not None:
        role = errors.check(service.check_role, role)
    return {"description": description, "role": role}


@bp.get("/technicalusers")
def list_technical_users():
    """The workspace's live technical users, paged, searchable by userName, sorted."""
    offset, limit = paging()
    sort = sort_order(tuple(service.SORTS), "userName-ASC")
    search = query_text("queryUserName", service.USER_NAME_MAX)
    rows, total = service.list_technical_users(
        caller().workspace_id, user_name_contains=search, sort=sort, offset=offset, limit=limit
    )
    tokens = service.current_tokens([row.id for row in rows])
    now = utcnow()
    data = [render.technical_user(row, tokens.get(row.id), now) for row in rows]
    return render.ok(data, TYPE, total=total)


@bp.post("/technicalusers")
def create_technical_user():
    """Create a technical user with its API token; the token is in this response only."""
    body = json_object()
    errors = FieldErrors()
    check_fields(body, {"userName", "description", "permissionRole", "apiTokenData"}, errors)
    user_name = string(body, "userName", "userName", errors, True)
    if user_name is not None:
        user_name = errors.check(service.check_user_name, user_name)
    common = _common_fields(body, errors, required=True)
    token_data = sub_object(body, "apiTokenData", "apiTokenData", errors, True)
    token = _token_fields(token_data, errors, expiry_required=True)
    errors.raise_any()
    technical_user, api_token, secret = service.create_technical_user(
        caller_workspace(),
        user_name=user_name,
        role=common["role"],
        description=common["description"] or "",
        expires_at=token.expires_at,
        token_description=token.description or "",
        actor=caller().actor,
        origin=origin(),
    )
    data = render.technical_user(technical_user, api_token, utcnow(), secret)
    return render.ok(data, TYPE, status=201)


@bp.get("/technicalusers/<id>")
def get_technical_user(id: str):
    """One live technical user of the workspace, without its secret."""
    technical_user = service.get_technical_user(caller().workspace_id, path_id(id))
    token = service.current_token(technical_user)
    return render.ok(render.technical_user(technical_user, token, utcnow()), TYPE)


@bp.put("/technicalusers/<id>")
def update_technical_user(id: str):
    """Edit description, permissionRole, apiTokenData.expiry and apiTokenData.description."""
    technical_user_id = path_id(id)
    body = json_object()
    errors = FieldErrors()
    allowed = {"userName", "description", "permissionRole", "apiTokenData"}
    check_fields(body, allowed, errors, ignored=READ_ONLY)
    user_name = string(body, "userName", "userName", errors, False)
    common = _common_fields(body, errors, required=False)
    token_data = sub_object(body, "apiTokenData", "apiTokenData", errors, False)
    token = _token_fields(token_data, errors, expiry_required=False)
    errors.raise_any()
    technical_user = service.get_technical_user(caller().workspace_id, technical_user_id, lock=True)
    if user_name is not None and user_name.strip() != technical_user.user_name:
        errors.add("userName", "cannot be changed")
        errors.raise_any()
    changes = service.TechnicalUserChanges(
        description=common["description"], role=common["role"], token=token
    )
    service.update_technical_user(
        caller_workspace(), technical_user, changes, actor=caller().actor, origin=origin()
    )
    current = service.current_token(technical_user)
    return render.ok(render.technical_user(technical_user, current, utcnow()), TYPE)


@bp.put("/technicalusers/<id>/replaceToken")
def replace_token(id: str):
    """A new secret, shown once; the old one lives `gracePeriodSeconds` more (default 0)."""
    technical_user_id = path_id(id)
    grace = query_int("gracePeriodSeconds", 0, 0, GRACE_PARSE_MAX)
    body = json_object(required=False) or {}
    errors = FieldErrors()
    check_fields(body, {"apiTokenData"}, errors, ignored=READ_ONLY)
    token_data = sub_object(body, "apiTokenData", "apiTokenData", errors, False)
    token = _token_fields(token_data, errors, expiry_required=False)
    errors.raise_any()
    technical_user = service.get_technical_user(caller().workspace_id, technical_user_id, lock=True)
    new, secret = service.replace_token(
        caller_workspace(),
        technical_user,
        grace_seconds=grace,
        changes=token,
        actor=caller().actor,
        origin=origin(),
    )
    return render.ok(render.technical_user(technical_user, new, utcnow(), secret), TYPE)


@bp.delete("/technicalusers/<id>")
def delete_technical_user(id: str):
    """Archive the technical user; its token stops at once; its history stays."""
    technical_user = service.get_technical_user(caller().workspace_id, path_id(id), lock=True)
    service.delete_technical_user(
        caller_workspace(), technical_user, actor=caller().actor, origin=origin()
    )
    return "", 204


@bp.get("/technicalusers/<id>/changelog")
def changelog(id: str):
    """The history of a technical user (deleted ones too) and of its tokens, newest first."""
    technical_user_id = path_id(id)
    offset, limit = paging()
    _, ascending = sort_order(("createdAt",), "createdAt-DESC")
    workspace_id = caller().workspace_id
    technical_user = service.get_technical_user(workspace_id, technical_user_id, deleted=True)
    rows, total = event_queries.changelog(
        workspace_id,
        technical_user.id,
        service.token_ids(technical_user.id),
        newest_first=not ascending,
        offset=offset,
        limit=limit,
    )
    return render.ok([event_to_dict(row) for row in rows], "AuditEvent", total=total)
