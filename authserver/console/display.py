"""How the console shows things: expiry marks, role descriptions, event summaries.

Presentation only: what a token's status is comes from the services
(`token_status`); this module decides how it looks.
"""

import json
from datetime import UTC, datetime, timedelta

from ..models import ApiToken, AuditEvent, Role
from ..services.api_tokens import token_status
from . import bp

# A live token expiring within this many days is marked "expires soon".
EXPIRY_WARNING_DAYS = 14

ROLE_DESCRIPTIONS = {
    Role.ADMIN: "Read and write, with admin rights",
    Role.MEMBER: "Read and write",
    Role.VIEWER: "Read only",
}

# gracePeriodSeconds choices for "Replace token"; those above MAX_GRACE_PERIOD are not offered.
GRACE_CHOICES = (
    (0, "None: the old token stops working now"),
    (5 * 60, "5 minutes"),
    (60 * 60, "1 hour"),
    (6 * 60 * 60, "6 hours"),
    (24 * 60 * 60, "1 day"),
    (7 * 24 * 60 * 60, "7 days"),
    (30 * 24 * 60 * 60, "30 days"),
)


def grace_choices(limit: int) -> list[tuple[int, str]]:
    """The grace periods this server allows."""
    return [(seconds, label) for seconds, label in GRACE_CHOICES if seconds <= limit]


def expiry_state(token: ApiToken | None, now: datetime) -> tuple[str, str]:
    """(css class, words) for a token's state: active, expires soon, expired or revoked."""
    if token is None:
        return "muted", "No token"
    status = token_status(token, now)
    if status == "REVOKED":
        return "bad", "Revoked"
    if status == "EXPIRED":
        return "bad", "Expired"
    if token.revoked_at is not None:
        return "warn", "Stops " + when(token.revoked_at)
    if token.expires_at - now <= timedelta(days=EXPIRY_WARNING_DAYS):
        days = max(0, (token.expires_at - now).days)
        return "warn", "Expires today" if days == 0 else f"Expires in {days} days"
    return "ok", "Active"


def when(moment: datetime | None) -> str:
    """'YYYY-MM-DD HH:MM UTC', or '' for None."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _day(value) -> str:
    """The date part of an ISO 8601 time in a payload."""
    return str(value)[:10] if value else "none"


def _hint(value) -> str:
    return f"…{value}" if value else "a token"


def _changes(before: dict, after: dict) -> str:
    """'Permission: MEMBER → ADMIN; Expiration: 2027-01-01 → 2027-02-01'."""
    parts = []
    for label, key, sub, fmt in (
        ("Description", "description", None, str),
        ("Permission", "permissionRole", None, str),
        ("Expiration", "apiTokenData", "expiry", _day),
        ("Token description", "apiTokenData", "description", str),
        ("Expiration", "expiry", None, _day),
    ):
        old, new = before.get(key), after.get(key)
        if sub is not None:
            old = (old or {}).get(sub)
            new = (new or {}).get(sub)
        if old != new and (old is not None or new is not None):
            parts.append(f"{label}: {fmt(old) or '(empty)'} → {fmt(new) or '(empty)'}")
    return "; ".join(parts) or "No visible change"


def _summary(kind: str, payload: dict) -> str:
    """What one event says, in words."""
    if kind == "TECHNICAL_USER_CREATE":
        token = payload.get("apiToken") or {}
        return (
            f"Created with permission {payload.get('permissionRole')}; token "
            f"{_hint(token.get('hint'))} expires {_day(token.get('expiry'))}"
        )
    if kind in ("TECHNICAL_USER_UPDATE", "APITOKEN_UPDATE"):
        return _changes(payload.get("before") or {}, payload.get("after") or {})
    if kind == "TECHNICAL_USER_DELETE":
        return f"Deleted; {len(payload.get('revokedTokens') or [])} token(s) stopped working"
    if kind == "APITOKEN_CREATE":
        return f"Token {_hint(payload.get('hint'))} created"
    if kind == "APITOKEN_REPLACE":
        old = payload.get("replaced") or {}
        grace = payload.get("gracePeriodSeconds") or 0
        stop = "at once" if not grace else f"after a grace period of {grace} s"
        return (
            f"Token {_hint(old.get('hint'))} replaced by {_hint(payload.get('hint'))}; "
            f"the old one stops {stop}"
        )
    if kind == "APITOKEN_DELETE":
        return f"Token {_hint(payload.get('hint'))} deleted"
    if kind == "ACCESS_TOKEN_GRANT":
        return f"Access token issued, role {payload.get('role')}, scope {payload.get('scope')}"
    if "reason" in payload:
        return f"Reason: {payload['reason']}"
    return ""


@bp.app_template_filter("event_summary")
def event_summary(event: AuditEvent) -> str:
    """A one-line description of an audit event."""
    return _summary(event.type, event.payload or {})


@bp.app_template_filter("pretty_json")
def pretty_json(value) -> str:
    """A payload as indented JSON (never holds a secret: events never do)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@bp.app_template_filter("when")
def format_time(moment: datetime | None) -> str:
    """A time as 'YYYY-MM-DD HH:MM UTC'."""
    return when(moment)
