"""The one place audit events are recorded.

`record_event` inserts the event through the current session, so it commits or
rolls back with the change it records. Once the transaction commits, the events
it carried go to the configured sinks (see `authserver.audit_sinks`).
"""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..database import DirectStatement
from ..extensions import db
from ..models import AuditEvent
from ..models.types import utcnow

PENDING_KEY = "audit_pending"


class EventType(StrEnum):
    """Every kind of audit event (MTM names)."""

    TECHNICAL_USER_CREATE = "TECHNICAL_USER_CREATE"
    TECHNICAL_USER_UPDATE = "TECHNICAL_USER_UPDATE"
    TECHNICAL_USER_DELETE = "TECHNICAL_USER_DELETE"
    APITOKEN_CREATE = "APITOKEN_CREATE"
    APITOKEN_UPDATE = "APITOKEN_UPDATE"
    APITOKEN_REPLACE = "APITOKEN_REPLACE"
    APITOKEN_DELETE = "APITOKEN_DELETE"
    ACCESS_TOKEN_GRANT = "ACCESS_TOKEN_GRANT"
    ACCESS_TOKEN_DENY = "ACCESS_TOKEN_DENY"
    ACCESS_TOKEN_REVOKE = "ACCESS_TOKEN_REVOKE"
    SIGNING_KEY_ROTATE = "SIGNING_KEY_ROTATE"
    MANAGEMENT_ACCESS_DENY = "MANAGEMENT_ACCESS_DENY"
    # The admin console (authserver.console): sign-in, its refusals, sign-out, passwords.
    CONSOLE_LOGIN = "CONSOLE_LOGIN"
    CONSOLE_LOGIN_DENY = "CONSOLE_LOGIN_DENY"
    CONSOLE_LOGOUT = "CONSOLE_LOGOUT"
    USER_PASSWORD_SET = "USER_PASSWORD_SET"
    # Not in the MTM list: a human's role in a workspace decides whether their personal
    # tokens work and what they grant, so its changes (CLI only today) are audited too.
    PERMISSION_UPDATE = "PERMISSION_UPDATE"


@dataclass(frozen=True)
class Actor:
    """Who acted: a user, a technical user, or the command line."""

    id: str | None
    user_name: str | None
    technical_user: bool | None = None


CLI_ACTOR = Actor(id="cli", user_name="authserver-cli", technical_user=False)


@dataclass(frozen=True)
class Target:
    """What was acted on."""

    type: str
    id: str | None
    name: str | None = None


@dataclass(frozen=True)
class Origin:
    """Where a request came from; empty for the command line."""

    ip: str | None = None
    user_agent: str | None = None


NO_ORIGIN = Origin()


def record_event(
    event_type: EventType,
    *,
    workspace: tuple[str, str] | None,
    actor: Actor | None,
    target: Target | None,
    origin: Origin = NO_ORIGIN,
    payload: dict[str, Any] | None = None,
) -> int:
    """Insert one audit event in the current transaction and return its id.

    A single INSERT, run straight on the driver's connection (no unit-of-work
    bookkeeping, see `DirectStatement`): this runs on every grant. Never pass
    a secret in the payload.
    """
    values = {
        "type": event_type.value,
        "created_at": utcnow(),
        "workspace_id": workspace[0] if workspace else None,
        "workspace_name": workspace[1] if workspace else None,
        "actor_id": actor.id if actor else None,
        "actor_user_name": actor.user_name if actor else None,
        "actor_technical": actor.technical_user if actor else None,
        "target_type": target.type if target else None,
        "target_id": target.id if target else None,
        "target_name": target.name if target else None,
        "ip": origin.ip,
        "user_agent": origin.user_agent[:512] if origin.user_agent else None,
        "payload": payload or {},
    }
    event_id = _INSERT.execute(db.session.connection(), values).fetchone()[0]
    values["id"] = event_id
    db.session.info.setdefault(PENDING_KEY, []).append(event_to_dict(values))
    return event_id


# Every grant runs it: straight on the driver (see DirectStatement). The id is generated
# and the chain columns are set by the sealer.
_TABLE = AuditEvent.__table__
_GENERATED = ("id", "chain_hash", "chain_seq")
_INSERT = DirectStatement(
    _TABLE.insert().returning(_TABLE.c.id),
    [column.key for column in _TABLE.columns if column.key not in _GENERATED],
)


def event_to_dict(event: AuditEvent | dict) -> dict[str, Any]:
    """The wire shape of an event (DESIGN section 6), from a row or a dict of its columns."""
    get = event.get if isinstance(event, dict) else lambda name: getattr(event, name)
    return {
        "id": get("id"),
        "type": get("type"),
        "createdAt": get("created_at").isoformat().replace("+00:00", "Z"),
        "actor": {
            "id": get("actor_id"),
            "userName": get("actor_user_name"),
            "technicalUser": get("actor_technical"),
        },
        "workspace": {"id": get("workspace_id"), "name": get("workspace_name")},
        "target": {"type": get("target_type"), "id": get("target_id"), "name": get("target_name")},
        "ip": get("ip"),
        "userAgent": get("user_agent"),
        "payload": get("payload"),
    }
