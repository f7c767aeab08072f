"""Bad input: a clear 4xx in the envelope, naming the field and the reason, and nothing written."""

import json

import pytest
from sqlalchemy import func, select

from authserver.extensions import db
from authserver.models import ApiToken, AuditEvent, TechnicalUser

from .conftest import iso_in_days

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


def counts() -> tuple[int, int, int]:
    """Rows of technical users, API tokens and audit events."""
    db.session.rollback()
    return tuple(
        db.session.execute(select(func.count()).select_from(model)).scalar()
        for model in (TechnicalUser, ApiToken, AuditEvent)
    )


def error(message: str, *fields: tuple[str, str], type_: str = "BadRequest") -> dict:
    """The expected error envelope."""
    return {
        "status": "ERROR",
        "type": type_,
        "message": message,
        "errors": [{"value": field, "messages": [why]} for field, why in fields],
        "total": None,
        "data": None,
    }


def valid_technical_user(**changes) -> dict:
    """A valid create body, changed as given."""
    body = {
        "userName": "bot",
        "permissionRole": "MEMBER",
        "apiTokenData": {"expiry": iso_in_days(10)},
    }
    body.update(changes)
    return body


@pytest.fixture
def existing(admin):
    """A technical user to edit, and the row counts after making it."""
    created = admin.create_technical_user("existing")
    return created["id"]


def assert_refused(admin, method, path, status, expected, **request):
    """The call answers `status` with exactly `expected`, and writes nothing."""
    before = counts()
    response = admin.call(method, path, **request)
    assert response.status_code == status
    assert response.get_json() == expected
    assert counts() == before


# --- bodies -----------------------------------------------------------------------------

JSON = "application/json"

BODY_CASES = [
    (
        "invalid-json",
        '{"userName": ',
        error(
            "Invalid JSON: Expecting value at line 1 column 14",
            ("body", "Expecting value at line 1 column 14"),
        ),
    ),
    ("array", "[]", error("The body must be a JSON object", ("body", "must be a JSON object"))),
    ("string", '"bot"', error("The body must be a JSON object", ("body", "must be a JSON object"))),
    ("null", "null", error("The body must be a JSON object", ("body", "must be a JSON object"))),
    (
        "empty",
        "",
        error("Invalid JSON: a JSON object is required", ("body", "a JSON object is required")),
    ),
    (
        "nan",
        '{"userName": NaN}',
        error("Invalid JSON: NaN is not allowed in JSON", ("body", "NaN is not allowed in JSON")),
    ),
    (
        "infinity",
        '{"userName": -Infinity}',
        error(
            "Invalid JSON: -Infinity is not allowed in JSON",
            ("body", "-Infinity is not allowed in JSON"),
        ),
    ),
    (
        "overflowing-float",
        '{"userName": 1e999}',
        error("Invalid JSON: a number is out of range", ("body", "a number is out of range")),
    ),
    (
        "huge-integer",
        '{"userName": ' + "9" * 5000 + "}",
        error(
            "Invalid JSON: a number has too many digits", ("body", "a number has too many digits")
        ),
    ),
    (
        "duplicate-key",
        '{"userName": "a", "userName": "b"}',
        error("Invalid JSON: duplicate key 'userName'", ("body", "duplicate key 'userName'")),
    ),
    (
        "nested-too-deeply",
        "[" * 30_000,
        error("Invalid JSON: nested too deeply", ("body", "nested too deeply")),
    ),
    (
        "not-utf8",
        b'{"userName": "\xff"}',
        error("Invalid JSON: the body is not UTF-8", ("body", "the body is not UTF-8")),
    ),
]


@pytest.mark.parametrize(
    ("raw", "expected"), [c[1:] for c in BODY_CASES], ids=[c[0] for c in BODY_CASES]
)
def test_unparseable_bodies(admin, raw, expected):
    """Every endpoint with a body parses it strictly; shown on create."""
    assert_refused(admin, "POST", "/technicalusers", 400, expected, data=raw, content_type=JSON)


def test_strictness_applies_to_every_body(admin, existing):
    """The same parser reads update, replaceToken and personal-token bodies."""
    expected = error("Invalid JSON: duplicate key 'a'", ("body", "duplicate key 'a'"))
    for method, path in (
        ("PUT", f"/technicalusers/{existing}"),
        ("PUT", f"/technicalusers/{existing}/replaceToken"),
        ("POST", "/apiTokens"),
    ):
        raw = '{"a": 1, "a": 2}'
        assert_refused(admin, method, path, 400, expected, data=raw, content_type=JSON)


