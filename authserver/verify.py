"""Resource-side verifier for authserver access tokens (RFC 9068 JWTs).

A resource API uses this module to check, offline, the access tokens that
authserver issues: signature against the published JWKS, `typ`, issuer,
audience (the API's own identifier), lifetime, every required claim and the
shape of the `principal` claim. It needs only the standard library, PyJWT and
cryptography; Flask is imported only when `require_access` is used.

    verifier = Verifier("https://auth.example.com")
    principal = verifier.verify(token, audience="integration-api")

    @app.get("/things")
    @require_access(verifier, "integration-api", scope="read", role="VIEWER")
    def things(): ...

Offline verification cannot see revocation: a revoked access token stays
valid here until its `exp` (at most ACCESS_TOKEN_TTL). An API that must honour
revocation at once passes `online=IntrospectionChecker(...)`, which asks the
RFC 7662 introspection endpoint (cached a few seconds per `jti`) and fails
closed when the endpoint cannot be reached. authserver's introspection only
answers for tokens of the caller's own workspace, so the checker's API token
must belong to the workspace whose tokens it checks.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

__all__ = [
    "LEEWAY_SECONDS",
    "InvalidToken",
    "IntrospectionChecker",
    "KeySet",
    "Principal",
    "Verifier",
    "require_access",
]

log = logging.getLogger(__name__)

# Clock skew tolerated between authserver and the resource server for exp, nbf
# and iat. Servers synchronised by NTP differ by well under a second; 30 s
# absorbs a badly drifting host while adding under 1% to a 3600 s token lifetime.
LEEWAY_SECONDS = 30

# The only algorithms authserver signs with. Symmetric (HS*) and `none` are
# never accepted: the verifier holds public keys only, and each key pins the
# one algorithm it verifies (RFC 8725 section 3.1).
ALLOWED_ALGORITHMS = frozenset({"ES256", "RS256", "EdDSA"})

# RFC 9068 section 4: `typ` is compared case-insensitively, with or without
# the "application/" prefix. It stops an ID token or another JWT signed by the
# same key from being replayed as an access token.
ACCEPTED_TYPES = frozenset({"at+jwt", "application/at+jwt"})

REQUIRED_CLAIMS = (
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "client_id",
    "scope",
    "instanceUrl",
    "region",
    "principal",
)

# Every option is spelled out so a PyJWT default changing cannot loosen a check.
# They are pinned on a decoder instance rather than passed to jwt.decode on each
# call, which would merge the option dicts again for every token.
_DECODE_OPTIONS = {
    "verify_signature": True,
    "verify_exp": True,
    "verify_nbf": True,
    "verify_iat": True,
    "verify_aud": True,
    "verify_iss": True,
    "verify_sub": True,
    "verify_jti": True,
    "strict_aud": False,  # `aud` is a list of API identifiers; ours must be among them
    "enforce_minimum_key_length": True,
    "require": list(REQUIRED_CLAIMS),
}
_DECODER = jwt.PyJWT(options=_DECODE_OPTIONS)

ROLE_RANK = {"VIEWER": 1, "MEMBER": 2, "ADMIN": 3}

# (kty, crv) -> the one algorithm a key of that type may verify.
_ALGORITHM_FOR_KEY = {("EC", "P-256"): "ES256", ("RSA", None): "RS256", ("OKP", "Ed25519"): "EdDSA"}
# Only public members are read from a JWK; private parts, if a JWKS leaks them, are ignored.
_PUBLIC_JWK_MEMBERS = ("kty", "kid", "alg", "use", "crv", "x", "y", "n", "e")
_MIN_RSA_BITS = 2048

_MAX_RESPONSE_BYTES = 1 << 20  # a JWKS or introspection answer is a few KiB
_TRUSTED_HEADER_CACHE_SIZE = 64
_DEFAULT_TIMEOUT = 5.0
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


class InvalidToken(Exception):
    """The access token is refused; `description` says why (safe to show to the caller)."""

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


class _FetchError(Exception):
    """A JWKS or introspection request failed."""


def _fetch_json(
    url: str, timeout: float, headers: dict[str, str], data: bytes | None = None
) -> Any:
    """GET (or POST `data` to) `url` and return its JSON body; raise _FetchError on any failure."""
    headers = {"Accept": "application/json", **headers}
    # The URL is configuration, checked to be http(s) by _check_http_url in the constructors.
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            if response.status != 200:
                raise _FetchError(f"HTTP {response.status}")
            body = response.read(_MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        exc.close()  # an HTTPError holds the open response
        raise _FetchError(f"HTTP {exc.code}") from exc
    except (OSError, http.client.HTTPException) as exc:  # URLError and timeouts are OSErrors
        raise _FetchError(str(exc)) from exc
    if len(body) > _MAX_RESPONSE_BYTES:
        raise _FetchError("response too large")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise _FetchError(f"invalid JSON: {exc}") from exc


def _check_http_url(url: str) -> str:
    """Return url if it is an absolute http(s) URL, else raise ValueError."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an absolute http(s) URL, got {url!r}")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        # Keys fetched over plain HTTP can be swapped in transit, and with them any token.
        log.warning("%s is plain http: use https outside a trusted network", url)
    return url


