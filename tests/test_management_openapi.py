"""The OpenAPI 3.1 document describes every route of the management API, validly."""

import re

from openapi_spec_validator import validate

from authserver.api.management import bp

OAUTH_TOKEN = "/services/mtm/v1/oauth2/token"
IGNORED_METHODS = {"HEAD", "OPTIONS"}


def blueprint_routes(app) -> set[tuple[str, str]]:
    """(OpenAPI path, lower-case method) of every url_map rule of the management blueprint."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith(bp.name + "."):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - IGNORED_METHODS:
            routes.add((path, method.lower()))
    return routes


def test_every_blueprint_route_is_described(app, client):
    """A route added to the blueprint without a description here fails this test."""
    document = client.get("/services/mtm/v1/openapi.json").get_json()
    routes = blueprint_routes(app)
    assert len(routes) >= 14
    described = {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch"}
    }
    assert routes - described == set()
    assert (OAUTH_TOKEN, "post") in described


def test_document_is_valid_openapi_3_1(client):
    """The document passes the OpenAPI 3.1 schema, $refs included."""
    document = client.get("/services/mtm/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_operation_has_responses_and_an_operation_id(client):
    """Each operation documents its success and error answers; ids are unique."""
    document = client.get("/services/mtm/v1/openapi.json").get_json()
    ids = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            ids.append(operation["operationId"])
            assert any(code.startswith("2") for code in operation["responses"]), (path, method)
            if (
                path.startswith("/services/mtm/v1/")
                and "oauth2" not in path
                and path != ("/services/mtm/v1/openapi.json")
            ):
                assert {"401", "403"} <= set(operation["responses"]), (path, method)
    assert len(ids) == len(set(ids))


def test_token_endpoint_is_described_with_its_form(client):
    """A fuzzer can drive the token endpoint from the document."""
    document = client.get("/services/mtm/v1/openapi.json").get_json()
    operation = document["paths"][OAUTH_TOKEN]["post"]
    body = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]
    assert body["schema"] == {"$ref": "#/components/schemas/TokenRequest"}
    assert document["components"]["schemas"]["TokenRequest"]["required"] == ["grant_type"]
    assert document["servers"] == [{"url": "http://127.0.0.1:8080"}]


def test_error_envelope_is_described(client):
    """The envelope and its field errors are components every error response uses."""
    document = client.get("/services/mtm/v1/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    assert set(schemas["Envelope"]["required"]) == {
        "status",
        "type",
        "message",
        "errors",
        "total",
        "data",
    }
    assert schemas["FieldError"]["required"] == ["value", "messages"]
    unauthorized = document["components"]["responses"]["Unauthorized"]
    assert "WWW-Authenticate" in unauthorized["headers"]
