"""Access tokens: the JWT claims of DESIGN section 4 (RFC 9068 profile), and signing."""

import time
import uuid
from dataclasses import dataclass

import jwt

from ..keys import KeyRing
from ..services.credentials import Principal

ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 - a media type, not a secret


@dataclass(frozen=True)
class IssuedToken:
    """A signed access token and the facts the audit log keeps about it (never the token)."""

    token: str
    jti: str
    kid: str
    issued_at: int
    expires_at: int

    def __repr__(self) -> str:
        return f"IssuedToken(jti={self.jti!r}, kid={self.kid!r}, exp={self.expires_at})"


def build_claims(
    principal: Principal,
    *,
    scopes: tuple[str, ...],
    audience: tuple[str, ...],
    issuer: str,
    instance_url: str,
    region: str,
    issued_at: int,
    ttl: int,
    jti: str,
) -> dict:
    """The complete claim set of an access token; LeanIX clients read these names."""
    return {
        "iss": issuer,
        "sub": principal.subject_id,
        "aud": list(audience),
        "exp": issued_at + ttl,
        "iat": issued_at,
        "nbf": issued_at,
        "jti": jti,
        "client_id": principal.token_id,
        "scope": " ".join(scopes),
        "instanceUrl": instance_url,
        "region": region,
        "principal": {
            "id": principal.subject_id,
            "username": principal.user_name,
            "role": "ACCOUNTUSER",
            "status": "ACTIVE",
            "technicalUser": principal.technical_user,
            "account": {"id": principal.account_id, "name": principal.account_name},
            "permission": {
                "id": principal.permission_id,
                "workspaceId": principal.workspace_id,
                "workspaceName": principal.workspace_name,
                "role": principal.role.value,
                "status": "ACTIVE",
            },
        },
    }


class AccessTokenIssuer:
    """Signs access tokens with the key ring's active key."""

    def __init__(self, keyring: KeyRing, config: dict):
        self.keyring = keyring
        self.issuer = config["ISSUER"]
        self.instance_url = config["INSTANCE_URL"]
        self.region = config["REGION"]
        self.ttl = config["ACCESS_TOKEN_TTL"]

    def issue(
        self, principal: Principal, scopes: tuple[str, ...], audience: tuple[str, ...]
    ) -> IssuedToken:
        """Build, sign and return one access token."""
        key = self.keyring.active()
        now = int(time.time())
        jti = str(uuid.uuid4())
        claims = build_claims(
            principal,
            scopes=scopes,
            audience=audience,
            issuer=self.issuer,
            instance_url=self.instance_url,
            region=self.region,
            issued_at=now,
            ttl=self.ttl,
            jti=jti,
        )
        token = jwt.encode(
            claims,
            key.private_key,
            algorithm=key.alg,
            headers={"typ": ACCESS_TOKEN_TYP, "kid": key.kid},
        )
        return IssuedToken(
            token=token, jti=jti, kid=key.kid, issued_at=now, expires_at=now + self.ttl
        )
