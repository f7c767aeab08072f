"""Demonstration resource APIs protected by `authserver.verify` (`authserver demo-resources`).

Four routes stand for four platform APIs. Each verifies the bearer token
offline against the issuer's JWKS (found through its RFC 8414 metadata) and,
if given an API token for introspection, also online, so a revoked token is
refused at once. GET needs scope `read`, POST needs `write`.

    /services/pathfinder/v1/graphql                     API graphql
    /services/integration-api/v1/synchronizationRuns    API integration-api
    /services/webhooks/v1/subscriptions                 API webhooks
    /services/pathfinder/v1/factSheets                  API pathfinder (a plain REST API)

A technical user's token carries only the APIs technical users may call
(TECHNICAL_USER_APIS), so it works on the first three and is refused on the
fourth; a VIEWER's token has no `write`; a personal admin token reaches all.

The seed's rule is answered 403 `insufficient_scope`: a technical user's
genuine token on an API technical users may not call (not in
TECHNICAL_USER_APIS) will never be let in, so the client must not be invited
to fetch a new token and retry. Any other token not issued for the route's
API is 401 `invalid_token` (RFC 9068 section 4), as is everything else wrong
with a token.
"""

import functools
import json
import urllib.parse
import urllib.request

import click
import flask
import jwt
from flask.cli import with_appcontext
from werkzeug.exceptions import HTTPException

from .config import DEFAULT_TECHNICAL_USER_APIS
from .verify import IntrospectionChecker, InvalidToken, Principal, Verifier, require_access

METADATA_PATH = "/.well-known/oauth-authorization-server"
ROUTES = (
    ("/services/pathfinder/v1/graphql", "graphql"),
    ("/services/integration-api/v1/synchronizationRuns", "integration-api"),
    ("/services/webhooks/v1/subscriptions", "webhooks"),
    ("/services/pathfinder/v1/factSheets", "pathfinder"),
)
SCOPE_FOR_METHOD = {"GET": "read", "POST": "write"}
FETCH_TIMEOUT_SECONDS = 5
DEFAULT_ONLINE_CACHE_SECONDS = 5.0


class DiscoveryError(RuntimeError):
    """The issuer's metadata could not be fetched or does not describe that issuer."""


def discover(issuer: str, timeout: float = FETCH_TIMEOUT_SECONDS) -> dict:
    """The issuer's RFC 8414 metadata, checked to name that same issuer (section 3.3)."""
    issuer = issuer.rstrip("/")
    if urllib.parse.urlsplit(issuer).scheme not in ("http", "https"):
        raise DiscoveryError(f"the issuer must be an http(s) URL, got {issuer!r}")
    try:
        # The scheme is checked above: only http(s) is ever opened.
        with urllib.request.urlopen(issuer + METADATA_PATH, timeout=timeout) as response:  # noqa: S310
            metadata = json.load(response)
    except (OSError, ValueError) as error:
        raise DiscoveryError(f"cannot read {issuer + METADATA_PATH}: {error}") from None
    if not isinstance(metadata, dict) or metadata.get("issuer") != issuer:
        raise DiscoveryError(f"{issuer + METADATA_PATH} describes another issuer")
    return metadata


def create_demo_app(
    issuer: str,
    *,
    metadata: dict | None = None,
    introspection_token: str | None = None,
    online_cache_seconds: float = DEFAULT_ONLINE_CACHE_SECONDS,
    technical_user_apis: tuple[str, ...] = DEFAULT_TECHNICAL_USER_APIS,
) -> flask.Flask:
    """The demonstration app; online verification is on when an introspection token is given."""
    metadata = metadata or discover(issuer)
    online = None
    if introspection_token:
        online = IntrospectionChecker(
            metadata["introspection_endpoint"],
            introspection_token,
            cache_seconds=online_cache_seconds,
        )
    verifier = Verifier(metadata["issuer"], jwks_url=metadata["jwks_uri"], online=online)
    app = flask.Flask(__name__)
    app.json.sort_keys = False
    for path, api in ROUTES:
        for method, scope in SCOPE_FOR_METHOD.items():
            view = _forbid_technical_users(verifier, api, technical_user_apis)(
                require_access(verifier, api, scope=scope)(functools.partial(_answer, api))
            )
            app.add_url_rule(path, f"{api}.{method.lower()}", view, methods=[method])
    app.register_error_handler(HTTPException, _http_error)
    app.extensions["demo_resources.verifier"] = verifier
    return app


