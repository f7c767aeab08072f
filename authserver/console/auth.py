"""Who is signed in to the console, who may enter, and the sign-in rate limit.

Only an ACTIVE user with an ACTIVE ADMIN permission in an ACTIVE workspace
enters; `Permission.is_active_admin` is the same rule the token exchange and
the management API apply. The session holds ids only, never a secret:

- `uid`: the user; `ws`: the workspace chosen (an admin of several picks one);
- `pwf`: a fingerprint of the password hash, so setting a new password signs
  out every session made with the old one;
- `iat`: when the user signed in; a session ends CONSOLE_SESSION_LIFETIME later.
"""

import hashlib
import time
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app, g, session
from sqlalchemy import func, or_, select

from ..extensions import db
from ..models import AuditEvent, Permission, Status, User, Workspace, WorkspaceStatus
from ..models.types import utcnow
from ..services.audit import Actor, EventType, Origin, Target, record_event
from ..services.workspaces import EMAIL
from . import csrf

UID, WORKSPACE, FINGERPRINT, SIGNED_IN_AT = "uid", "ws", "pwf", "iat"


@dataclass(frozen=True)
class ConsoleAdmin:
    """The signed-in ADMIN and the workspace they are working in."""

    user: User
    workspace: Workspace
    permission: Permission

    @property
    def actor(self) -> Actor:
        """The admin as an audit actor, exactly as the management API records them."""
        return Actor(id=self.user.id, user_name=self.user.user_name, technical_user=False)


def password_fingerprint(user: User) -> str:
    """A short digest of the password hash (the hash itself never leaves the database)."""
    return hashlib.sha256((user.password_hash or "").encode()).hexdigest()[:16]


def permissions_of(user: User) -> list[tuple[Permission, Workspace]]:
    """Every permission the user holds, with its workspace, by workspace name."""
    query = (
        select(Permission, Workspace)
        .join(Workspace, Workspace.id == Permission.workspace_id)
        .where(Permission.user_id == user.id)
        .order_by(Workspace.name)
    )
    return [(row[0], row[1]) for row in db.session.execute(query)]


def admin_workspaces(user: User) -> list[tuple[Permission, Workspace]]:
    """The workspaces in which the user may enter the console."""
    return [
        (permission, workspace)
        for permission, workspace in permissions_of(user)
        if permission.is_active_admin and workspace.status == WorkspaceStatus.ACTIVE
    ]


def start_session(user: User) -> None:
    """A fresh session for the user (nothing from before sign-in survives)."""
    session.clear()
    session.permanent = True
    session[UID] = user.id
    session[FINGERPRINT] = password_fingerprint(user)
    session[SIGNED_IN_AT] = int(time.time())
    csrf.rotate()


def end_session() -> None:
    """Forget the user; keep a CSRF token so the sign-in form works at once."""
    session.clear()
    csrf.rotate()


def session_user() -> User | None:
    """The signed-in, ACTIVE user whose password has not changed and whose sign-in is fresh."""
    user_id = session.get(UID)
    if not user_id:
        return None
    age = time.time() - session.get(SIGNED_IN_AT, 0)
    if age > current_app.config["CONSOLE_SESSION_LIFETIME"]:
        return None
    user = db.session.get(User, user_id)
    if user is None or user.status != Status.ACTIVE:
        return None
    if session.get(FINGERPRINT) != password_fingerprint(user):
        return None
    return user


def enter_workspace(user: User, workspace_id: str | None) -> ConsoleAdmin | None:
    """The user as ADMIN of this workspace, or None if they are not (or no longer) one."""
    for permission, workspace in admin_workspaces(user):
        if workspace.id == workspace_id:
            return ConsoleAdmin(user=user, workspace=workspace, permission=permission)
    return None


def current_admin() -> ConsoleAdmin:
    """The admin of this request (set by the blueprint's before_request hook)."""
    return g.console_admin


# --- auditing and rate limiting sign-ins ---------------------------------------------------


def _user_target(user: User | None, email: str | None) -> Target:
    return Target(type="USER", id=user.id if user else None, name=user.user_name if user else email)


def loggable_email(text: str) -> str | None:
    """The attempted email, if it looks like one; anything else may be a mistyped password."""
    text = text.strip().lower()
    return text if EMAIL.match(text) and len(text) <= 254 else None


def record_login_denied(email: str, user: User | None, reason: str, origin: Origin) -> None:
    """CONSOLE_LOGIN_DENY with the true reason; the page only says what the user may know."""
    name = user.user_name if user else loggable_email(email)
    record_event(
        EventType.CONSOLE_LOGIN_DENY,
        workspace=None,  # a sign-in names no workspace; the event is in the global chain
        actor=Actor(id=user.id if user else None, user_name=name, technical_user=False),
        target=_user_target(user, name),
        origin=origin,
        payload={"reason": reason, "method": "password"},
    )


def record_login(admin: ConsoleAdmin, origin: Origin) -> None:
    """CONSOLE_LOGIN in the workspace the admin entered."""
    record_event(
        EventType.CONSOLE_LOGIN,
        workspace=(admin.workspace.id, admin.workspace.name),
        actor=admin.actor,
        target=_user_target(admin.user, None),
        origin=origin,
        payload={"method": "password"},
    )


def record_logout(admin: ConsoleAdmin, origin: Origin) -> None:
    """CONSOLE_LOGOUT in the admin's workspace."""
    record_event(
        EventType.CONSOLE_LOGOUT,
        workspace=(admin.workspace.id, admin.workspace.name),
        actor=admin.actor,
        target=_user_target(admin.user, None),
        origin=origin,
        payload={},
    )


def login_retry_after(email: str, ip: str | None) -> int | None:
    """Seconds to wait if this email or address had too many refused sign-ins lately, else None.

    The one place the sign-in rate limit lives. It counts CONSOLE_LOGIN_DENY
    events of the last CONSOLE_LOGIN_WINDOW seconds in the database, so every
    worker and instance shares the count; refusals for the limit itself count
    too, so a client that keeps trying stays refused.
    """
    config = current_app.config
    window = config["CONSOLE_LOGIN_WINDOW"]
    name = loggable_email(email)
    conditions = {}
    if name:
        conditions["email"] = (AuditEvent.actor_user_name == name, "CONSOLE_LOGIN_ATTEMPTS")
    if ip:
        conditions["ip"] = (AuditEvent.ip == ip, "CONSOLE_LOGIN_ATTEMPTS_PER_IP")
    if not conditions:
        return None
    query = select(*(func.count().filter(condition) for condition, _ in conditions.values())).where(
        AuditEvent.workspace_id.is_(None),
        AuditEvent.created_at >= utcnow() - timedelta(seconds=window),
        AuditEvent.type == EventType.CONSOLE_LOGIN_DENY.value,
        or_(*(condition for condition, _ in conditions.values())),
    )
    counts = db.session.execute(query).one()
    limits = [config[setting] for _, setting in conditions.values()]
    if any(count >= limit for count, limit in zip(counts, limits, strict=True)):
        return window
    return None
