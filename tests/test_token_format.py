"""The API token format: prefix, 256 random bits in base62, CRC32 checksum."""

import pytest

from authserver import tokens

PREFIX = "lxt_"


def test_generated_token_has_the_documented_shape():
    new = tokens.generate(PREFIX)
    assert new.secret.startswith(PREFIX)
    assert len(new.secret) == len(PREFIX) + 43 + 6
    assert all(ch in tokens.ALPHABET for ch in new.secret[len(PREFIX) :])
    assert tokens.is_well_formed(new.secret, PREFIX)
    assert new.hint == new.secret[-4:]
    assert new.sha256 == tokens.digest(new.secret)
    assert len(new.sha256) == 64


def test_tokens_are_unique():
    assert len({tokens.generate(PREFIX).secret for _ in range(200)}) == 200


def test_repr_never_shows_the_secret():
    new = tokens.generate(PREFIX)
    assert new.secret not in repr(new)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"),  # checksum char changed
        lambda s: s[:10] + ("A" if s[10] != "A" else "B") + s[11:],  # body char changed
        lambda s: s[:-1],  # truncated
        lambda s: s + "0",  # too long
        lambda s: "xyz_" + s[4:],  # other prefix
        lambda s: s[:20] + "-" + s[21:],  # not base62
        lambda s: "",
    ],
)
def test_damaged_tokens_are_refused(mutate):
    secret = tokens.generate(PREFIX).secret
    assert not tokens.is_well_formed(mutate(secret), PREFIX)


def test_the_prefix_is_configuration():
    new = tokens.generate("acme_")
    assert tokens.is_well_formed(new.secret, "acme_")
    assert not tokens.is_well_formed(new.secret, PREFIX)


def test_checksum_is_crc32_of_prefix_and_body():
    import zlib

    secret = tokens.generate(PREFIX).secret
    body, check = secret[:-6], secret[-6:]
    value = 0
    for ch in check:
        value = value * 62 + tokens.ALPHABET.index(ch)
    assert value == zlib.crc32(body.encode())
