"""The OpenAPI 3.1 document of the management API and of the token endpoint.

Built from plain dicts so it reads next to the views; a test checks that every
route of the management blueprint is described here and that the document is
valid OpenAPI 3.1.
"""

from ..models import Role
from ..services.api_tokens import DESCRIPTION_MAX, PERSONAL_TOKEN_SORTS
from ..services.audit import EventType
from ..services.events import EXACT_TOTAL_LIMIT
from ..services.technical_users import SORTS as TECHNICAL_USER_SORTS
from ..services.technical_users import USER_NAME_MAX
from .management.params import DEFAULT_SIZE, MAX_PAGE, MAX_SIZE

BASE = "/services/mtm/v1"
JSON = "application/json"
ROLES = [role.value for role in Role]
TIMESTAMP = {"type": "string", "format": "date-time", "examples": ["2027-01-31T00:00:00Z"]}
NULLABLE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}
UUID = {"type": "string", "format": "uuid"}


def ref(name: str, kind: str = "schemas") -> dict:
    """A $ref to a component."""
    return {"$ref": f"#/components/{kind}/{name}"}


def _sorts(fields) -> list[str]:
    return [f"{field}-{direction}" for field in fields for direction in ("ASC", "DESC")]


def _envelope(data: dict, description: str) -> dict:
    """A success response whose `data` has the given schema."""
    schema = {"allOf": [ref("Envelope"), {"properties": {"data": data}}]}
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*codes: int) -> dict:
    names = {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        409: "Conflict",
        413: "PayloadTooLarge",
        415: "UnsupportedMediaType",
    }
    return {str(code): ref(names[code], "responses") for code in (401, 403, *codes)}


def _json_body(schema: str, required: bool = True) -> dict:
    return {"required": required, "content": {JSON: {"schema": ref(schema)}}}


def _query(name: str, schema: dict, description: str) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _paging() -> list[dict]:
    return [ref("page", "parameters"), ref("size", "parameters")]


def _sort(fields, default: str) -> dict:
    schema = {"type": "string", "enum": _sorts(fields), "default": default}
    return _query("sort", schema, "`<field>-ASC` or `<field>-DESC`")


def _operation(operation_id: str, summary: str, responses: dict, **extra) -> dict:
    return {"operationId": operation_id, "summary": summary, "responses": responses, **extra}


def _technical_user_paths() -> dict:
    one = _envelope(ref("TechnicalUser"), "The technical user")
    many = _envelope({"type": "array", "items": ref("TechnicalUser")}, "One page")
    events = _envelope({"type": "array", "items": ref("AuditEvent")}, "One page, sorted by `sort`")
    with_secret = _envelope(ref("TechnicalUserWithToken"), "The token is in this response only")
    id_param = [ref("id", "parameters")]
    grace = _query(
        "gracePeriodSeconds",
        {"type": "integer", "minimum": 0, "default": 0},
        "Seconds the old token keeps working (capped by MAX_GRACE_PERIOD)",
    )
    search = _query(
        "queryUserName",
        {"type": "string", "maxLength": USER_NAME_MAX},
        "Case-insensitive substring of userName",
    )
    return {
        f"{BASE}/technicalusers": {
            "get": _operation(
                "listTechnicalUsers",
                "List the workspace's technical users",
                {"200": many, **_errors(400)},
                parameters=[*_paging(), search, _sort(TECHNICAL_USER_SORTS, "userName-ASC")],
            ),
            "post": _operation(
                "createTechnicalUser",
                "Create a technical user and its API token",
                {"201": with_secret, **_errors(400, 409, 413, 415)},
                requestBody=_json_body("TechnicalUserCreate"),
            ),
        },
        f"{BASE}/technicalusers/{{id}}": {
            "parameters": id_param,
            "get": _operation(
                "getTechnicalUser", "Get a technical user", {"200": one, **_errors(400, 404)}
            ),
            "put": _operation(
                "updateTechnicalUser",
                "Edit description, permissionRole and the token's expiry or description",
                {"200": one, **_errors(400, 404, 409, 413, 415)},
                requestBody=_json_body("TechnicalUserUpdate"),
            ),
            "delete": _operation(
                "deleteTechnicalUser",
                "Delete (archive) a technical user; its token stops at once",
                {"204": {"description": "Deleted"}, **_errors(400, 404)},
            ),
        },
        f"{BASE}/technicalusers/{{id}}/replaceToken": {
            "parameters": id_param,
            "put": _operation(
                "replaceTechnicalUserToken",
                "Give the technical user a new API token",
                {"200": with_secret, **_errors(400, 404, 413, 415)},
                parameters=[grace],
                requestBody=_json_body("ReplaceToken", required=False),
            ),
        },
        f"{BASE}/technicalusers/{{id}}/changelog": {
            "parameters": id_param,
            "get": _operation(
                "getTechnicalUserChangelog",
                "The history of a technical user and its tokens (also once deleted)",
                {"200": events, **_errors(400, 404)},
                parameters=[*_paging(), _sort(("createdAt",), "createdAt-DESC")],
                description=(
                    "By `createdAt` in the direction of `sort`, events with the same "
                    "`createdAt` by id in the same direction. `total` is exact."
                ),
            ),
        },
    }


