"""Resolving an API token to the principal it acts for (the hot path of every grant)."""

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, bindparam, select, update

from ..database import DirectStatement, read_only_connection
from ..extensions import db
from ..models import (
    Account,
    ApiToken,
    Permission,
    Role,
    Status,
    TechnicalUser,
    User,
    Workspace,
    WorkspaceStatus,
)
from .audit import Actor, Target


class CredentialRefused(Exception):
    """The API token may not be used; `reason` is for the audit log, never the client."""

    def __init__(self, reason: str, principal: "Principal | None" = None):
        super().__init__(reason)
        self.reason = reason
        self.principal = principal


@dataclass(frozen=True)
class Principal:
    """Who an API token acts for, with everything the access token will say."""

    token_id: str
    token_hint: str
    workspace_id: str
    workspace_name: str
    account_id: str
    account_name: str
    subject_id: str
    user_name: str
    technical_user: bool
    role: Role
    permission_id: str
    last_used_at: datetime | None

    @property
    def scopes(self) -> tuple[str, ...]:
        """The scopes the principal holds: VIEWER reads, the rest read and write."""
        return self.role.scopes

    @property
    def actor(self) -> Actor:
        """The principal as an audit actor."""
        return Actor(
            id=self.subject_id, user_name=self.user_name, technical_user=self.technical_user
        )

    @property
    def workspace(self) -> tuple[str, str]:
        """(id, name) of the principal's workspace."""
        return (self.workspace_id, self.workspace_name)

    @property
    def token_target(self) -> Target:
        """The API token as an audit target."""
        return Target(type="API_TOKEN", id=self.token_id, name=self.user_name)


# One round trip: the token, its workspace and account, and whichever owner it has.
_OWNER_QUERY = (
    select(
        ApiToken.id,
        ApiToken.hint,
        ApiToken.expires_at,
        ApiToken.revoked_at,
        ApiToken.last_used_at,
        Workspace.id.label("workspace_id"),
        Workspace.name.label("workspace_name"),
        Workspace.status.label("workspace_status"),
        Account.id.label("account_id"),
        Account.name.label("account_name"),
        TechnicalUser.id.label("tu_id"),
        TechnicalUser.user_name.label("tu_user_name"),
        TechnicalUser.permission_role.label("tu_role"),
        TechnicalUser.deleted_at.label("tu_deleted_at"),
        User.id.label("user_id"),
        User.user_name.label("user_user_name"),
        User.status.label("user_status"),
        Permission.id.label("permission_id"),
        Permission.role.label("permission_role"),
        Permission.status.label("permission_status"),
    )
    .join(Workspace, Workspace.id == ApiToken.workspace_id)
    .join(Account, Account.id == Workspace.account_id)
    .outerjoin(TechnicalUser, TechnicalUser.id == ApiToken.technical_user_id)
    .outerjoin(User, User.id == ApiToken.user_id)
    .outerjoin(
        Permission,
        and_(Permission.user_id == User.id, Permission.workspace_id == ApiToken.workspace_id),
    )
)


def resolve_principal(sha256: str, now: datetime, *, lock: bool = False) -> Principal:
    """Find the live principal behind a token digest, or raise CredentialRefused with the reason.

    `lock` (the grant) first takes a KEY SHARE lock on the API token row, held
    until the transaction ends, then reads the principal. A grant and a
    deletion, replacement or revocation of its token are thereby serialised
    (on PostgreSQL; SQLite serialises every writer anyway):

    - those writers lock the token row FOR UPDATE before they cut it off, which
      waits for every grant holding the row: such a grant commits, with its
      ACCESS_TOKEN_GRANT event, before the change does;
    - a grant that comes while a writer holds the row waits for it, then reads
      the row as the writer committed it and is refused.

    Without the lock, a grant could read the token just before a deletion
    commits and record its grant just after: an access token issued after the
    admin was told the credential is gone. KEY SHARE is the weakest lock that
    conflicts with FOR UPDATE, so grants of one token do not wait for each
    other nor for a `last_used_at` update (a no-key UPDATE). It is taken by a
    statement of its own, before the read: a KEY SHARE lock that had to wait
    for a writer's no-key UPDATE is granted on the row version it first saw,
    so a read in the same statement would return the values from before the
    writer's commit. For the same reason the clock is read again once the lock
    is held: a writer that held the row cut the token off at a time it took
    after locking, which may be later than `now`. The cost (one indexed
    statement) is in docs/reliability.md.

    SQLite has no row locks, and a transaction there holds the one write lock
    from BEGIN to COMMIT; a grant that read under it would hold every other
    writer back while it signs and answers. So on SQLite the grant reads on a
    read-only connection (no lock) and `confirm_principal` reads again, under
    the write lock, just before the grant is recorded.
    """
    if lock and db.session.get_bind().dialect.name == "sqlite":
        with read_only_connection() as connection:
            row = connection.execute(_BY_DIGEST, {"value": sha256}).first()
        return _live_principal(row, now)
    connection = db.session.connection()
    if lock:
        connection.execute(_LOCK_BY_DIGEST, {"value": sha256})
        # The wait for the row may have been for a writer that cut the token off at a
        # time later than `now`.
        now = max(now, datetime.now(UTC))
    return _live_principal(_owner_row(_BY_DIGEST, sha256), now)