FIELD_CASES = [
    (
        "unknown-role",
        valid_technical_user(permissionRole="OWNER"),
        error("Unknown permission role", ("permissionRole", "must be ADMIN, MEMBER or VIEWER")),
    ),
    (
        "lower-case-role",
        valid_technical_user(permissionRole="admin"),
        error("Unknown permission role", ("permissionRole", "must be ADMIN, MEMBER or VIEWER")),
    ),
    (
        "missing-expiry",
        valid_technical_user(apiTokenData={}),
        error("apiTokenData.expiry is required", ("apiTokenData.expiry", "is required")),
    ),
    (
        "missing-token-data",
        {"userName": "bot", "permissionRole": "ADMIN"},
        error("apiTokenData is required", ("apiTokenData", "is required")),
    ),
    (
        "past-expiry",
        valid_technical_user(apiTokenData={"expiry": "2020-01-01T00:00:00Z"}),
        error("Expiry is in the past", ("apiTokenData.expiry", "must be in the future")),
    ),
    (
        "too-far-expiry",
        valid_technical_user(apiTokenData={"expiry": iso_in_days(400)}),
        error(
            "Expiry is too far away", ("apiTokenData.expiry", "must be at most 365 days from now")
        ),
    ),
    (
        "expiry-without-zone",
        valid_technical_user(apiTokenData={"expiry": "2030-01-01T00:00:00"}),
        error(
            "apiTokenData.expiry needs a time zone",
            ("apiTokenData.expiry", "must be ISO 8601 with a time zone, e.g. ending in Z"),
        ),
    ),
    (
        "expiry-not-a-date",
        valid_technical_user(apiTokenData={"expiry": "next tuesday"}),
        error(
            "apiTokenData.expiry is not a date-time",
            ("apiTokenData.expiry", "must be an ISO 8601 date-time such as 2027-01-31T00:00:00Z"),
        ),
    ),
    (
        "empty-user-name",
        valid_technical_user(userName=""),
        error("userName is required", ("userName", "must not be empty")),
    ),
    (
        "blank-user-name",
        valid_technical_user(userName="   "),
        error("userName is required", ("userName", "must not be empty")),
    ),
    (
        "long-user-name",
        valid_technical_user(userName="x" * 101),
        error("userName is too long", ("userName", "must be at most 100 characters")),
    ),
    (
        "control-in-user-name",
        valid_technical_user(userName="b\not"),
        error("userName is invalid", ("userName", "must be printable")),
    ),
    (
        "lone-surrogate",
        valid_technical_user(userName="\ud800"),
        error("userName is invalid", ("userName", "must be printable")),
    ),
    (
        "nul-in-description",
        valid_technical_user(description="a\u0000b"),
        error("description is invalid", ("description", "must not contain control characters")),
    ),
    (
        "long-description",
        valid_technical_user(description="x" * 501),
        error("description is too long", ("description", "must be at most 500 characters")),
    ),
    (
        "user-name-not-string",
        valid_technical_user(userName=5),
        error("userName must be a string", ("userName", "must be a string")),
    ),
    (
        "role-not-string",
        valid_technical_user(permissionRole=True),
        error("permissionRole must be a string", ("permissionRole", "must be a string")),
    ),
    (
        "description-not-string",
        valid_technical_user(description=["x"]),
        error("description must be a string", ("description", "must be a string")),
    ),
    (
        "token-data-not-object",
        valid_technical_user(apiTokenData="soon"),
        error("apiTokenData must be an object", ("apiTokenData", "must be an object")),
    ),
    (
        "expiry-not-string",
        valid_technical_user(apiTokenData={"expiry": 1893456000}),
        error("apiTokenData.expiry must be a string", ("apiTokenData.expiry", "must be a string")),
    ),
    (
        "unknown-field",
        valid_technical_user(role="ADMIN"),
        error("role is not a known field", ("role", "is not a known field")),
    ),
    (
        "unknown-nested-field",
        valid_technical_user(apiTokenData={"expiry": iso_in_days(1), "secret": "x"}),
        error(
            "apiTokenData.secret is not a known field",
            ("apiTokenData.secret", "is not a known field"),
        ),
    ),
    (
        "several-at-once",
        {"userName": "", "permissionRole": "OWNER"},
        error(
            "The request is invalid",
            ("userName", "must not be empty"),
            ("permissionRole", "must be ADMIN, MEMBER or VIEWER"),
            ("apiTokenData", "is required"),
        ),
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES]
)
def test_bad_fields_on_create(admin, body, expected):
    """Each bad field is named with its reason; nothing is written."""
    assert_refused(admin, "POST", "/technicalusers", 400, expected, json=body)


