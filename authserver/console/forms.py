"""Reading console forms: each field checked by the services' own rules, errors in plain words.

A form collects one message per field (shown next to it) and a view calls a
service only when the form has none, so nothing is saved when a form is
invalid. Errors a service raises while acting (a name already taken, a token
that expired meanwhile) are mapped back onto the fields the same way.
"""

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask import abort, current_app
from werkzeug.datastructures import MultiDict

from ..errors import ApiError, ValidationError

DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
# A token with expiration date D works through the end of D, in UTC.
END_OF_DAY = time(23, 59, 59, tzinfo=UTC)
# Service field names (the API's) -> console field names.
FIELD_NAMES = {
    "userName": "name",
    "permissionRole": "role",
    "apiTokenData.expiry": "expiry",
    "apiTokenData.description": "description",
    "gracePeriodSeconds": "grace",
}


class Form:
    """The submitted values of one form and the error found in each field."""

    def __init__(self, data: MultiDict, labels: dict[str, str]):
        self.data = data
        self.labels = labels
        self.errors: dict[str, str] = {}
        self.general: list[str] = []

    @property
    def valid(self) -> bool:
        """True if no field has an error."""
        return not self.errors and not self.general

    def value(self, name: str) -> str:
        """The submitted text of a field ("" if absent), as typed."""
        return self.data.get(name, "")

    def error(self, name: str, message: str) -> None:
        """Record a field's first error as a sentence: '<Label> <message>.'"""
        if name not in self.errors:
            label = self.labels.get(name, name.capitalize())
            self.errors[name] = f"{label} {message.rstrip('.')}."

    def check(self, name: str, rule: Callable[..., Any], *args: Any) -> Any:
        """Apply one service rule to a field; on ValidationError keep its message, return None."""
        try:
            return rule(*args)
        except ValidationError as refused:
            self.error(name, _first_message(refused))
            return None

    def take(self, refused: ApiError) -> None:
        """Put the errors of a refused service call next to their fields."""
        if not refused.errors:
            self.general.append(refused.message)
        for item in refused.errors:
            name = FIELD_NAMES.get(item["value"], item["value"])
            message = "; ".join(item["messages"])
            if name in self.labels:
                self.error(name, message)
            else:
                self.general.append(refused.message)


def _first_message(refused: ValidationError) -> str:
    if refused.errors and refused.errors[0]["messages"]:
        return refused.errors[0]["messages"][0]
    return refused.message


def parse_date(form: Form, name: str, required: bool) -> date | None:
    """A YYYY-MM-DD date field (what <input type=date> sends)."""
    raw = form.value(name).strip()
    if not raw:
        if required:
            form.error(name, "is required")
        return None
    try:
        if not DATE.match(raw):
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        form.error(name, "must be a date such as 2027-01-31")
        return None


def end_of(day: date) -> datetime:
    """The last second of a UTC day: when a token with this expiration date stops working."""
    return datetime.combine(day, END_OF_DAY)


def start_of(day: date) -> datetime:
    """Midnight UTC at the start of a day."""
    return datetime.combine(day, time(0, tzinfo=UTC))


def expiry_bounds(now: datetime) -> tuple[date, date]:
    """The first and last expiration dates MAX_TOKEN_LIFETIME allows, for the date picker."""
    latest = now + timedelta(seconds=current_app.config["MAX_TOKEN_LIFETIME"])
    last = (latest - timedelta(hours=23, minutes=59, seconds=59)).date()
    return now.date(), last


def default_expiry(now: datetime, days: int = 90) -> str:
    """The expiration date a new token form starts with: in `days` days, or the latest allowed."""
    return min((now + timedelta(days=days)).date(), expiry_bounds(now)[1]).isoformat()


def parse_whole_number(form: Form, name: str, default: int) -> int | None:
    """A non-negative whole number field; blank means the default."""
    raw = form.value(name).strip()
    if not raw:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        form.error(name, "must be a whole number such as 0 or 60")
        return None
    return int(raw)


# --- the query string and the path ---------------------------------------------------------

UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MAX_PAGE = 1_000_000


def page_number(args: MultiDict) -> int:
    """The 1-based `page` of a list; anything unreadable is page 1."""
    raw = args.get("page", "1")
    if raw.isascii() and raw.isdigit() and len(raw) <= 7 and 1 <= int(raw) <= MAX_PAGE:
        return int(raw)
    return 1


def uuid_or_404(value: str) -> str:
    """A UUID from the path, lower case; anything else is simply not found."""
    if not UUID.match(value):
        abort(404)
    return value.lower()
