"""Property tests: the token parser, the Basic header parser and the JWT claim builder."""

import base64
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authserver import tokens
from authserver.models import Role
from authserver.oauth.client_auth import parse_basic
from authserver.oauth.errors import InvalidClient
from authserver.oauth.jwt_tokens import build_claims
from authserver.services.credentials import Principal

PREFIX = "lxt_"
settings.register_profile("ci", max_examples=300, deadline=None)
settings.load_profile("ci")


@given(st.text(max_size=80))
def test_arbitrary_text_is_never_well_formed_unless_it_checks_out(text):
    if tokens.is_well_formed(text, PREFIX):
        body, check = text[:-6], text[-6:]
        assert tokens.checksum(body) == check


@given(st.integers(min_value=0, max_value=48), st.sampled_from(tokens.ALPHABET))
def test_any_single_character_change_is_caught(position, replacement):
    secret = tokens.generate(PREFIX).secret
    position = len(PREFIX) + position
    if secret[position] == replacement:
        return
    damaged = secret[:position] + replacement + secret[position + 1 :]
    assert not tokens.is_well_formed(damaged, PREFIX)


@given(st.text(alphabet=string.ascii_letters + string.digits + "_", min_size=1, max_size=10))
def test_generated_tokens_round_trip_for_any_prefix(prefix):
    new = tokens.generate(prefix)
    assert tokens.is_well_formed(new.secret, prefix)
    assert tokens.digest(new.secret) == new.sha256


@given(st.binary(max_size=200))
def test_basic_parser_never_crashes_on_any_bytes(raw):
    header = "Basic " + base64.b64encode(raw).decode()
    try:
        parsed = parse_basic(header)
    except InvalidClient:
        return
    user, password = parsed
    assert f"{user}:{password}".encode() == raw


@given(st.text(max_size=200))
def test_basic_parser_refuses_or_parses_any_header(header):
    try:
        parsed = parse_basic(header)
    except InvalidClient as error:
        assert error.audit_reason == "malformed_authorization_header"
        return
    assert parsed is None or isinstance(parsed, tuple)


@given(
    user=st.text(
        alphabet=st.characters(blacklist_characters=":", blacklist_categories=["Cs"]), max_size=30
    ),
    password=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=60),
)
def test_basic_parser_round_trips_utf8(user, password):
    raw = f"{user}:{password}".encode()
    header = "Basic " + base64.b64encode(raw).decode()
    assert parse_basic(header) == (user, password)


names = st.text(min_size=1, max_size=40)


@given(
    role=st.sampled_from(list(Role)),
    technical=st.booleans(),
    user_name=names,
    workspace_name=names,
    account_name=names,
    audience=st.lists(st.sampled_from(["mtm", "graphql", "webhooks"]), min_size=1, unique=True),
    issued_at=st.integers(min_value=0, max_value=2**40),
    ttl=st.integers(min_value=60, max_value=86400),
)
def test_claims_always_carry_the_contract(
    role, technical, user_name, workspace_name, account_name, audience, issued_at, ttl
):
    principal = Principal(
        token_id="t",
        token_hint="abcd",
        workspace_id="w",
        workspace_name=workspace_name,
        account_id="a",
        account_name=account_name,
        subject_id="s",
        user_name=user_name,
        technical_user=technical,
        role=role,
        permission_id="p",
        last_used_at=None,
    )
    claims = build_claims(
        principal,
        scopes=role.scopes,
        audience=tuple(audience),
        issuer="https://auth.example",
        instance_url="https://app.example",
        region="eu",
        issued_at=issued_at,
        ttl=ttl,
        jti="j",
    )
    assert set(claims) == {
        "iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope",
        "instanceUrl", "region", "principal",
    }  # fmt: skip
    assert claims["exp"] - claims["iat"] == ttl
    assert claims["nbf"] == claims["iat"] == issued_at
    assert claims["aud"] == audience
    assert claims["scope"] == ("read" if role is Role.VIEWER else "read write")
    permission = claims["principal"]["permission"]
    assert permission["role"] == role.value
    assert permission["workspaceName"] == workspace_name
    assert claims["principal"]["technicalUser"] is technical
    assert claims["principal"]["username"] == user_name


@pytest.mark.parametrize("header", [None, "", "Bearer abc", "Digest x"])
def test_non_basic_headers_are_not_parsed(header):
    assert parse_basic(header) is None
