"""Accounts, workspaces and human users (bootstrap and the CLI)."""

import re

from sqlalchemy import select

from ..errors import NotFound, ValidationError, field_error
from ..extensions import db
from ..models import Account, Permission, Role, Status, User, Workspace
from .audit import Actor, EventType, Target, record_event

WORKSPACE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def check_workspace_name(name: str) -> str:
    """URL-safe: letters, digits, - and _, 1 to 64 characters, starting with a letter or digit."""
    if not WORKSPACE_NAME.match(name or ""):
        raise ValidationError(
            "Invalid workspace name",
            [
                field_error(
                    "name", "use 1-64 letters, digits, - or _, starting with a letter or digit"
                )
            ],
        )
    return name


def check_email(email: str) -> str:
    """A plausible email address, lower-cased."""
    if not EMAIL.match(email or "") or len(email) > 254:
        raise ValidationError("Invalid email", [field_error("email", "must be an email address")])
    return email.lower()


def find_workspace(name: str) -> Workspace:
    """The workspace with this name, or NotFound."""
    workspace = db.session.execute(select(Workspace).where(Workspace.name == name)).scalar()
    if workspace is None:
        raise NotFound(f"No workspace named {name!r}")
    return workspace


def get_or_create_workspace(name: str, account_name: str | None = None) -> tuple[Workspace, bool]:
    """The workspace with this name, created (with its account) if missing."""
    name = check_workspace_name(name)
    workspace = db.session.execute(select(Workspace).where(Workspace.name == name)).scalar()
    if workspace is not None:
        return workspace, False
    account = Account(name=account_name or name)
    db.session.add(account)
    db.session.flush()
    workspace = Workspace(name=name, account_id=account.id)
    db.session.add(workspace)
    db.session.flush()
    return workspace, True


def get_or_create_user(email: str, account_id: str | None = None) -> tuple[User, bool]:
    """The user with this email, created if missing."""
    email = check_email(email)
    user = db.session.execute(select(User).where(User.user_name == email)).scalar()
    if user is not None:
        return user, False
    user = User(user_name=email, display_name=email.split("@")[0], account_id=account_id)
    db.session.add(user)
    db.session.flush()
    return user, True


def grant_permission(
    user: User, workspace: Workspace, role: Role, *, actor: Actor | None = None
) -> Permission:
    """Give the user this role in the workspace (ACTIVE), creating or updating the permission.

    With an `actor`, a change (not a no-op) is audited as PERMISSION_UPDATE.
    """
    permission = db.session.execute(
        select(Permission).where(
            Permission.user_id == user.id, Permission.workspace_id == workspace.id
        )
    ).scalar()
    before = None if permission is None else {"role": permission.role, "status": permission.status}
    if permission is None:
        permission = Permission(user_id=user.id, workspace_id=workspace.id, role=role.value)
        db.session.add(permission)
    else:
        permission.role = role.value
        permission.status = Status.ACTIVE.value
    db.session.flush()
    after = {"role": permission.role, "status": permission.status}
    if actor is not None and before != after:
        record_event(
            EventType.PERMISSION_UPDATE,
            workspace=(workspace.id, workspace.name),
            actor=actor,
            target=Target(type="USER", id=user.id, name=user.user_name),
            payload={"permissionId": permission.id, "before": before, "after": after},
        )
    return permission


def first_workspace() -> Workspace | None:
    """Any workspace, to tell a fresh install from an initialised one."""
    return db.session.execute(select(Workspace).limit(1)).scalar()