# --- keys -----------------------------------------------------------------------------


def _parse_jwk(jwk: Any) -> tuple[str, jwt.PyJWK] | None:
    """Parse one JWK into (kid, PyJWK) with its algorithm pinned, or None if unusable."""
    if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
        return None
    if jwk.get("use", "sig") != "sig":
        return None
    # The algorithm comes from the key type, never from a token header. A JWK
    # whose `alg` disagrees with its key type is skipped rather than trusted.
    alg = _ALGORITHM_FOR_KEY.get((jwk.get("kty"), jwk.get("crv")))
    if alg is None or jwk.get("alg", alg) != alg:
        return None
    public = {name: jwk[name] for name in _PUBLIC_JWK_MEMBERS if name in jwk}
    try:
        key = jwt.PyJWK(public, algorithm=alg)
    except jwt.PyJWTError:
        return None
    if alg == "RS256" and key.key.key_size < _MIN_RSA_BITS:
        return None
    return jwk["kid"], key


def _parse_jwks(jwks: Any) -> dict[str, jwt.PyJWK]:
    """Parse a JWKS document into {kid: PyJWK}, skipping (and logging) unusable keys."""
    entries = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(entries, list):
        raise ValueError("a JWKS must be an object with a 'keys' list")
    keys: dict[str, jwt.PyJWK] = {}
    for jwk in entries:
        parsed = _parse_jwk(jwk)
        if parsed is None:
            log.warning(
                "ignoring unusable JWK %r", jwk.get("kid") if isinstance(jwk, dict) else None
            )
        elif parsed[0] in keys:
            # Two keys under one kid would make the choice of key ambiguous; keep the first.
            log.warning("ignoring duplicate JWK kid %r", parsed[0])
        else:
            keys[parsed[0]] = parsed[1]
    return keys


class KeySet:
    """Public verification keys by kid, from a static JWKS dict or a JWKS URL.

    Every key is parsed once into a `jwt.PyJWK` when the set is loaded. A URL
    set is fetched on first use and kept; it is fetched again when a token
    names an unknown kid (a key rotation) or when it is older than `max_age`
    (so a withdrawn key stops being trusted). Fetches happen at most once per
    `min_refetch_interval` seconds, whatever tokens arrive, so tokens with
    random kids cannot turn the verifier into a JWKS request flood. If a
    refresh fails, the keys already loaded stay in use.
    """

    def __init__(
        self,
        jwks: Mapping[str, Any] | None = None,
        *,
        url: str | None = None,
        min_refetch_interval: float = 60.0,
        max_age: float = 300.0,
        timeout: float = _DEFAULT_TIMEOUT,
    ):
        if (jwks is None) == (url is None):
            raise ValueError("give exactly one of a JWKS dict or a JWKS url")
        self.url = _check_http_url(url) if url is not None else None
        self.min_refetch_interval = min_refetch_interval
        self.max_age = max_age
        self.timeout = timeout
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded_at: float | None = None
        self._last_attempt: float | None = None
        self._lock = threading.Lock()
        if jwks is not None:
            self._keys = _parse_jwks(jwks)
            if not self._keys:
                raise ValueError("the JWKS holds no usable ES256, RS256 or EdDSA signing key")

    @property
    def kids(self) -> frozenset[str]:
        """The key ids currently loaded."""
        return frozenset(self._keys)

    def get(self, kid: str) -> jwt.PyJWK:
        """Return the key for `kid`; raise InvalidToken if there is none."""
        if self.url is not None:
            if kid not in self._keys:
                self._refresh(wait=True)
            elif self._is_stale():
                self._refresh(wait=False)
        key = self._keys.get(kid)
        if key is None:
            if not self._keys:
                raise InvalidToken("signing keys could not be fetched")
            raise InvalidToken("unknown key id")
        return key

    def _is_stale(self) -> bool:
        return self._loaded_at is None or time.monotonic() - self._loaded_at >= self.max_age

    def _refresh(self, *, wait: bool) -> None:
        """Fetch the JWKS again unless one was fetched within min_refetch_interval."""
        # An unknown kid waits for a fetch in flight (its result may hold the
        # kid); a stale but known key is served while another thread refreshes.
        if not self._lock.acquire(blocking=wait):
            return
        try:
            now = time.monotonic()
            if self._last_attempt is None or now - self._last_attempt >= self.min_refetch_interval:
                self._last_attempt = now
                self._load()
        finally:
            self._lock.release()

    def _load(self) -> None:
        try:
            keys = _parse_jwks(_fetch_json(self.url, self.timeout, {}))
        except (_FetchError, ValueError) as exc:
            log.warning("could not fetch JWKS from %s: %s", self.url, exc)
            return
        self._keys = keys  # one assignment: readers see the old set or the new one
        self._loaded_at = time.monotonic()


