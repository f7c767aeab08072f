"""The API token format: prefix + 43 base62 chars (256 random bits) + 6 base62 chars of CRC32.

The checksum lets the server refuse garbage before any database work and lets
secret scanners recognise a real token offline. Only the SHA-256 of a token is
ever stored; the token is high-entropy, so a slow hash would buy nothing.
"""

import hashlib
import secrets
import zlib
from dataclasses import dataclass

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_INDEX = {ch: i for i, ch in enumerate(ALPHABET)}
RANDOM_BITS = 256
RANDOM_CHARS = 43  # 62**43 > 2**256
CHECKSUM_CHARS = 6  # 62**6 > 2**32
HINT_CHARS = 4


def _base62(number: int, width: int) -> str:
    """Encode a non-negative integer as exactly `width` base62 characters."""
    chars = []
    for _ in range(width):
        number, rest = divmod(number, 62)
        chars.append(ALPHABET[rest])
    if number:
        raise ValueError("number does not fit in the width")
    return "".join(reversed(chars))


def checksum(body: str) -> str:
    """The 6-character base62 CRC32 of the prefix and random part."""
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_CHARS)


@dataclass(frozen=True)
class NewToken:
    """A freshly minted token: the secret is shown once, only the digest is kept."""

    secret: str
    sha256: str
    hint: str

    def __repr__(self) -> str:
        return f"NewToken(hint={self.hint!r})"


def generate(prefix: str) -> NewToken:
    """Mint a new API token with the given prefix."""
    body = prefix + _base62(secrets.randbits(RANDOM_BITS), RANDOM_CHARS)
    secret = body + checksum(body)
    return NewToken(secret=secret, sha256=digest(secret), hint=secret[-HINT_CHARS:])


def is_well_formed(candidate: str, prefix: str) -> bool:
    """True if the candidate has the prefix, the length, the alphabet and a valid checksum."""
    if len(candidate) != len(prefix) + RANDOM_CHARS + CHECKSUM_CHARS:
        return False
    if not candidate.startswith(prefix):
        return False
    tail = candidate[len(prefix) :]
    if any(ch not in _INDEX for ch in tail):
        return False
    # Not a secret comparison: the checksum is derived from the public part.
    return checksum(candidate[:-CHECKSUM_CHARS]) == candidate[-CHECKSUM_CHARS:]


def digest(secret: str) -> str:
    """The hex SHA-256 under which a token is stored and looked up."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