def test_bad_fields_on_update(admin, existing):
    """PUT checks the same fields, and userName cannot change."""
    path = f"/technicalusers/{existing}"
    assert_refused(
        admin,
        "PUT",
        path,
        400,
        error("Unknown permission role", ("permissionRole", "must be ADMIN, MEMBER or VIEWER")),
        json={"permissionRole": "ROOT"},
    )
    assert_refused(
        admin,
        "PUT",
        path,
        400,
        error("userName cannot be changed", ("userName", "cannot be changed")),
        json={"userName": "renamed"},
    )
    assert_refused(
        admin,
        "PUT",
        path,
        400,
        error("Expiry is in the past", ("apiTokenData.expiry", "must be in the future")),
        json={"apiTokenData": {"expiry": "2001-01-01T00:00:00+02:00"}},
    )


def test_bad_fields_on_personal_tokens(admin):
    """Personal tokens: expiry required, future, within the cap; description a string."""
    for body, expected in (
        ({}, error("expiry is required", ("expiry", "is required"))),
        (
            {"expiry": "2020-01-01T00:00:00Z"},
            error("Expiry is in the past", ("expiry", "must be in the future")),
        ),
        (
            {"expiry": iso_in_days(366)},
            error("Expiry is too far away", ("expiry", "must be at most 365 days from now")),
        ),
        (
            {"expiry": iso_in_days(1), "description": 7},
            error("description must be a string", ("description", "must be a string")),
        ),
        (
            {"expiry": iso_in_days(1), "owner": "someone"},
            error("owner is not a known field", ("owner", "is not a known field")),
        ),
    ):
        assert_refused(admin, "POST", "/apiTokens", 400, expected, json=body)


def test_duplicate_live_user_name_is_409(admin, existing):
    """A live technical user already has the name: 409 naming userName."""
    expected = error(
        "A technical user with this userName exists",
        ("userName", "is already taken in this workspace"),
        type_="Conflict",
    )
    assert_refused(
        admin,
        "POST",
        "/technicalusers",
        409,
        expected,
        json=valid_technical_user(userName="existing"),
    )
    # Surrounding blanks are trimmed before the comparison.
    assert_refused(
        admin,
        "POST",
        "/technicalusers",
        409,
        expected,
        json=valid_technical_user(userName=" existing "),
    )


# --- content type and size ---------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1", None],
)
def test_wrong_content_type_is_415(admin, existing, content_type):
    """Only application/json (UTF-8) is read."""
    expected = error(
        "Content-Type must be application/json",
        ("Content-Type", "must be application/json (UTF-8)"),
        type_="UnsupportedMediaType",
    )
    raw = '{"userName": "x"}'
    headers = {"Content-Type": content_type} if content_type else {}
    for method, path in (
        ("POST", "/technicalusers"),
        ("PUT", f"/technicalusers/{existing}"),
        ("PUT", f"/technicalusers/{existing}/replaceToken"),
        ("POST", "/apiTokens"),
    ):
        assert_refused(admin, method, path, 415, expected, data=raw, headers=headers)


def test_json_with_utf8_charset_is_fine(admin):
    """A charset parameter of utf-8 is accepted."""
    response = admin.post(
        "/technicalusers",
        data=json.dumps(valid_technical_user()),
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )
    assert response.status_code == 201


def test_oversized_body_is_413_in_the_envelope(app, admin):
    """Over MAX_CONTENT_LENGTH: 413 in the envelope, naming the limit."""
    limit = app.config["MAX_CONTENT_LENGTH"]
    raw = '{"description": "' + "x" * limit + '"}'
    expected = error(
        f"The request body is larger than {limit} bytes",
        ("body", f"must be at most {limit} bytes"),
        type_="PayloadTooLarge",
    )
    assert_refused(admin, "POST", "/technicalusers", 413, expected, data=raw, content_type=JSON)


# --- query string and path ------------------------------------------------------------------

