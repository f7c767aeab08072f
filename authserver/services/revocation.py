"""The access-token denylist: revoked `jti`s, kept until the token's own expiry."""

from datetime import datetime

from sqlalchemy import select

from ..extensions import db
from ..models import RevokedAccessToken


def is_access_token_revoked(jti: str) -> bool:
    """True if this access token's jti is on the denylist."""
    query = select(RevokedAccessToken.jti).where(RevokedAccessToken.jti == jti)
    return db.session.execute(query).first() is not None


def deny_access_token(jti: str, workspace_id: str, expires_at: datetime) -> bool:
    """Put a jti on the denylist until `expires_at`; False if it was already there."""
    if db.session.get(RevokedAccessToken, jti) is not None:
        return False
    db.session.add(RevokedAccessToken(jti=jti, workspace_id=workspace_id, expires_at=expires_at))
    db.session.flush()
    return True