def _answer(api: str):
    """What every demo route returns: which API was reached, and by whom."""
    principal = flask.g.principal
    return flask.jsonify(
        api=api,
        method=flask.request.method,
        principal={
            "id": principal.id,
            "username": principal.username,
            "technicalUser": principal.technical_user,
            "workspaceId": principal.workspace_id,
            "workspaceName": principal.workspace_name,
            "role": principal.role,
            "scopes": sorted(principal.scopes),
        },
    )


def _forbid_technical_users(verifier: Verifier, api: str, technical_user_apis: tuple[str, ...]):
    """Turn the 401 for a technical user's genuine token on a non-technical API into a 403."""

    def decorator(protected):
        @functools.wraps(protected)
        def view(*args, **kwargs):
            response = flask.make_response(protected(*args, **kwargs))
            if response.status_code != 401 or api in technical_user_apis:
                return response
            principal = _principal_for_another_api(verifier, api)
            if principal is not None and principal.technical_user:
                return _forbidden(api, "technical users may not call this API")
            return response

        return view

    return decorator


def _principal_for_another_api(verifier: Verifier, api: str) -> Principal | None:
    """The principal if the bearer token verifies for another API it names; one check at most."""
    token = flask.request.headers.get("Authorization", "").partition(" ")[2].strip()
    try:
        audience = jwt.decode(token, options={"verify_signature": False}).get("aud")
    except jwt.PyJWTError:
        return None
    others = [aud for aud in (audience if isinstance(audience, list) else [audience]) if aud != api]
    if not others or not isinstance(others[0], str):
        return None
    try:
        return verifier.verify(token, audience=others[0])
    except InvalidToken:
        return None


def _forbidden(api: str, description: str) -> flask.Response:
    response = flask.jsonify(error="insufficient_scope", error_description=description)
    response.status_code = 403
    response.headers["WWW-Authenticate"] = (
        f'Bearer realm="{api}", error="insufficient_scope", error_description="{description}"'
    )
    return response


def _http_error(error: HTTPException) -> flask.Response:
    response = flask.jsonify(error="invalid_request", error_description=error.description)
    response.status_code = error.code or 500
    return response


@click.command("demo-resources")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8081, show_default=True, type=click.IntRange(1, 65535))
@click.option("--issuer", default=None, help="The authserver to trust; default AUTHSERVER_ISSUER.")
@click.option(
    "--introspection-token",
    envvar="AUTHSERVER_DEMO_INTROSPECTION_TOKEN",
    default=None,
    help="An API token of the workspace, to verify online too (better set by the "
    "AUTHSERVER_DEMO_INTROSPECTION_TOKEN variable than on the command line).",
)
@click.option(
    "--online-cache-seconds",
    default=DEFAULT_ONLINE_CACHE_SECONDS,
    show_default=True,
    type=click.FloatRange(0),
    help="How long an introspection answer is reused.",
)
@with_appcontext
def demo_resources_command(host, port, issuer, introspection_token, online_cache_seconds):
    """Serve the demonstration resource APIs, trusting the issuer's published keys."""
    from werkzeug.serving import make_server

    issuer = issuer or flask.current_app.config["ISSUER"]
    try:
        app = create_demo_app(
            issuer,
            introspection_token=introspection_token,
            online_cache_seconds=online_cache_seconds,
            technical_user_apis=tuple(flask.current_app.config["TECHNICAL_USER_APIS"]),
        )
    except DiscoveryError as error:
        raise click.ClickException(str(error)) from None
    mode = "offline + introspection" if introspection_token else "offline"
    click.echo(f"demo resource APIs on http://{host}:{port}, trusting {issuer} ({mode})")
    make_server(host, port, app, threaded=True).serve_forever()