# --- the principal -------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who an access token speaks for, in which workspace, with which role and scopes."""

    id: str
    username: str
    workspace_id: str
    workspace_name: str
    role: str
    scopes: frozenset[str]
    technical_user: bool
    client_id: str
    jti: str
    expires_at: int
    audience: tuple[str, ...]
    claims: dict[str, Any] = field(repr=False, compare=False)

    def has_scope(self, scope: str) -> bool:
        """True if the token was granted `scope`."""
        return scope in self.scopes

    def has_role_at_least(self, role: str) -> bool:
        """True if the workspace role is `role` or higher (ADMIN > MEMBER > VIEWER)."""
        if role not in ROLE_RANK:
            raise ValueError(f"unknown role {role!r}")
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


_JSON_TYPE_NAMES = {str: "string", bool: "boolean", dict: "object"}


def _first_wrong(obj: dict[str, Any], names: tuple[str, ...], kind: type, path: str) -> str | None:
    """Describe the first of obj's `names` that is missing or not exactly `kind`, or None."""
    for name in names:
        # An exact type check: bool is an int subclass, and 1 must not pass for True.
        if type(obj.get(name)) is not kind:
            return f"claim {path}{name} is missing or not a {_JSON_TYPE_NAMES[kind]}"
    return None


def _shape_error(claims: dict[str, Any]) -> str | None:
    """Describe the first claim PyJWT does not type-check that has the wrong shape, or None."""
    principal = claims.get("principal")
    if type(principal) is not dict:
        return "claim principal is missing or not an object"
    # `or` stops at the first error, so a nested object is only read once its type is checked.
    error = (
        _first_wrong(claims, ("client_id", "scope", "instanceUrl", "region"), str, "")
        or _first_wrong(principal, ("id", "username", "role", "status"), str, "principal.")
        or _first_wrong(principal, ("technicalUser",), bool, "principal.")
        or _first_wrong(principal, ("account", "permission"), dict, "principal.")
        or _first_wrong(principal["account"], ("id", "name"), str, "principal.account.")
        or _first_wrong(
            principal["permission"],
            ("id", "workspaceId", "workspaceName", "role", "status"),
            str,
            "principal.permission.",
        )
    )
    if error:
        return error
    if type(claims["exp"]) not in (int, float):
        return "claim exp is not a number"
    if principal["permission"]["role"] not in ROLE_RANK:
        return "claim principal.permission.role is not ADMIN, MEMBER or VIEWER"
    # Defence in depth: the issuer only signs for active principals and permissions.
    if principal["status"] != "ACTIVE" or principal["permission"]["status"] != "ACTIVE":
        return "principal is not active"
    return None


