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
    "LOG_LEVEL": Setting("INFO", _parse_choice("DEBUG", "INFO", "WARNING", "ERROR"), "log level"),
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
    prefix = config["TOKEN_PREFIX"]
    if not prefix.isascii() or not all(ch.isalnum() or ch == "_" for ch in prefix):
        raise ConfigError(f"{ENV_PREFIX}TOKEN_PREFIX must be ASCII letters, digits or _")


def from_environment(overrides: Mapping[str, Any] | None = None) -> dict:
    """Load the configuration from this process's environment."""
    return load_config(os.environ, overrides)
