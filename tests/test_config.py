"""Configuration: defaults, AUTHSERVER_* variables, and clear failures at startup."""

import pytest

from authserver.config import ConfigError, load_config


def test_defaults():
    config = load_config({})
    assert config["SIGNING_ALG"] == "ES256"
    assert config["ACCESS_TOKEN_TTL"] == 3600
    assert config["INSTANCE_URL"] == config["ISSUER"]
    assert config["TECHNICAL_USER_APIS"] == ("integration-api", "webhooks", "graphql")
    assert "mtm" in config["APIS"]


def test_environment_overrides_defaults():
    config = load_config(
        {
            "AUTHSERVER_SIGNING_ALG": "EdDSA",
            "AUTHSERVER_ACCESS_TOKEN_TTL": "600",
            "AUTHSERVER_ISSUER": "https://auth.example.com/",
            "AUTHSERVER_REGION": "us",
            "AUTHSERVER_TECHNICAL_USER_APIS": "graphql, webhooks",
        }
    )
    assert config["SIGNING_ALG"] == "EdDSA"
    assert config["ACCESS_TOKEN_TTL"] == 600
    assert config["ISSUER"] == "https://auth.example.com"
    assert config["INSTANCE_URL"] == "https://auth.example.com"
    assert config["REGION"] == "us"
    assert config["TECHNICAL_USER_APIS"] == ("graphql", "webhooks")


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("SIGNING_ALG", "HS256", "must be one of ES256, RS256, EdDSA"),
        ("ACCESS_TOKEN_TTL", "soon", "must be a whole number"),
        ("ACCESS_TOKEN_TTL", "5", "between 60 and 86400"),
        ("ISSUER", "auth.example.com", "absolute http"),
        ("REGION", "  ", "must not be empty"),
        ("TECHNICAL_USER_APIS", "graphql,unknown", "missing from AUTHSERVER_APIS"),
        ("APIS", "graphql", "must include mtm"),
        ("TOKEN_PREFIX", "lx-", "ASCII letters"),
    ],
)
def test_bad_values_name_the_variable(name, value, message):
    with pytest.raises(ConfigError) as raised:
        load_config({f"AUTHSERVER_{name}": value})
    assert f"AUTHSERVER_{name}" in str(raised.value)
    assert message in str(raised.value)


def test_startup_fails_with_the_message(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "authserver.cli", "init"],
        env={"AUTHSERVER_SIGNING_ALG": "none", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode != 0
    assert "AUTHSERVER_SIGNING_ALG must be one of" in result.stderr
    assert "Traceback" not in result.stderr