def _principal_from_claims(claims: dict[str, Any]) -> Principal:
    """Check the shape of the claims and build the Principal; raise InvalidToken if wrong."""
    error = _shape_error(claims)
    if error:
        raise InvalidToken(error)
    principal = claims["principal"]
    permission = principal["permission"]
    aud = claims["aud"]
    # Built without the dataclass __init__, which sets each of the twelve frozen
    # fields through object.__setattr__: ~1.5 us, a few % of a whole verification.
    # The result is the same frozen instance __init__ would make (tests compare them).
    result = object.__new__(Principal)
    result.__dict__.update(
        id=principal["id"],
        username=principal["username"],
        workspace_id=permission["workspaceId"],
        workspace_name=permission["workspaceName"],
        role=permission["role"],
        scopes=frozenset(claims["scope"].split()),
        technical_user=principal["technicalUser"],
        client_id=claims["client_id"],
        jti=claims["jti"],
        expires_at=int(claims["exp"]),
        audience=(aud,) if isinstance(aud, str) else tuple(aud),
        claims=claims,
    )
    return result


# --- the verifier ---------------------------------------------------------------------------


def _describe(exc: jwt.PyJWTError) -> str:
    """A short reason for a PyJWT error, fit for an RFC 6750 error_description."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "token not yet valid"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"claim {exc.claim} is missing"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "token not valid for this API"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "token from another issuer"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "signature verification failed"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "algorithm not allowed"
    if isinstance(exc, jwt.DecodeError):
        return "malformed token"
    return "invalid token"


def _checked_header(header: dict[str, Any]) -> tuple[str, str]:
    """Check the JOSE header's typ, alg and kid; return (alg, kid)."""
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES:
        raise InvalidToken("token type is not at+jwt")
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise InvalidToken("algorithm not allowed")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("token has no key id")
    return alg, kid


class Verifier:
    """Verify authserver access tokens offline (and optionally online) for one or more APIs."""

    def __init__(
        self,
        issuer: str,
        audience: str | None = None,
        *,
        keys: KeySet | Mapping[str, Any] | None = None,
        jwks_url: str | None = None,
        leeway: float = LEEWAY_SECONDS,
        online: IntrospectionChecker | None = None,
    ):
        if keys is not None and jwks_url is not None:
            raise ValueError("give keys or jwks_url, not both")
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.online = online
        if keys is None:
            keys = KeySet(url=jwks_url or issuer.rstrip("/") + "/.well-known/jwks.json")
        self.keys = keys if isinstance(keys, KeySet) else KeySet(keys)
        # Header segment -> kid, for headers of tokens that verified. All tokens
        # signed by one key share one header segment, so this saves re-parsing it;
        # only verified tokens add entries, so junk tokens cannot crowd it.
        self._trusted_headers: dict[str, str] = {}

    def verify(self, token: str, audience: str | None = None) -> Principal:
        """Verify `token` for API `audience` (default: the verifier's) and return its Principal."""
        api = audience if audience is not None else self.audience
        if not api:
            raise ValueError("an audience (the API identifier) is required")
        if not isinstance(token, str):
            raise InvalidToken("malformed token")
        header_segment = token.partition(".")[0]
        kid, key = self._key_for(token, header_segment)
        try:
            claims = _DECODER.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                issuer=self.issuer,
                audience=api,
                leeway=self.leeway,
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(_describe(exc)) from exc
        principal = _principal_from_claims(claims)
        if self.online is not None and not self.online.is_active(token, principal.jti):
            raise InvalidToken("token is not active")
        self._trust_header(header_segment, kid)
        return principal

    def _key_for(self, token: str, header_segment: str) -> tuple[str, jwt.PyJWK]:
        """Check the token's header and return (kid, key) for it."""
        kid = self._trusted_headers.get(header_segment)
        if kid is not None:
            return kid, self.keys.get(kid)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        alg, kid = _checked_header(header)
        key = self.keys.get(kid)
        # The key pins the algorithm: an RS256 key never verifies an ES256 or HS256
        # token (PyJWT checks this again in decode).
        if alg != key.algorithm_name:
            raise InvalidToken("algorithm does not match the key")
        return kid, key

    def _trust_header(self, header_segment: str, kid: str) -> None:
        if header_segment in self._trusted_headers:
            return
        if len(self._trusted_headers) >= _TRUSTED_HEADER_CACHE_SIZE:
            self._trusted_headers.clear()  # rotations only; cheaper than an LRU
        self._trusted_headers[header_segment] = kid


# --- online mode (RFC 7662) -----------------------------------------------------------------