def confirm_principal(principal: Principal) -> Principal:
    """Before a grant is recorded: the principal it was read as is still live and unchanged.

    On SQLite (see `resolve_principal`) the token is read again under the write
    lock, which the grant then holds until it commits: a deletion, revocation
    or role change that committed since the first read refuses the grant
    (CredentialRefused with the reason, or "changed_during_grant"). On
    PostgreSQL the KEY SHARE lock taken by the first read already holds the
    row, and this does nothing. The read under the lock is the owner query
    run straight on the driver (`DirectStatement`): the same row, in a
    fraction of the time a Core execution takes.
    """
    if db.session.get_bind().dialect.name != "sqlite":
        return principal
    row = _DIRECT_BY_ID.first(db.session.connection(), {"value": principal.token_id})
    current = _live_principal(row, datetime.now(UTC))
    if replace(current, last_used_at=principal.last_used_at) != principal:
        raise CredentialRefused("changed_during_grant", current)
    return current


def resolve_principal_by_token_id(token_id: str, now: datetime) -> Principal:
    """The live principal behind an API token id (an access token's `client_id`), or refuse.

    Used wherever an access token is accepted, so that a revoked, expired or
    deleted API token, or a demoted owner, stops working at once, not at `exp`.
    """
    return _live_principal(_owner_row(_BY_ID, token_id), now)


# Built once, so SQLAlchemy computes each statement's cache key once per process.
_BY_DIGEST = _OWNER_QUERY.where(ApiToken.secret_sha256 == bindparam("value"))
_LOCK_BY_DIGEST = (
    select(ApiToken.id)
    .where(ApiToken.secret_sha256 == bindparam("value"))
    .with_for_update(read=True, key_share=True)
)
_BY_ID = _OWNER_QUERY.where(ApiToken.id == bindparam("value"))
_DIRECT_BY_ID = DirectStatement(_BY_ID)


def _owner_row(statement, value: str):
    """Run an owner query on the session's connection (Core: this is the hot path)."""
    return db.session.connection().execute(statement, {"value": value}).first()


def _live_principal(row, now: datetime) -> Principal:
    """Apply every liveness rule to an owner row."""
    if row is None:
        raise CredentialRefused("unknown_token")
    principal = _principal_from_row(row)
    if row.workspace_status != WorkspaceStatus.ACTIVE:
        raise CredentialRefused("workspace_blocked", principal)
    if row.expires_at <= now:
        raise CredentialRefused("token_expired", principal)
    if row.revoked_at is not None and row.revoked_at <= now:
        raise CredentialRefused("token_revoked", principal)
    if row.tu_id is not None:
        if row.tu_deleted_at is not None:
            raise CredentialRefused("technical_user_deleted", principal)
    elif row.user_status != Status.ACTIVE:
        raise CredentialRefused("owner_not_active", principal)
    elif row.permission_status != Status.ACTIVE or row.permission_role != Role.ADMIN:
        # A personal token is ADMIN-level; its owner must still be an ACTIVE ADMIN.
        raise CredentialRefused("owner_not_admin", principal)
    return principal


def _principal_from_row(row) -> Principal:
    technical = row.tu_id is not None
    return Principal(
        token_id=row.id,
        token_hint=row.hint,
        workspace_id=row.workspace_id,
        workspace_name=row.workspace_name,
        account_id=row.account_id,
        account_name=row.account_name,
        subject_id=row.tu_id if technical else row.user_id,
        user_name=row.tu_user_name if technical else row.user_user_name,
        technical_user=technical,
        role=Role(row.tu_role) if technical else Role.ADMIN,
        # A technical user's permission is its own row; its id stands for the permission.
        permission_id=row.tu_id if technical else (row.permission_id or ""),
        last_used_at=row.last_used_at,
    )


def note_use(principal: Principal, ip: str | None, now: datetime, interval: int) -> None:
    """Record the token's last use, at most once per `interval` seconds; never wait for it.

    The row is taken with SKIP LOCKED: if another transaction is writing it (a
    concurrent grant noting the same use, or a deletion), this use goes
    unnoted rather than waited for. A grant holding the row's KEY SHARE lock
    that waited here could deadlock with a deletion queued for the row.
    """
    last = principal.last_used_at
    if last is not None and now - last < timedelta(seconds=interval):
        return
    db.session.execute(_NOTE_USE, {"token_id": principal.token_id, "now": now, "ip": ip})


_NOTE_USE = (
    update(ApiToken)
    .where(
        ApiToken.id.in_(
            select(ApiToken.id)
            .where(ApiToken.id == bindparam("token_id"))
            .with_for_update(key_share=True, skip_locked=True)
        )
    )
    .values(last_used_at=bindparam("now"), last_used_ip=bindparam("ip"))
    .execution_options(synchronize_session=False)
)
