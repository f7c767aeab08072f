"""Console passwords: argon2id hashes (argon2-cffi), the policy, and generated passwords.

Only humans have passwords, and only to sign in to the admin console; API
tokens are high-entropy and hashed with SHA-256 instead (DESIGN section 3).
"""

import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from .errors import ValidationError, field_error
from .extensions import db
from .models import User
from .services.audit import Actor, EventType, Origin, Target, record_event

MIN_LENGTH = 12
# argon2 pre-hashes any length, but a bound keeps a hostile form from costing anything.
MAX_LENGTH = 1024
# No look-alikes (0/o, 1/l) and no "_", so a generated password never contains a token prefix.
GENERATED_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"
GENERATED_GROUPS = 4
GENERATED_GROUP_LENGTH = 5


@cache
def _hasher() -> PasswordHasher:
    """argon2id with argon2-cffi's defaults (RFC 9106 low-memory profile: t=3, m=64 MiB, p=4)."""
    return PasswordHasher()


@cache
def _decoy_hash() -> str:
    """A hash to verify against when the user is unknown, so both cases take as long."""
    return _hasher().hash(secrets.token_urlsafe(16))


def check_password_policy(password: str, field: str = "password") -> str:
    """At least MIN_LENGTH characters, at most MAX_LENGTH, not only spaces."""
    if not isinstance(password, str) or len(password.strip()) < MIN_LENGTH:
        raise ValidationError(
            "The password is too short",
            [field_error(field, f"must be at least {MIN_LENGTH} characters")],
        )
    if len(password) > MAX_LENGTH:
        raise ValidationError(
            "The password is too long",
            [field_error(field, f"must be at most {MAX_LENGTH} characters")],
        )
    return password


def hash_password(password: str) -> str:
    """The argon2id hash of a password, in the PHC string format."""
    return _hasher().hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if the password matches; an unknown user (None) costs as much as a real check."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher().verify(password_hash or _decoy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True if the hash was made with weaker parameters than today's."""
    return _hasher().check_needs_rehash(password_hash)


def generate_password() -> str:
    """A random password of 100 bits, easy to read aloud: xxxxx-xxxxx-xxxxx-xxxxx."""
    return "-".join(
        "".join(secrets.choice(GENERATED_ALPHABET) for _ in range(GENERATED_GROUP_LENGTH))
        for _ in range(GENERATED_GROUPS)
    )


def find_user(email: str) -> User | None:
    """The user with this email (user names are stored lower-case)."""
    query = select(User).where(User.user_name == email.strip().lower())
    return db.session.execute(query).scalar()


def set_password(user: User, password: str, *, actor: Actor, origin: Origin) -> None:
    """Check the policy, store the new hash and audit it (never the password)."""
    check_password_policy(password)
    user.password_hash = hash_password(password)
    db.session.flush()
    record_event(
        EventType.USER_PASSWORD_SET,
        workspace=None,
        actor=actor,
        target=Target(type="USER", id=user.id, name=user.user_name),
        origin=origin,
        payload={},
    )