class IntrospectionChecker:
    """Ask the RFC 7662 introspection endpoint whether a token is still active.

    Answers are cached by `jti` for `cache_seconds`, so a revocation is seen
    within that time. If the endpoint cannot be reached or answers badly, the
    token is refused (fail closed): an API that opted into online checks must
    not silently fall back to accepting revoked tokens.
    """

    _MAX_CACHE_ENTRIES = 10_000

    def __init__(
        self,
        url: str,
        client_token: str,
        *,
        cache_seconds: float = 5.0,
        timeout: float = _DEFAULT_TIMEOUT,
    ):
        self.url = _check_http_url(url)
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        credentials = base64.b64encode(f"apitoken:{client_token}".encode()).decode("ascii")
        self._authorization = f"Basic {credentials}"
        self._cache: dict[str, tuple[bool, float]] = {}

    def is_active(self, token: str, jti: str) -> bool:
        """True if the endpoint says `token` is active; raise InvalidToken if it cannot tell."""
        now = time.monotonic()
        cached = self._cache.get(jti)
        if cached is not None and cached[1] > now:
            return cached[0]
        active = self._ask(token)
        self._remember(jti, active, now)
        return active

    def _ask(self, token: str) -> bool:
        body = urllib.parse.urlencode({"token": token, "token_type_hint": "access_token"})
        headers = {
            "Authorization": self._authorization,
            "Content-Type": "application/x-www-form-urlencoded",
        }
        try:
            answer = _fetch_json(self.url, self.timeout, headers, body.encode("ascii"))
        except _FetchError as exc:
            log.warning("token introspection at %s failed: %s", self.url, exc)
            raise InvalidToken("token status could not be checked") from exc
        if not isinstance(answer, dict) or not isinstance(answer.get("active"), bool):
            raise InvalidToken("token status could not be checked")
        return answer["active"]

    def _remember(self, jti: str, active: bool, now: float) -> None:
        if len(self._cache) >= self._MAX_CACHE_ENTRIES:
            self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
            if len(self._cache) >= self._MAX_CACHE_ENTRIES:
                self._cache.clear()
        self._cache[jti] = (active, now + self.cache_seconds)


# --- Flask ------------------------------------------------------------------------------------


def _quoted(value: str) -> str:
    """Quote a WWW-Authenticate parameter, dropping characters RFC 6750 forbids in it."""
    return '"' + "".join(c for c in value if " " <= c <= "~" and c not in '"\\') + '"'


def require_access(
    verifier: Verifier,
    api: str,
    scope: str | None = "read",
    role: str | None = None,
    *,
    realm: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Flask view: require a bearer token for `api` with `scope` and at least `role`.

    Responses follow RFC 6750 section 3: no bearer token gives 401 with a bare
    `Bearer realm=...` challenge; a bad token 401 `invalid_token`; a missing
    scope 403 `insufficient_scope` with `scope=` naming what is needed; too low
    a workspace role 403 `insufficient_scope` too (the token lacks privileges;
    no `scope=` because no scope would help). On success `flask.g.principal`
    holds the Principal. `scope` may list several scopes, all required.
    """
    import flask  # lazy: the verifier itself must not need Flask

    if role is not None and role not in ROLE_RANK:
        raise ValueError(f"unknown role {role!r}")
    needed_scopes = scope.split() if scope else []
    realm = realm or api

    def refuse(status: int, error: str, description: str, **params: str) -> flask.Response:
        challenge = [f"realm={_quoted(realm)}"]
        if error != "invalid_request":  # RFC 6750 3.1: no error info without credentials
            challenge.append(f"error={_quoted(error)}")
            challenge.append(f"error_description={_quoted(description)}")
        challenge.extend(f"{name}={_quoted(value)}" for name, value in params.items())
        response = flask.jsonify(error=error, error_description=description)
        response.status_code = status
        response.headers["WWW-Authenticate"] = "Bearer " + ", ".join(challenge)
        return response

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            scheme, _, token = flask.request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer":
                return refuse(401, "invalid_request", "a bearer access token is required")
            token = token.strip()
            if not token or " " in token:
                return refuse(401, "invalid_token", "malformed bearer token")
            try:
                principal = verifier.verify(token, audience=api)
            except InvalidToken as exc:
                return refuse(401, "invalid_token", exc.description)
            if not all(principal.has_scope(s) for s in needed_scopes):
                description = f"requires scope {' '.join(needed_scopes)}"
                return refuse(403, "insufficient_scope", description, scope=" ".join(needed_scopes))
            if role is not None and not principal.has_role_at_least(role):
                description = f"requires workspace role {role} or higher"
                return refuse(403, "insufficient_scope", description)
            flask.g.principal = principal
            return view(*args, **kwargs)

        return wrapper

    return decorator