def _api_token_paths() -> dict:
    one = _envelope(ref("ApiToken"), "The API token")
    many = _envelope({"type": "array", "items": ref("ApiToken")}, "One page")
    with_secret = _envelope(ref("ApiTokenWithSecret"), "The token is in this response only")
    return {
        f"{BASE}/apiTokens": {
            "get": _operation(
                "listApiTokens",
                "List the caller's own personal API tokens",
                {"200": many, **_errors(400)},
                parameters=[*_paging(), _sort(PERSONAL_TOKEN_SORTS, "createdAt-DESC")],
            ),
            "post": _operation(
                "createApiToken",
                "Create a personal API token (ADMIN level) for the caller",
                {"201": with_secret, **_errors(400, 413, 415)},
                requestBody=_json_body("ApiTokenCreate"),
            ),
        },
        f"{BASE}/apiTokens/{{id}}": {
            "parameters": [ref("id", "parameters")],
            "get": _operation(
                "getApiToken", "Get one of the caller's tokens", {"200": one, **_errors(400, 404)}
            ),
            "put": _operation(
                "updateApiToken",
                "Edit description or expiry of one of the caller's tokens",
                {"200": one, **_errors(400, 404, 409, 413, 415)},
                requestBody=_json_body("ApiTokenUpdate"),
            ),
            "delete": _operation(
                "deleteApiToken",
                "Delete one of the caller's tokens; it stops at once",
                {"204": {"description": "Deleted"}, **_errors(400, 404)},
            ),
        },
    }


def _event_paths() -> dict:
    page = {"type": "array", "items": ref("AuditEvent")}
    counted = {
        "required": ["totalExact"],
        "properties": {
            "data": page,
            "total": {
                "type": "integer",
                "maximum": EXACT_TOTAL_LIMIT,
                "description": (
                    f"Matching events, counted up to {EXACT_TOTAL_LIMIT:,}; when more match, "
                    f"{EXACT_TOTAL_LIMIT} and `totalExact` is false"
                ),
            },
            "totalExact": {
                "type": "boolean",
                "description": (
                    f"false: more than {EXACT_TOTAL_LIMIT:,} events match and `total` is only "
                    "a lower bound; pages beyond it can still be read"
                ),
            },
        },
    }
    events = {
        "description": "One page, newest first by createdAt, then by id",
        "content": {JSON: {"schema": {"allOf": [ref("Envelope"), counted]}}},
    }
    text = {"type": "string", "maxLength": 64}
    parameters = [
        _query("type", {"type": "string", "enum": [t.value for t in EventType]}, "Event type"),
        _query("actorId", text, "Who acted"),
        _query("targetId", text, "What was acted on"),
        _query("from", {"type": "string", "format": "date-time"}, "createdAt at or after"),
        _query("to", {"type": "string", "format": "date-time"}, "createdAt before"),
        *_paging(),
    ]
    return {
        f"{BASE}/events": {
            "get": _operation(
                "listEvents",
                "The workspace's audit log, newest first",
                {"200": events, **_errors(400)},
                parameters=parameters,
                description=(
                    "Newest first by `createdAt`, events with the same `createdAt` by id "
                    f"(newest first). `total` counts the matches up to {EXACT_TOTAL_LIMIT:,}: "
                    f"when more match, `total` is {EXACT_TOTAL_LIMIT} and `totalExact` is false. "
                    "Paging by `page` and `size` works beyond that."
                ),
            )
        }
    }


