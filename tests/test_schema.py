"""The schema: built only by migrations, identical to the models, rules enforced by the database."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError

from authserver.extensions import db
from authserver.models import ApiToken, TechnicalUser

from .conftest import in_days


def test_migrations_match_the_models(app):
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, db.metadata)
    assert diff == []


def _token(workspace, **owner):
    return ApiToken(
        workspace_id=workspace.id,
        secret_sha256=str(len(owner)) * 64,
        hint="abcd",
        expires_at=in_days(1),
        **owner,
    )


@pytest.mark.parametrize("owners", ["none", "both"])
def test_an_api_token_has_exactly_one_owner(app, factory, owners):
    workspace = factory.workspace()
    user = factory.user(workspace)
    technical_user, _, _ = factory.technical_user(workspace)
    owner = {} if owners == "none" else {"user_id": user.id, "technical_user_id": technical_user.id}
    db.session.add(_token(workspace, **owner))
    with pytest.raises(IntegrityError):
        db.session.flush()
    db.session.rollback()


def test_token_digests_are_unique(app, factory):
    workspace = factory.workspace()
    user = factory.user(workspace)
    db.session.add(_token(workspace, user_id=user.id))
    db.session.add(_token(workspace, user_id=user.id))
    with pytest.raises(IntegrityError):
        db.session.flush()
    db.session.rollback()


def test_live_technical_user_names_are_unique_but_deleted_ones_free_the_name(app, factory):
    from authserver.models.types import utcnow

    workspace = factory.workspace()
    first, _, _ = factory.technical_user(workspace, name="sync")
    db.session.add(
        TechnicalUser(workspace_id=workspace.id, user_name="sync", permission_role="VIEWER")
    )
    with pytest.raises(IntegrityError):
        db.session.flush()
    db.session.rollback()
    db.session.get(TechnicalUser, first.id).deleted_at = utcnow()
    db.session.commit()
    db.session.add(
        TechnicalUser(workspace_id=workspace.id, user_name="sync", permission_role="VIEWER")
    )
    db.session.commit()


def test_roles_are_checked_by_the_database(app, factory):
    workspace = factory.workspace()
    db.session.add(TechnicalUser(workspace_id=workspace.id, user_name="x", permission_role="OWNER"))
    with pytest.raises(IntegrityError):
        db.session.flush()
    db.session.rollback()
