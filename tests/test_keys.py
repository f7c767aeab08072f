"""Signing keys: generation, kid thumbprints, the JWKS, reload on change, metadata."""

import json
import os
import stat
import time

import jwt
import pytest

from authserver import keys

from .conftest import ISSUER


@pytest.mark.parametrize("alg, kty", [("ES256", "EC"), ("RS256", "RSA"), ("EdDSA", "OKP")])
def test_first_key_is_generated_private_and_thumbprinted(tmp_path, alg, kty):
    assert keys.ensure_active_key(tmp_path, alg) is True
    assert keys.ensure_active_key(tmp_path, alg) is False  # idempotent
    ring = keys.KeyRing(tmp_path)
    active = ring.active()
    assert active.alg == alg
    pem = tmp_path / f"{active.kid}.pem"
    assert stat.S_IMODE(os.stat(pem).st_mode) == 0o600
    jwk = ring.jwks()["keys"][0]
    assert jwk["kty"] == kty and jwk["alg"] == alg and jwk["use"] == "sig"
    assert jwk["kid"] == keys.thumbprint(jwk) == active.kid
    assert "d" not in jwk  # never the private part


def test_rfc7638_thumbprint_example():
    # The example key and thumbprint of RFC 7638 section 3.1.
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSo"
        "c_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0"
        "_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI"
        "4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
    }
    assert keys.thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_rotation_is_seen_by_a_running_ring(tmp_path, monkeypatch):
    keys.ensure_active_key(tmp_path, "ES256")
    ring = keys.KeyRing(tmp_path)
    old = ring.active().kid
    old_kid, new_kid = keys.rotate(tmp_path, "ES256")
    assert old_kid == old
    monkeypatch.setattr(keys, "RELOAD_CHECK_SECONDS", 0)
    assert ring.active().kid == new_kid
    states = {k.kid: k.state for k in ring.published()}
    assert states == {old: keys.RETIRING, new_kid: keys.ACTIVE}
    assert {k["kid"] for k in ring.jwks()["keys"]} == {old, new_kid}


def test_prune_retires_old_keys_and_deletes_their_private_pem(tmp_path):
    keys.ensure_active_key(tmp_path, "ES256")
    old, new = keys.rotate(tmp_path, "ES256")
    assert keys.prune(tmp_path, older_than_seconds=3600) == []
    assert keys.prune(tmp_path, older_than_seconds=-1) == [old]
    assert not (tmp_path / f"{old}.pem").exists()
    ring = keys.KeyRing(tmp_path)
    assert [k["kid"] for k in ring.jwks()["keys"]] == [new]


def test_a_ring_parses_keys_once(tmp_path, monkeypatch):
    keys.ensure_active_key(tmp_path, "ES256")
    ring = keys.KeyRing(tmp_path)
    calls = []
    monkeypatch.setattr(keys, "_load_key", lambda *a: calls.append(a))
    for _ in range(50):
        ring.active()
        ring.jwks()
    time.sleep(0.01)
    assert calls == []


def test_missing_keys_give_a_clear_error(tmp_path):
    with pytest.raises(keys.KeysError, match="authserver init"):
        keys.KeyRing(tmp_path)


def test_corrupt_metadata_gives_a_clear_error(tmp_path):
    (tmp_path / keys.METADATA_FILE).write_text("{not json")
    with pytest.raises(keys.KeysError, match="not valid key metadata"):
        keys.KeyRing(tmp_path)


def test_tampered_key_file_is_refused(tmp_path):
    keys.ensure_active_key(tmp_path, "ES256")
    kid = json.loads((tmp_path / keys.METADATA_FILE).read_text())["keys"][0]["kid"]
    other = tmp_path / "other"
    keys.ensure_active_key(other, "ES256")
    other_kid = json.loads((other / keys.METADATA_FILE).read_text())["keys"][0]["kid"]
    (tmp_path / f"{kid}.pem").write_bytes((other / f"{other_kid}.pem").read_bytes())
    with pytest.raises(keys.KeysError, match="does not match"):
        keys.KeyRing(tmp_path)


def test_jwks_endpoint_serves_public_keys(client):
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    body = response.get_json()
    assert len(body["keys"]) == 1
    assert jwt.PyJWKSet.from_dict(body)  # parses as a key set


def test_metadata_lists_every_endpoint(client):
    body = client.get("/.well-known/oauth-authorization-server").get_json()
    base = ISSUER + "/services/mtm/v1/oauth2"
    assert body["issuer"] == ISSUER
    assert body["token_endpoint"] == base + "/token"
    assert body["revocation_endpoint"] == base + "/revoke"
    assert body["introspection_endpoint"] == base + "/introspect"
    assert body["jwks_uri"] == ISSUER + "/.well-known/jwks.json"
    assert body["grant_types_supported"] == ["client_credentials"]
    assert "client_secret_basic" in body["token_endpoint_auth_methods_supported"]