def _oauth_paths() -> dict:
    form = "application/x-www-form-urlencoded"
    oauth_error = {"content": {JSON: {"schema": ref("OAuthError")}}}
    return {
        f"{BASE}/oauth2/token": {
            "post": {
                "operationId": "token",
                "summary": "Exchange an API token for an access token (client credentials)",
                "security": [{"apiToken": []}, {}],
                "requestBody": {
                    "required": True,
                    "content": {form: {"schema": ref("TokenRequest")}},
                },
                "responses": {
                    "200": {
                        "description": "The access token",
                        "content": {JSON: {"schema": ref("TokenResponse")}},
                    },
                    "400": {
                        "description": "invalid_request, invalid_scope, invalid_target or "
                        "unsupported_grant_type",
                        **oauth_error,
                    },
                    "401": {"description": "invalid_client", **oauth_error},
                    "413": {"description": "Body too large", **oauth_error},
                    "429": {"description": "Too many requests", **oauth_error},
                },
            }
        }
    }


def _openapi_path() -> dict:
    return {
        f"{BASE}/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {JSON: {"schema": {"type": "object"}}},
                    }
                },
            }
        }
    }


def _schemas() -> dict:
    description = {"type": "string", "maxLength": DESCRIPTION_MAX}
    token_status = {"type": "string", "enum": ["ACTIVE", "EXPIRED", "REVOKED"]}
    api_token = {
        "type": "object",
        "required": ["id", "description", "expiry", "hint", "status", "createdAt"],
        "properties": {
            "id": UUID,
            "description": description,
            "expiry": TIMESTAMP,
            "hint": {"type": "string", "description": "The token's last 4 characters"},
            "status": token_status,
            "createdAt": TIMESTAMP,
            "revokedAt": {
                **NULLABLE_TIMESTAMP,
                "description": "When it stops (or stopped) working",
            },
            "lastUsedAt": NULLABLE_TIMESTAMP,
        },
    }
    secret = {"token": {"type": "string", "description": "The API token, shown once"}}
    technical_user = {
        "type": "object",
        "required": ["id", "userName", "description", "permissionRole", "status", "createdAt"],
        "properties": {
            "id": UUID,
            "userName": {"type": "string", "maxLength": USER_NAME_MAX},
            "description": description,
            "permissionRole": {"type": "string", "enum": ROLES},
            "status": {"type": "string", "enum": ["ACTIVE", "ARCHIVED"]},
            "createdBy": {"type": ["string", "null"]},
            "createdAt": TIMESTAMP,
            "updatedAt": TIMESTAMP,
            "apiTokenData": ref("ApiToken"),
        },
    }
    token_input = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"expiry": TIMESTAMP, "description": description},
    }
    return {
        "Envelope": {
            "type": "object",
            "required": ["status", "type", "message", "errors", "total", "data"],
            "properties": {
                "status": {"type": "string", "enum": ["OK", "ERROR"]},
                "type": {"type": "string"},
                "message": {"type": ["string", "null"]},
                "errors": {"type": "array", "items": ref("FieldError")},
                "total": {"type": ["integer", "null"], "description": "Items across all pages"},
                "data": {},
            },
        },
        "ErrorEnvelope": {
            "allOf": [
                ref("Envelope"),
                {
                    "properties": {
                        "status": {"const": "ERROR"},
                        "message": {"type": "string"},
                        "data": {"type": "null"},
                    }
                },
            ]
        },
        "FieldError": {
            "type": "object",
            "required": ["value", "messages"],
            "properties": {
                "value": {"type": "string", "description": "The field, e.g. apiTokenData.expiry"},
                "messages": {"type": "array", "items": {"type": "string"}},
            },
        },
        "ApiToken": api_token,
        "ApiTokenWithSecret": {
            "allOf": [ref("ApiToken"), {"properties": secret, "required": ["token"]}]
        },
        "ApiTokenCreate": {**token_input, "required": ["expiry"]},
        "ApiTokenUpdate": token_input,
        "TechnicalUser": technical_user,
        "TechnicalUserWithToken": {
            "allOf": [
                ref("TechnicalUser"),
                {"properties": {"apiTokenData": ref("ApiTokenWithSecret")}},
            ]
        },
        "TechnicalUserCreate": {
            "type": "object",
            "additionalProperties": False,
            "required": ["userName", "permissionRole", "apiTokenData"],
            "properties": {
                "userName": {"type": "string", "minLength": 1, "maxLength": USER_NAME_MAX},
                "description": description,
                "permissionRole": {"type": "string", "enum": ROLES},
                "apiTokenData": {**token_input, "required": ["expiry"]},
            },
        },
        "TechnicalUserUpdate": {
            "type": "object",
            "description": "Omitted fields stay as they are; userName cannot change.",
            "properties": {
                "description": description,
                "permissionRole": {"type": "string", "enum": ROLES},
                "apiTokenData": token_input,
            },
        },
        "ReplaceToken": {
            "type": "object",
            "additionalProperties": False,
            "description": "Optional: the new token keeps the old one's expiry and description.",
            "properties": {"apiTokenData": token_input},
        },
        "AuditEvent": {
            "type": "object",
            "required": ["id", "type", "createdAt", "actor", "workspace", "target", "payload"],
            "properties": {
                "id": {"type": "integer"},
                "type": {"type": "string", "enum": [t.value for t in EventType]},
                "createdAt": TIMESTAMP,
                "actor": {
                    "type": "object",
                    "properties": {
                        "id": {"type": ["string", "null"]},
                        "userName": {"type": ["string", "null"]},
                        "technicalUser": {"type": ["boolean", "null"]},
                    },
                },
                "workspace": {
                    "type": "object",
                    "properties": {
                        "id": {"type": ["string", "null"]},
                        "name": {"type": ["string", "null"]},
                    },
                },
                "target": {
                    "type": "object",
                    "properties": {
                        "type": {"type": ["string", "null"]},
                        "id": {"type": ["string", "null"]},
                        "name": {"type": ["string", "null"]},
                    },
                },
                "ip": {"type": ["string", "null"]},
                "userAgent": {"type": ["string", "null"]},
                "payload": {"type": "object"},
            },
        },
        "TokenRequest": {
            "type": "object",
            "required": ["grant_type"],
            "properties": {
                "grant_type": {"type": "string", "enum": ["client_credentials"]},
                "client_id": {"type": "string", "enum": ["apitoken"]},
                "client_secret": {"type": "string", "description": "The API token (or use Basic)"},
                "scope": {"type": "string", "examples": ["read", "read write"]},
                "resource": {"type": "string", "description": "RFC 8707 API identifier or URL"},
            },
        },
        "TokenResponse": {
            "type": "object",
            "required": ["access_token", "token_type", "expires_in", "scope"],
            "properties": {
                "access_token": {"type": "string"},
                "token_type": {"type": "string", "enum": ["bearer"]},
                "expires_in": {"type": "integer"},
                "scope": {"type": "string"},
                "expired": {"type": "boolean"},
            },
        },
        "OAuthError": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
        },
    }


