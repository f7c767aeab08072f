"""Tests for authserver.verify without the server: real keys, real tokens, local HTTP servers."""

import base64
import dataclasses
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from flask import Flask, g, jsonify

from authserver.verify import (
    LEEWAY_SECONDS,
    REQUIRED_CLAIMS,
    IntrospectionChecker,
    InvalidToken,
    KeySet,
    Principal,
    Verifier,
    require_access,
)

ISSUER = "https://auth.example.com"
API = "integration-api"
ALGORITHMS = ("ES256", "RS256", "EdDSA")


# --- keys and tokens ------------------------------------------------------------------------


def _generate(alg):
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ed25519.Ed25519PrivateKey.generate()


def _public_jwk(private_key, alg, kid):
    jwk = jwt.get_algorithm_by_name(alg).to_jwk(private_key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def make_key(alg, kid=None):
    """A signing key: its private key, kid and public JWK."""
    private_key = _generate(alg)
    kid = kid or f"{alg.lower()}-{uuid.uuid4().hex[:8]}"
    return SimpleNamespace(
        alg=alg, private=private_key, kid=kid, jwk=_public_jwk(private_key, alg, kid)
    )


@pytest.fixture(scope="module")
def keys():
    """One signing key per algorithm, generated once for the module."""
    return {alg: make_key(alg) for alg in ALGORITHMS}


@pytest.fixture(scope="module")
def jwks(keys):
    return {"keys": [key.jwk for key in keys.values()]}


def make_claims(**overrides):
    """A complete, valid claim set as authserver issues it; keyword arguments replace claims."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "tu-1",
        "aud": ["integration-api", "webhooks", "graphql"],
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "jti": uuid.uuid4().hex,
        "client_id": "apitoken-1",
        "scope": "read write",
        "instanceUrl": "https://app.example.com",
        "region": "eu",
        "principal": {
            "id": "tu-1",
            "username": "sync-bot",
            "role": "ACCOUNTUSER",
            "status": "ACTIVE",
            "technicalUser": True,
            "account": {"id": "acc-1", "name": "Acme"},
            "permission": {
                "id": "perm-1",
                "workspaceId": "ws-1",
                "workspaceName": "acme-prod",
                "role": "MEMBER",
                "status": "ACTIVE",
            },
        },
    }
    claims.update(overrides)
    return claims


def make_token(key, claims=None, **header):
    """Sign claims (default: make_claims()) with key; keyword arguments replace header fields."""
    headers = {"typ": "at+jwt", "kid": key.kid, **header}
    return jwt.encode(claims or make_claims(), key.private, algorithm=key.alg, headers=headers)


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_token(claims, secret, kid):
    """An HS256 token built by hand: PyJWT itself refuses a PEM key as an HMAC secret."""
    header = {"alg": "HS256", "typ": "at+jwt", "kid": kid}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@pytest.fixture
def verifier(jwks):
    return Verifier(ISSUER, API, keys=jwks)


# --- valid tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_valid_token_yields_principal(verifier, keys, alg):
    claims = make_claims()
    principal = verifier.verify(make_token(keys[alg], claims))
    assert principal == Principal(
        id="tu-1",
        username="sync-bot",
        workspace_id="ws-1",
        workspace_name="acme-prod",
        role="MEMBER",
        scopes=frozenset({"read", "write"}),
        technical_user=True,
        client_id="apitoken-1",
        jti=claims["jti"],
        expires_at=claims["exp"],
        audience=("integration-api", "webhooks", "graphql"),
        claims=claims,
    )
    assert principal.claims == claims
    assert vars(principal).keys() == {f.name for f in dataclasses.fields(Principal)}


def test_principal_helpers(verifier, keys):
    principal = verifier.verify(make_token(keys["ES256"], make_claims(scope="read")))
    assert principal.has_scope("read")
    assert not principal.has_scope("write")
    assert principal.has_role_at_least("VIEWER")
    assert principal.has_role_at_least("MEMBER")
    assert not principal.has_role_at_least("ADMIN")
    with pytest.raises(ValueError, match="unknown role"):
        principal.has_role_at_least("OWNER")


def test_principal_is_frozen_and_hashable(verifier, keys):
    principal = verifier.verify(make_token(keys["ES256"]))
    with pytest.raises(AttributeError):
        principal.role = "ADMIN"
    assert hash(principal) == hash(principal)


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT"])
def test_typ_is_case_insensitive_with_optional_prefix(verifier, keys, typ):
    assert verifier.verify(make_token(keys["ES256"], typ=typ)).id == "tu-1"


def test_audience_given_per_call(jwks, keys):
    verifier = Verifier(ISSUER, keys=jwks)
    token = make_token(keys["ES256"])
    assert verifier.verify(token, audience="graphql").id == "tu-1"
    with pytest.raises(InvalidToken, match="not valid for this API"):
        verifier.verify(token, audience="mtm")
    with pytest.raises(ValueError, match="audience"):
        verifier.verify(token)


def test_string_audience_is_accepted(verifier, keys):
    principal = verifier.verify(make_token(keys["ES256"], make_claims(aud=API)))
    assert principal.audience == (API,)


def test_clock_skew_within_leeway_is_accepted(verifier, keys):
    now = int(time.time())
    skew = LEEWAY_SECONDS // 2
    claims = make_claims(exp=now - skew, nbf=now + skew, iat=now + skew)
    assert verifier.verify(make_token(keys["ES256"], claims)).id == "tu-1"


def test_repeated_verification_uses_the_header_cache(verifier, keys):
    token = make_token(keys["RS256"])
    for _ in range(3):
        assert verifier.verify(token).id == "tu-1"
    # A cached header still gets a full signature check.
    signing_input, signature = token.rsplit(".", 1)
    flipped = "B" if signature[10] == "A" else "A"
    with pytest.raises(InvalidToken, match="signature verification failed"):
        verifier.verify(f"{signing_input}.{signature[:10]}{flipped}{signature[11:]}")


# --- refused tokens ---------------------------------------------------------------------------


def refused(verifier, token, match):
    with pytest.raises(InvalidToken, match=match) as info:
        verifier.verify(token)
    return info.value


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_truncated_token(verifier, keys, alg):
    token = make_token(keys[alg])
    refused(verifier, token[:-8], "signature verification failed|malformed")
    refused(verifier, token.rsplit(".", 1)[0], "malformed")
    refused(verifier, token.split(".", 1)[0], "malformed")
    refused(verifier, "", "malformed")
    refused(verifier, "not-a-jwt", "malformed")


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_signed_by_another_key_with_the_same_kid(verifier, keys, alg):
    impostor = make_key(alg, kid=keys[alg].kid)
    refused(verifier, make_token(impostor), "signature verification failed")


def test_alg_none(verifier, keys):
    token = jwt.encode(
        make_claims(), None, algorithm="none", headers={"typ": "at+jwt", "kid": keys["ES256"].kid}
    )
    refused(verifier, token, "algorithm not allowed")


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_hs256_signed_with_the_public_key_pem(verifier, keys, alg):
    pem = (
        keys[alg]
        .private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    refused(verifier, hs256_token(make_claims(), pem, keys[alg].kid), "algorithm not allowed")


def test_alg_differing_from_the_keys_alg(verifier, keys):
    # Signed with the RSA key but naming the EC key's kid: the EC key pins ES256.
    token = make_token(keys["RS256"], kid=keys["ES256"].kid)
    refused(verifier, token, "algorithm does not match the key")


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt2", "application/jwt", "id_token+jwt", 7])
def test_wrong_typ(verifier, keys, typ):
    refused(verifier, make_token(keys["ES256"], typ=typ), "token type is not at\\+jwt")


def test_missing_typ(verifier, keys):
    refused(verifier, make_token(keys["ES256"], typ=None), "token type")  # PyJWT drops a None typ


def test_missing_kid(verifier, keys):
    token = jwt.encode(
        make_claims(), keys["ES256"].private, algorithm="ES256", headers={"typ": "at+jwt"}
    )
    refused(verifier, token, "no key id")


def test_unknown_kid_with_static_keys(verifier, keys):
    refused(verifier, make_token(make_key("ES256")), "unknown key id")


def test_expired(verifier, keys):
    now = int(time.time())
    claims = make_claims(exp=now - LEEWAY_SECONDS - 5, iat=now - 3600, nbf=now - 3600)
    refused(verifier, make_token(keys["ES256"], claims), "token expired")


def test_not_yet_valid(verifier, keys):
    claims = make_claims(nbf=int(time.time()) + LEEWAY_SECONDS + 60)
    refused(verifier, make_token(keys["ES256"], claims), "not yet valid")


def test_issued_in_the_future(verifier, keys):
    claims = make_claims(iat=int(time.time()) + 3600)
    refused(verifier, make_token(keys["ES256"], claims), "not yet valid")


def test_wrong_audience(verifier, keys):
    refused(verifier, make_token(keys["ES256"], make_claims(aud=["mtm"])), "not valid for this API")


def test_wrong_issuer(verifier, keys):
    claims = make_claims(iss="https://evil.example.com")
    refused(verifier, make_token(keys["ES256"], claims), "another issuer")


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_missing_required_claim(verifier, keys, claim):
    claims = make_claims()
    del claims[claim]
    refused(verifier, make_token(keys["ES256"], claims), f"claim {claim} is missing")


@pytest.mark.parametrize(
    "claim, value, match",
    [
        ("exp", "9999999999", "claim exp is not a number"),
        ("client_id", 1, "claim client_id is missing or not a string"),
        ("scope", ["read"], "claim scope is missing or not a string"),
        ("region", None, "claim region is missing"),
        ("jti", 7, "malformed|invalid token"),
        ("principal", "tu-1", "claim principal is missing or not an object"),
    ],
)
def test_claim_of_the_wrong_type(verifier, keys, claim, value, match):
    refused(verifier, make_token(keys["ES256"], make_claims(**{claim: value})), match)


PRINCIPAL_FIELDS = [
    ("id",),
    ("username",),
    ("role",),
    ("status",),
    ("technicalUser",),
    ("account",),
    ("account", "id"),
    ("account", "name"),
    ("permission",),
    ("permission", "id"),
    ("permission", "workspaceId"),
    ("permission", "workspaceName"),
    ("permission", "role"),
    ("permission", "status"),
]


@pytest.mark.parametrize("path", PRINCIPAL_FIELDS, ids=".".join)
def test_principal_missing_a_field(verifier, keys, path):
    claims = make_claims()
    parent = claims["principal"]
    for name in path[:-1]:
        parent = parent[name]
    del parent[path[-1]]
    error = refused(verifier, make_token(keys["ES256"], claims), "is missing")
    assert error.description.startswith(f"claim principal.{'.'.join(path)} ")


@pytest.mark.parametrize(
    "path, value, match",
    [
        (("technicalUser",), "true", "not a boolean"),
        (("technicalUser",), 1, "not a boolean"),
        (("id",), 42, "not a string"),
        (("account",), "acc-1", "not an? object"),
        (("permission", "role"), "OWNER", "not ADMIN, MEMBER or VIEWER"),
        (("permission", "status"), "ARCHIVED", "not active"),
        (("status",), "ARCHIVED", "not active"),
    ],
)
def test_principal_field_of_the_wrong_shape(verifier, keys, path, value, match):
    claims = make_claims()
    parent = claims["principal"]
    for name in path[:-1]:
        parent = parent[name]
    parent[path[-1]] = value
    refused(verifier, make_token(keys["ES256"], claims), match)


def test_non_string_token(verifier):
    refused(verifier, None, "malformed")


# --- key sets ----------------------------------------------------------------------------------


def test_keyset_pins_the_algorithm_by_key_type(keys):
    key_set = KeySet({"keys": [key.jwk for key in keys.values()]})
    assert {key_set.get(key.kid).algorithm_name for key in keys.values()} == set(ALGORITHMS)


def test_keyset_parses_each_key_once(keys, jwks, monkeypatch):
    verifier = Verifier(ISSUER, API, keys=jwks)
    built = []
    monkeypatch.setattr(jwt.PyJWK, "__init__", lambda *args, **kwargs: built.append(args))
    for alg in ALGORITHMS:
        for _ in range(3):
            verifier.verify(make_token(keys[alg]))
    assert built == []


@pytest.mark.parametrize(
    "change",
    [
        {"alg": "RS256"},  # an EC key claiming another algorithm
        {"alg": "HS256"},
        {"use": "enc"},
        {"kid": None},
        {"crv": "P-384"},
        {"x": "AAAA"},  # not a point on the curve
    ],
)
def test_keyset_skips_unusable_keys(keys, change):
    jwk = {**keys["ES256"].jwk, **change}
    jwk = {name: value for name, value in jwk.items() if value is not None}
    with pytest.raises(ValueError, match="no usable"):
        KeySet({"keys": [jwk]})


def test_keyset_skips_symmetric_and_weak_keys(keys):
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 on purpose
    jwks = {
        "keys": [
            {"kty": "oct", "kid": "hmac", "k": _b64(b"x" * 32)},
            _public_jwk(weak, "RS256", "weak"),
            keys["EdDSA"].jwk,
        ]
    }
    assert KeySet(jwks).kids == {keys["EdDSA"].kid}


def test_keyset_ignores_private_members(keys):
    private_jwk = jwt.get_algorithm_by_name("ES256").to_jwk(keys["ES256"].private, as_dict=True)
    key_set = KeySet({"keys": [{**private_jwk, "kid": "k1"}]})
    assert isinstance(key_set.get("k1").key, ec.EllipticCurvePublicKey)


def test_keyset_keeps_the_first_of_duplicate_kids(keys):
    other = make_key("ES256", kid=keys["ES256"].kid)
    key_set = KeySet({"keys": [keys["ES256"].jwk, other.jwk]})
    verifier = Verifier(ISSUER, API, keys=key_set)
    assert verifier.verify(make_token(keys["ES256"])).id == "tu-1"
    with pytest.raises(InvalidToken):
        verifier.verify(make_token(other))


def test_keyset_needs_one_source(jwks):
    with pytest.raises(ValueError):
        KeySet()
    with pytest.raises(ValueError):
        KeySet(jwks, url="http://127.0.0.1/jwks.json")
    with pytest.raises(ValueError, match="http"):
        KeySet(url="file:///etc/passwd")
    with pytest.raises(ValueError, match="keys"):
        KeySet({"kid": "x"})
    with pytest.raises(ValueError, match="not both"):
        Verifier(ISSUER, API, keys=jwks, jwks_url="https://auth.example.com/jwks.json")


def test_plain_http_outside_loopback_is_logged(caplog):
    KeySet(url="http://127.0.0.1:1/jwks.json")
    assert caplog.records == []
    KeySet(url="http://auth.example.com/jwks.json")
    assert "plain http" in caplog.text


# --- a real HTTP server -------------------------------------------------------------------------


class FakeServer:
    """A tiny HTTP server on 127.0.0.1 that records requests and answers with `respond`."""

    def __init__(self, respond):
        self.respond = respond
        self.requests = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                server.requests.append(
                    SimpleNamespace(path=self.path, headers=self.headers, body=body)
                )
                status, payload = server.respond(self.path, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, format, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def serve():
    """Start FakeServers for a test and stop them afterwards."""
    servers = []

    def start(respond):
        servers.append(FakeServer(respond))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def closed_port_url():
    """A URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def jwks_server(serve, keys):
    """A JWKS endpoint whose published keys the test can change."""
    published = {"keys": [keys["ES256"].jwk]}
    server = serve(lambda path, body: (200, published))
    server.published = published
    server.fetches = lambda: sum(r.path == "/.well-known/jwks.json" for r in server.requests)
    return server


def test_jwks_url_is_fetched_once_for_many_verifications(jwks_server, keys):
    verifier = Verifier(jwks_server.url, API, keys=None)
    for _ in range(20):
        token = make_token(keys["ES256"], make_claims(iss=jwks_server.url))
        assert verifier.verify(token).id == "tu-1"
    assert jwks_server.fetches() == 1
    assert jwks_server.requests[0].headers["Accept"] == "application/json"


def test_jwks_refetch_on_unknown_kid_is_rate_limited(jwks_server, keys):
    url = jwks_server.url + "/.well-known/jwks.json"
    verifier = Verifier(ISSUER, API, keys=KeySet(url=url, min_refetch_interval=0.3))
    assert verifier.verify(make_token(keys["ES256"])).id == "tu-1"
    time.sleep(0.35)

    # A rotation: the new key is published; the first token naming it triggers one fetch.
    jwks_server.published["keys"].append(keys["EdDSA"].jwk)
    assert verifier.verify(make_token(keys["EdDSA"])).id == "tu-1"
    assert jwks_server.fetches() == 2

    # A flood of random kids within the interval fetches nothing.
    for _ in range(50):
        with pytest.raises(InvalidToken, match="unknown key id"):
            verifier.verify(make_token(make_key("EdDSA")))
    assert jwks_server.fetches() == 2

    # After the interval, an unknown kid may fetch again.
    time.sleep(0.35)
    jwks_server.published["keys"].append(keys["RS256"].jwk)
    assert verifier.verify(make_token(keys["RS256"])).id == "tu-1"
    assert jwks_server.fetches() == 3


def test_jwks_unknown_kid_fetches_at_most_once_across_threads(jwks_server, keys):
    key_set = KeySet(url=jwks_server.url, min_refetch_interval=60)
    verifier = Verifier(ISSUER, API, keys=key_set)
    verifier.verify(make_token(keys["ES256"]))
    tokens = [make_token(make_key("ES256")) for _ in range(8)]
    errors = []

    def attempt(token):
        try:
            verifier.verify(token)
        except InvalidToken as exc:
            errors.append(exc.description)

    threads = [threading.Thread(target=attempt, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == ["unknown key id"] * 8
    assert len(jwks_server.requests) == 1


def test_jwks_is_refreshed_when_stale_and_drops_withdrawn_keys(jwks_server, keys):
    key_set = KeySet(url=jwks_server.url, max_age=0.2, min_refetch_interval=0)
    verifier = Verifier(ISSUER, API, keys=key_set)
    token = make_token(keys["ES256"])
    assert verifier.verify(token).id == "tu-1"
    jwks_server.published["keys"] = [keys["RS256"].jwk]
    time.sleep(0.25)
    with pytest.raises(InvalidToken, match="unknown key id"):
        verifier.verify(token)
    assert len(jwks_server.requests) == 2


def test_jwks_keys_are_kept_when_a_refresh_fails(serve, keys):
    answers = iter([(200, {"keys": [keys["ES256"].jwk]})])
    server = serve(lambda path, body: next(answers, (503, {"error": "down"})))
    verifier = Verifier(ISSUER, API, keys=KeySet(url=server.url, max_age=0, min_refetch_interval=0))
    for _ in range(3):
        assert verifier.verify(make_token(keys["ES256"])).id == "tu-1"
    assert len(server.requests) >= 2


@pytest.mark.parametrize(
    "answer", [(200, b"{not json"), (200, {"keys": "none"}), (202, {"keys": []}), (404, {})]
)
def test_jwks_bad_answer_refuses_tokens(serve, keys, answer):
    server = serve(lambda path, body: answer)
    verifier = Verifier(ISSUER, API, jwks_url=server.url)
    with pytest.raises(InvalidToken, match="signing keys could not be fetched"):
        verifier.verify(make_token(keys["ES256"]))


def test_jwks_unreachable_refuses_tokens(keys):
    verifier = Verifier(ISSUER, API, jwks_url=closed_port_url() + "/jwks.json")
    with pytest.raises(InvalidToken, match="signing keys could not be fetched"):
        verifier.verify(make_token(keys["ES256"]))


# --- the Flask decorator ------------------------------------------------------------------------


@pytest.fixture
def api_client(verifier):
    app = Flask(__name__)
    app.config["TESTING"] = True

    @app.get("/things")
    @require_access(verifier, API)
    def things():
        principal = g.principal
        return jsonify(id=principal.id, workspace=principal.workspace_name, role=principal.role)

    @app.post("/things")
    @require_access(verifier, API, scope="write", role="MEMBER")
    def make_thing():
        return jsonify(created=True), 201

    @app.delete("/things")
    @require_access(verifier, API, scope="write", role="ADMIN")
    def delete_things():
        return "", 204

    @app.get("/admin")
    @require_access(verifier, "mtm")
    def admin():
        return jsonify(ok=True)

    return app.test_client()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_flask_success_sets_g_principal(api_client, keys):
    response = api_client.get("/things", headers=bearer(make_token(keys["ES256"])))
    assert response.status_code == 200
    assert response.json == {"id": "tu-1", "workspace": "acme-prod", "role": "MEMBER"}
    response = api_client.post("/things", headers=bearer(make_token(keys["EdDSA"])))
    assert response.status_code == 201


def test_flask_accepts_lowercase_scheme(api_client, keys):
    response = api_client.get(
        "/things", headers={"Authorization": f"bearer {make_token(keys['ES256'])}"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize("authorization", [None, "Basic YXBpdG9rZW46eA==", "Token abc"])
def test_flask_without_a_bearer_token(api_client, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = api_client.get("/things", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="integration-api"'
    assert response.json == {
        "error": "invalid_request",
        "error_description": "a bearer access token is required",
    }


@pytest.mark.parametrize("authorization", ["Bearer", "Bearer ", "Bearer a b"])
def test_flask_malformed_bearer_header(api_client, authorization):
    response = api_client.get("/things", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.json == {
        "error": "invalid_token",
        "error_description": "malformed bearer token",
    }
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="integration-api", error="invalid_token", '
        'error_description="malformed bearer token"'
    )


def test_flask_invalid_token(api_client, keys):
    now = int(time.time())
    claims = make_claims(exp=now - 3600, iat=now - 7200, nbf=now - 7200)
    response = api_client.get("/things", headers=bearer(make_token(keys["ES256"], claims)))
    assert response.status_code == 401
    assert response.json == {"error": "invalid_token", "error_description": "token expired"}
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="integration-api", error="invalid_token", error_description="token expired"'
    )


def test_flask_checks_the_api_as_audience(api_client, keys):
    response = api_client.get("/admin", headers=bearer(make_token(keys["ES256"])))
    assert response.status_code == 401
    assert response.json["error_description"] == "token not valid for this API"
    assert 'realm="mtm"' in response.headers["WWW-Authenticate"]
    claims = make_claims(aud=["mtm"])
    response = api_client.get("/admin", headers=bearer(make_token(keys["ES256"], claims)))
    assert response.status_code == 200


def test_flask_insufficient_scope(api_client, keys):
    token = make_token(keys["ES256"], make_claims(scope="read"))
    response = api_client.post("/things", headers=bearer(token))
    assert response.status_code == 403
    assert response.json == {
        "error": "insufficient_scope",
        "error_description": "requires scope write",
    }
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="integration-api", error="insufficient_scope", '
        'error_description="requires scope write", scope="write"'
    )


def test_flask_insufficient_role(api_client, keys):
    response = api_client.delete("/things", headers=bearer(make_token(keys["ES256"])))
    assert response.status_code == 403
    assert response.json == {
        "error": "insufficient_scope",
        "error_description": "requires workspace role ADMIN or higher",
    }
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="integration-api", error="insufficient_scope", '
        'error_description="requires workspace role ADMIN or higher"'
    )


def test_require_access_rejects_unknown_role(verifier):
    with pytest.raises(ValueError, match="unknown role"):
        require_access(verifier, API, role="OWNER")


# --- online mode (introspection) --------------------------------------------------------------


@pytest.fixture
def introspection(serve):
    """An RFC 7662 endpoint that reports tokens whose jti is in `revoked` as inactive."""
    revoked = set()

    def respond(path, body):
        token = parse_qs(body)["token"][0]
        jti = jwt.decode(token, options={"verify_signature": False})["jti"]
        return 200, {"active": jti not in revoked}

    server = serve(respond)
    server.revoked = revoked
    return server


def online_verifier(jwks, url, cache_seconds=5.0):
    checker = IntrospectionChecker(url, "lxt_secret", cache_seconds=cache_seconds, timeout=2)
    return Verifier(ISSUER, API, keys=jwks, online=checker)


def test_online_active_token_is_accepted(jwks, keys, introspection):
    verifier = online_verifier(jwks, introspection.url + "/introspect")
    token = make_token(keys["ES256"])
    assert verifier.verify(token).id == "tu-1"
    request = introspection.requests[0]
    assert request.path == "/introspect"
    assert (
        request.headers["Authorization"]
        == "Basic " + base64.b64encode(b"apitoken:lxt_secret").decode()
    )
    assert parse_qs(request.body)["token"] == [token]


def test_online_inactive_token_is_refused(jwks, keys, introspection):
    verifier = online_verifier(jwks, introspection.url)
    claims = make_claims()
    introspection.revoked.add(claims["jti"])
    with pytest.raises(InvalidToken, match="token is not active"):
        verifier.verify(make_token(keys["ES256"], claims))


def test_online_answers_are_cached_by_jti(jwks, keys, introspection):
    verifier = online_verifier(jwks, introspection.url, cache_seconds=0.3)
    claims = make_claims()
    token = make_token(keys["ES256"], claims)
    for _ in range(5):
        verifier.verify(token)
    assert len(introspection.requests) == 1

    introspection.revoked.add(claims["jti"])
    verifier.verify(token)  # still cached as active
    time.sleep(0.35)
    with pytest.raises(InvalidToken, match="token is not active"):
        verifier.verify(token)
    assert len(introspection.requests) == 2


def test_online_offline_checks_come_first(jwks, keys, introspection):
    verifier = online_verifier(jwks, introspection.url)
    with pytest.raises(InvalidToken, match="unknown key id"):
        verifier.verify(make_token(make_key("ES256")))
    assert introspection.requests == []


def test_online_fails_closed_when_unreachable(jwks, keys):
    verifier = online_verifier(jwks, closed_port_url())
    with pytest.raises(InvalidToken, match="token status could not be checked"):
        verifier.verify(make_token(keys["ES256"]))


@pytest.mark.parametrize("answer", [(500, {"error": "boom"}), (200, {"status": "ok"}), (200, [])])
def test_online_fails_closed_on_a_bad_answer(jwks, keys, serve, answer):
    server = serve(lambda path, body: answer)
    verifier = online_verifier(jwks, server.url)
    with pytest.raises(InvalidToken, match="token status could not be checked"):
        verifier.verify(make_token(keys["ES256"]))


# --- packaging ------------------------------------------------------------------------------------


def test_module_needs_neither_flask_nor_the_server():
    path = Path(__file__).resolve().parents[1] / "authserver" / "verify.py"
    script = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('verify', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules['verify'] = module\n"
        "spec.loader.exec_module(module)\n"
        "banned = ('flask', 'authserver', 'authlib', 'sqlalchemy', 'requests')\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in banned]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
