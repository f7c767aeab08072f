"""The MTM wire format: camelCase objects inside the response envelope, times in UTC with Z."""

from datetime import UTC, datetime

from flask import Response, jsonify

from ...errors import envelope
from ...models import ApiToken, TechnicalUser
from ...services.api_tokens import token_status


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, or None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def ok(
    data, type_: str, status: int = 200, total: int | None = None, total_exact: bool | None = None
) -> Response:
    """A success envelope; `total_exact`, if given, adds `totalExact` (see GET /events)."""
    body = envelope("OK", type_, data=data, total=total)
    if total_exact is not None:
        body["totalExact"] = total_exact
    response = jsonify(body)
    response.status_code = status
    return response


def api_token(token: ApiToken, now: datetime, secret: str | None = None) -> dict:
    """An API token; `token` (the secret) only in the response that creates or replaces it."""
    data = {
        "id": token.id,
        "description": token.description,
        "expiry": iso(token.expires_at),
        "hint": token.hint,
        "status": token_status(token, now),
        "createdAt": iso(token.created_at),
        "revokedAt": iso(token.revoked_at),
        "lastUsedAt": iso(token.last_used_at),
    }
    if secret is not None:
        data["token"] = secret
    return data


def technical_user(
    user: TechnicalUser, token: ApiToken | None, now: datetime, secret: str | None = None
) -> dict:
    """A technical user with its current API token (never its secret, except once)."""
    return {
        "id": user.id,
        "userName": user.user_name,
        "description": user.description,
        "permissionRole": user.permission_role,
        "status": "ACTIVE" if user.deleted_at is None else "ARCHIVED",
        "createdBy": user.created_by,
        "createdAt": iso(user.created_at),
        "updatedAt": iso(user.updated_at),
        "apiTokenData": api_token(token, now, secret) if token is not None else None,
    }
