"""Configuration: code defaults, then AUTHSERVER_* environment variables, then a test mapping.

Every value is parsed and checked once, at startup; a bad value stops the
application with a message that names the variable and what is wrong with it.
"""

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "AUTHSERVER_"

SIGNING_ALGORITHMS = ("ES256", "RS256", "EdDSA")
DEFAULT_APIS = (
    "mtm",
    "pathfinder",
    "integration-api",
    "webhooks",
    "graphql",
    "poll",
    "synclog",
    "storage",
    "metrics",
)
DEFAULT_TECHNICAL_USER_APIS = ("integration-api", "webhooks", "graphql")
AUDIT_SINK_NAMES = ("log", "webhook")


class ConfigError(ValueError):
    """A configuration value is missing or invalid."""


def _parse_int(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"must be a whole number, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum else f"at least {minimum}"
            raise ConfigError(f"must be {bound}, got {value}")
        return value

    return parse


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"must be true or false, got {raw!r}")


def _parse_list(raw: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in raw.split(",") if item.strip())
    if not items:
        raise ConfigError("must list at least one value, comma separated")
    return items


def _parse_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"must be an absolute http(s) URL, got {raw!r}")
    return raw.rstrip("/")


def _parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ConfigError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return raw

    return parse


def _parse_sinks(raw: str) -> tuple[str, ...]:
    sinks = _parse_list(raw)
    unknown = [sink for sink in sinks if sink not in AUDIT_SINK_NAMES]
    if unknown:
        raise ConfigError(
            f"names unknown sinks {', '.join(unknown)}; known: {', '.join(AUDIT_SINK_NAMES)}"
        )
    return tuple(dict.fromkeys(sinks))


def _parse_secret(raw: str) -> str:
    # Never echo the value: this one is a secret.
    if len(raw.strip()) < 16:
        raise ConfigError("must be at least 16 characters")
    return raw.strip()


def _parse_rate(raw: str) -> str:
    from limits import parse_many

    try:
        parse_many(raw)
    except ValueError:
        raise ConfigError(f"must be a rate such as 100/minute, got {raw!r}") from None
    return raw


def _parse_session_key(raw: str) -> str:
    # Never echo the value: it signs every console session cookie.
    if len(raw.strip()) < 32:
        raise ConfigError("must be at least 32 characters")
    return raw.strip()


def _parse_text(raw: str) -> str:
    if not raw.strip():
        raise ConfigError("must not be empty")
    return raw.strip()


@dataclass(frozen=True)
class Setting:
    """One configuration key: its default and how to parse its environment value."""

    default: Any
    parse: Callable[[str], Any]
    help: str


