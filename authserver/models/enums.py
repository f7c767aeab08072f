"""The closed vocabularies of the domain."""

from enum import StrEnum


class Role(StrEnum):
    """A workspace role; ADMIN > MEMBER > VIEWER, and VIEWER is read-only."""

    ADMIN = "ADMIN"
    MEMBER = "MEMBER"
    VIEWER = "VIEWER"

    @property
    def rank(self) -> int:
        """Higher is more powerful."""
        return {"ADMIN": 3, "MEMBER": 2, "VIEWER": 1}[self.value]

    @property
    def scopes(self) -> tuple[str, ...]:
        """The OAuth scopes this role holds, in canonical order."""
        return ("read",) if self is Role.VIEWER else ("read", "write")


class WorkspaceStatus(StrEnum):
    """Whether a workspace may be used."""

    ACTIVE = "ACTIVE"
    BLOCKED = "BLOCKED"


class Status(StrEnum):
    """The life state of a user or a permission."""

    ACTIVE = "ACTIVE"
    ARCHIVED = "ARCHIVED"


def check_in(column: str, enum: type[StrEnum]) -> str:
    """SQL CHECK text limiting a column to an enum's values."""
    values = ", ".join(f"'{member.value}'" for member in enum)
    return f"{column} IN ({values})"