PAGE_MESSAGE = "must be a whole number from 1 to 1000000"
SIZE_MESSAGE = "must be a whole number from 1 to 100"
TU_SORTS = (
    "must be one of userName-ASC, userName-DESC, createdAt-ASC, createdAt-DESC, "
    "updatedAt-ASC, updatedAt-DESC, permissionRole-ASC, permissionRole-DESC"
)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("page=0", error("page is invalid", ("page", PAGE_MESSAGE))),
        ("page=-1", error("page is invalid", ("page", PAGE_MESSAGE))),
        ("page=abc", error("page is invalid", ("page", PAGE_MESSAGE))),
        ("page=1.5", error("page is invalid", ("page", PAGE_MESSAGE))),
        ("page=%D9%A3", error("page is invalid", ("page", PAGE_MESSAGE))),  # an Arabic 3
        ("page=99999999999999999999", error("page is invalid", ("page", PAGE_MESSAGE))),
        ("page=1&page=2", error("page is repeated", ("page", "must be given once"))),
        ("size=0", error("size is invalid", ("size", SIZE_MESSAGE))),
        ("size=101", error("size is invalid", ("size", SIZE_MESSAGE))),
        ("size=", error("size is invalid", ("size", SIZE_MESSAGE))),
        ("sort=name-ASC", error("sort is invalid", ("sort", TU_SORTS))),
        ("sort=userName-UP", error("sort is invalid", ("sort", TU_SORTS))),
        ("sort=userName", error("sort is invalid", ("sort", TU_SORTS))),
        (
            "queryUserName=" + "x" * 101,
            error(
                "queryUserName is invalid",
                ("queryUserName", "must be at most 100 printable characters"),
            ),
        ),
        (
            "queryUserName=a%00b",
            error(
                "queryUserName is invalid",
                ("queryUserName", "must be at most 100 printable characters"),
            ),
        ),
    ],
)
def test_bad_list_parameters(admin, query, expected):
    """page, size, sort and queryUserName are checked."""
    assert_refused(admin, "GET", f"/technicalusers?{query}", 400, expected)


def test_bad_sort_on_other_lists(admin, existing):
    """Each list names its own sort choices."""
    assert_refused(
        admin,
        "GET",
        f"/technicalusers/{existing}/changelog?sort=userName-ASC",
        400,
        error("sort is invalid", ("sort", "must be one of createdAt-ASC, createdAt-DESC")),
    )
    assert_refused(
        admin,
        "GET",
        "/apiTokens?sort=hint-ASC",
        400,
        error(
            "sort is invalid",
            ("sort", "must be one of createdAt-ASC, createdAt-DESC, expiry-ASC, expiry-DESC"),
        ),
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/technicalusers/{id}"),
        ("PUT", "/technicalusers/{id}"),
        ("PUT", "/technicalusers/{id}/replaceToken"),
        ("DELETE", "/technicalusers/{id}"),
        ("GET", "/technicalusers/{id}/changelog"),
        ("GET", "/apiTokens/{id}"),
        ("PUT", "/apiTokens/{id}"),
        ("DELETE", "/apiTokens/{id}"),
    ],
)
@pytest.mark.parametrize("bad_id", ["abc", "1", UNKNOWN_ID + "0", "{" + UNKNOWN_ID + "}"])
def test_non_uuid_id_is_400(admin, method, path, bad_id):
    """A non-UUID id is a 400 naming `id`, before any lookup or body parsing."""
    expected = error("id is not a UUID", ("id", "must be a UUID"))
    assert_refused(admin, method, path.format(id=bad_id), 400, expected, json={})


@pytest.mark.parametrize(
    ("query", "message"),
    [("-1", "must be a whole number from 0 to 1000000000"), ("soon", None), ("86401", None)],
)
def test_bad_grace_period(admin, existing, query, message):
    """gracePeriodSeconds is a whole number within MAX_GRACE_PERIOD."""
    if message is None and query == "soon":
        message = "must be a whole number from 0 to 1000000000"
    if query == "86401":
        expected = error(
            "gracePeriodSeconds is out of range",
            ("gracePeriodSeconds", "must be between 0 and 86400"),
        )
    else:
        expected = error("gracePeriodSeconds is invalid", ("gracePeriodSeconds", message))
    path = f"/technicalusers/{existing}/replaceToken?gracePeriodSeconds={query}"
    assert_refused(admin, "PUT", path, 400, expected)


def test_unknown_route_under_the_api_is_an_envelope_404(admin):
    """No HTML error page on the management surface."""
    response = admin.get("/nothing-here")
    assert response.status_code == 404
    assert response.get_json()["status"] == "ERROR"


def test_wrong_method_is_405_in_the_envelope(admin):
    """PATCH is not a route here."""
    response = admin.call("PATCH", "/technicalusers")
    assert response.status_code == 405
    assert response.get_json()["status"] == "ERROR"
    assert "GET" in response.headers["Allow"]