SETTINGS: dict[str, Setting] = {
    "DATABASE_URL": Setting(
        None, _parse_text, "SQLAlchemy URL; default SQLite in the instance folder"
    ),
    "KEYS_DIR": Setting("keys", _parse_text, "folder holding the signing keys"),
    "ISSUER": Setting("http://127.0.0.1:8080", _parse_url, "the `iss` of every access token"),
    "INSTANCE_URL": Setting(None, _parse_url, "`instanceUrl` claim; default the issuer"),
    "REGION": Setting("eu", _parse_text, "`region` claim"),
    "SIGNING_ALG": Setting("ES256", _parse_choice(*SIGNING_ALGORITHMS), "ES256, RS256 or EdDSA"),
    "ACCESS_TOKEN_TTL": Setting(3600, _parse_int(60, 86400), "access token lifetime, seconds"),
    "MAX_TOKEN_LIFETIME": Setting(
        365 * 86400, _parse_int(3600), "longest allowed API token expiry, seconds from now"
    ),
    "MAX_GRACE_PERIOD": Setting(
        86400, _parse_int(0, 30 * 86400), "cap on replaceToken gracePeriodSeconds"
    ),
    "TOKEN_PREFIX": Setting("lxt_", _parse_text, "prefix of every API token"),
    "APIS": Setting(DEFAULT_APIS, _parse_list, "known API identifiers (`aud` values)"),
    "TECHNICAL_USER_APIS": Setting(
        DEFAULT_TECHNICAL_USER_APIS, _parse_list, "APIs a technical user's token may call"
    ),
    "LAST_USED_INTERVAL": Setting(
        60, _parse_int(0, 86400), "seconds between writes of an API token's last use"
    ),
    "MAX_CONTENT_LENGTH": Setting(
        64 * 1024, _parse_int(1024, 16 * 1024 * 1024), "largest accepted request body, bytes"
    ),
    "CORS_ORIGINS": Setting(
        (), _parse_list, "origins allowed to call from a browser (CORS); none by default"
    ),
    "RATELIMIT_ENABLED": Setting(True, _parse_bool, "false turns every rate limit off"),
    "RATELIMIT_STORAGE_URI": Setting(
        "memory://", _parse_text, "limits storage; redis://host:6379 shares limits across instances"
    ),
    "RATELIMIT_TOKEN_PER_IP": Setting(
        "1200/minute", _parse_rate, "token/revoke/introspect requests per client IP"
    ),
    "RATELIMIT_TOKEN_PER_TOKEN": Setting(
        "600/minute", _parse_rate, "token/revoke/introspect requests per presented API token"
    ),
    "RATELIMIT_FAILED_AUTH_PER_IP": Setting(
        "20/minute", _parse_rate, "failed client authentications per IP before every request is 429"
    ),
    "RATELIMIT_MANAGEMENT_PER_PRINCIPAL": Setting(
        "1800/minute", _parse_rate, "management API calls per authenticated principal"
    ),
    "LOG_LEVEL": Setting("INFO", _parse_choice("DEBUG", "INFO", "WARNING", "ERROR"), "log level"),
    "AUDIT_SINKS": Setting(("log",), _parse_sinks, "where committed audit events go: log, webhook"),
    "AUDIT_WEBHOOK_URL": Setting(None, _parse_url, "the webhook sink POSTs event batches here"),
    "AUDIT_WEBHOOK_SECRET": Setting(
        None, _parse_secret, "if set, the webhook sink signs each body (HMAC-SHA256)"
    ),
    "AUDIT_WEBHOOK_TIMEOUT": Setting(5, _parse_int(1, 60), "webhook request timeout, seconds"),
    "AUDIT_WEBHOOK_RETRIES": Setting(
        5, _parse_int(0, 20), "webhook retries per batch, with exponential backoff"
    ),
    "AUDIT_WEBHOOK_QUEUE_SIZE": Setting(
        10_000, _parse_int(1, 1_000_000), "events held for the webhook; beyond it they are dropped"
    ),
    "AUDIT_SEAL_INTERVAL": Setting(
        1, _parse_int(0, 3600), "seconds between automatic seals per process; 0 turns them off"
    ),
    "AUDIT_SEAL_SETTLE": Setting(2, _parse_int(0, 3600), "seal only events this many seconds old"),
    # The admin console (authserver.console).
    "SECRET_KEY": Setting(
        None,
        _parse_session_key,
        "signs console session cookies; default: generated once into KEYS_DIR/session-secret",
    ),
    "SESSION_COOKIE_SECURE": Setting(
        False, _parse_bool, "always mark the console cookie Secure (HTTPS requests always do)"
    ),
    "CONSOLE_SESSION_LIFETIME": Setting(
        8 * 3600, _parse_int(300, 7 * 86400), "a console sign-in lasts this long, seconds"
    ),
    "CONSOLE_LOGIN_ATTEMPTS": Setting(
        5, _parse_int(1, 10_000), "refused console sign-ins per email within the window"
    ),
    "CONSOLE_LOGIN_ATTEMPTS_PER_IP": Setting(
        20, _parse_int(1, 100_000), "refused console sign-ins per client address in the window"
    ),
    "CONSOLE_LOGIN_WINDOW": Setting(
        900, _parse_int(1, 86400), "the console sign-in rate-limit window, seconds"
    ),
}


def load_config(environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> dict:
    """Merge defaults, AUTHSERVER_* environment variables and overrides, validating each."""
    config: dict[str, Any] = {name: setting.default for name, setting in SETTINGS.items()}
    for name, setting in SETTINGS.items():
        raw = environ.get(ENV_PREFIX + name)
        if raw is None:
            continue
        try:
            config[name] = setting.parse(raw)
        except ConfigError as error:
            raise ConfigError(f"{ENV_PREFIX}{name} {error}") from None
    if overrides:
        config.update(overrides)
    _check_consistency(config)
    return config


def _check_consistency(config: dict) -> None:
    """Cross-field checks that no single parser can make."""
    if "mtm" not in config["APIS"]:
        raise ConfigError(f"{ENV_PREFIX}APIS must include mtm, the management API")
    unknown = set(config["TECHNICAL_USER_APIS"]) - set(config["APIS"])
    if unknown:
        raise ConfigError(
            f"{ENV_PREFIX}TECHNICAL_USER_APIS names APIs missing from {ENV_PREFIX}APIS: "
            + ", ".join(sorted(unknown))
        )
    if config["INSTANCE_URL"] is None:
        config["INSTANCE_URL"] = config["ISSUER"]
    _check_audit_sinks(config)
    prefix = config["TOKEN_PREFIX"]
    if not prefix.isascii() or not all(ch.isalnum() or ch == "_" for ch in prefix):
        raise ConfigError(f"{ENV_PREFIX}TOKEN_PREFIX must be ASCII letters, digits or _")


def _check_audit_sinks(config: dict) -> None:
    """The webhook sink needs its URL, and a URL without the sink is a mistake."""
    webhook = "webhook" in config["AUDIT_SINKS"]
    if webhook and not config["AUDIT_WEBHOOK_URL"]:
        raise ConfigError(
            f"{ENV_PREFIX}AUDIT_SINKS includes webhook but {ENV_PREFIX}AUDIT_WEBHOOK_URL is not set"
        )
    if config["AUDIT_WEBHOOK_URL"] and not webhook:
        raise ConfigError(
            f"{ENV_PREFIX}AUDIT_WEBHOOK_URL is set but {ENV_PREFIX}AUDIT_SINKS lacks webhook"
        )


def from_environment(overrides: Mapping[str, Any] | None = None) -> dict:
    """Load the configuration from this process's environment."""
    return load_config(os.environ, overrides)