def _error_response(description: str, challenge: bool = False) -> dict:
    response = {"description": description, "content": {JSON: {"schema": ref("ErrorEnvelope")}}}
    if challenge:
        response["headers"] = {
            "WWW-Authenticate": {
                "schema": {"type": "string"},
                "description": 'Bearer realm="authserver", error="invalid_token"',
            }
        }
    return response


def _components() -> dict:
    return {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "An access token of a human workspace ADMIN with `mtm` in `aud`",
            },
            "apiToken": {
                "type": "http",
                "scheme": "basic",
                "description": "User name `apitoken`, password the API token",
            },
        },
        "parameters": {
            "id": {"name": "id", "in": "path", "required": True, "schema": UUID},
            "page": {
                "name": "page",
                "in": "query",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1},
            },
            "size": {
                "name": "size",
                "in": "query",
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_SIZE,
                    "default": DEFAULT_SIZE,
                },
            },
        },
        "responses": {
            "BadRequest": _error_response("A field is missing or invalid; `errors` names it"),
            "Unauthorized": _error_response(
                "No bearer token, or a bad or dead one", challenge=True
            ),
            "Forbidden": _error_response("Not a human ADMIN, not for this API, or no write scope"),
            "NotFound": _error_response("Unknown, another workspace's, or another admin's"),
            "Conflict": _error_response(
                "A live technical user has this userName, or the token is dead"
            ),
            "PayloadTooLarge": _error_response("The body is over the size limit"),
            "UnsupportedMediaType": _error_response("The body is not application/json"),
        },
        "schemas": _schemas(),
    }


def openapi_document(server_url: str) -> dict:
    """The whole document, with `server_url` (the issuer) as its server."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "authserver management API",
            "version": "1.0.0",
            "description": (
                "Technical users, personal API tokens and the audit log of one workspace, "
                "in the MTM envelope. Every call needs the bearer access token of a human "
                "workspace ADMIN; the workspace is the token's."
            ),
        },
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "paths": {
            **_technical_user_paths(),
            **_api_token_paths(),
            **_event_paths(),
            **_oauth_paths(),
            **_openapi_path(),
        },
        "components": _components(),
    }
