"""Reading management requests strictly: JSON bodies, query parameters, path ids.

Every refusal is a 400 (415 for a wrong content type) that names the field and
the reason; nothing is written, because parsing happens before any service call.
"""

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import request

from ...errors import UnsupportedMediaType, ValidationError, field_error
from ...services.audit import Origin

JSON_TYPE = "application/json"
DEFAULT_SIZE = 30
MAX_SIZE = 100
MAX_PAGE = 1_000_000  # keeps OFFSET far inside a 64-bit integer on every backend
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
DIGITS = re.compile(r"^[0-9]{1,9}$")  # ASCII only: int() would also take "٣" or " 3"
DATETIME_MAX_CHARS = 40


def origin() -> Origin:
    """The caller's address and user agent, for the audit log."""
    return Origin(ip=request.remote_addr, user_agent=request.user_agent.string)


class FieldErrors:
    """Collect every field's error, then raise them together."""

    def __init__(self) -> None:
        self.errors: list[dict] = []
        self.messages: list[str] = []

    def check(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run one check; on ValidationError keep its errors and return None."""
        try:
            return func(*args)
        except ValidationError as error:
            self.errors.extend(error.errors)
            self.messages.append(error.message)
            return None

    def add(self, field: str, message: str) -> None:
        """Record one error."""
        self.errors.append(field_error(field, message))
        self.messages.append(f"{field} {message}")

    def raise_any(self) -> None:
        """Raise one ValidationError holding every collected error."""
        if self.errors:
            message = self.messages[0] if len(self.messages) == 1 else "The request is invalid"
            raise ValidationError(message, self.errors)


# --- bodies ----------------------------------------------------------------------------


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    """object_pairs_hook: a key given twice is ambiguous, so it is an error."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


class _BadNumber(ValueError):
    """A number JSON cannot carry faithfully."""


def _no_constant(name: str) -> Any:
    """parse_constant: NaN and Infinity are not JSON (RFC 8259)."""
    raise _BadNumber(f"{name} is not allowed in JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _BadNumber("a number is out of range")
    return value


def _invalid_json(reason: str) -> ValidationError:
    return ValidationError(f"Invalid JSON: {reason}", [field_error("body", reason)])


def _check_content_type() -> None:
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if request.mimetype != JSON_TYPE or charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(
            f"Content-Type must be {JSON_TYPE}",
            [field_error("Content-Type", f"must be {JSON_TYPE} (UTF-8)")],
        )


def json_object(required: bool = True) -> dict | None:
    """The request body as a JSON object, parsed strictly; None if optional and absent."""
    if not required and not request.get_data(cache=True):
        return None
    _check_content_type()
    raw = request.get_data(cache=True)  # over MAX_CONTENT_LENGTH: 413 in the envelope
    if not raw.strip():
        if not required:
            return None
        raise _invalid_json("a JSON object is required")
    try:
        text = raw.decode("utf-8")
        data = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except _DuplicateKey as duplicate:
        raise _invalid_json(f"duplicate key {duplicate.key[:100]!r}") from None
    except UnicodeDecodeError:
        raise _invalid_json("the body is not UTF-8") from None
    except json.JSONDecodeError as error:
        raise _invalid_json(f"{error.msg} at line {error.lineno} column {error.colno}") from None
    except _BadNumber as error:
        raise _invalid_json(str(error)) from None
    except ValueError:  # an integer of thousands of digits (int's conversion limit)
        raise _invalid_json("a number has too many digits") from None
    except RecursionError:
        raise _invalid_json("nested too deeply") from None
    if not isinstance(data, dict):
        raise ValidationError(
            "The body must be a JSON object", [field_error("body", "must be a JSON object")]
        )
    return data


def check_fields(
    obj: dict, allowed: set[str], errors: FieldErrors, prefix: str = "", ignored=frozenset()
) -> None:
    """Refuse unknown members (typos would otherwise be silently dropped)."""
    for key in obj:
        if key not in allowed and key not in ignored:
            errors.add(prefix + str(key)[:100], "is not a known field")


def string(obj: dict, key: str, field: str, errors: FieldErrors, required: bool) -> str | None:
    """obj[key] if it is a string; records an error if missing (when required) or not a string."""
    if key not in obj:
        if required:
            errors.add(field, "is required")
        return None
    value = obj[key]
    if not isinstance(value, str):
        errors.add(field, "must be a string")
        return None
    return value


def sub_object(obj: dict, key: str, field: str, errors: FieldErrors, required: bool) -> dict | None:
    """obj[key] if it is an object; records an error if missing (when required) or not an object."""
    if key not in obj:
        if required:
            errors.add(field, "is required")
        return None
    value = obj[key]
    if not isinstance(value, dict):
        errors.add(field, "must be an object")
        return None
    return value


def parse_datetime(value: str, field: str) -> datetime:
    """An ISO 8601 date-time with a time zone (e.g. 2027-01-31T00:00:00Z), as UTC."""
    try:
        if len(value) > DATETIME_MAX_CHARS:
            raise ValueError
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(
            f"{field} is not a date-time",
            [field_error(field, "must be an ISO 8601 date-time such as 2027-01-31T00:00:00Z")],
        ) from None
    if parsed.tzinfo is None:
        raise ValidationError(
            f"{field} needs a time zone",
            [field_error(field, "must be ISO 8601 with a time zone, e.g. ending in Z")],
        )
    return parsed.astimezone(UTC)


# --- query string and path ----------------------------------------------------------------


def query_value(name: str) -> str | None:
    """A query parameter given at most once, or None."""
    values = request.args.getlist(name)
    if len(values) > 1:
        raise ValidationError(f"{name} is repeated", [field_error(name, "must be given once")])
    return values[0] if values else None


def query_int(name: str, default: int, minimum: int, maximum: int) -> int:
    """A whole-number query parameter within bounds."""
    raw = query_value(name)
    if raw is None:
        return default
    if not DIGITS.match(raw) or not minimum <= int(raw) <= maximum:
        raise ValidationError(
            f"{name} is invalid",
            [field_error(name, f"must be a whole number from {minimum} to {maximum}")],
        )
    return int(raw)


def paging() -> tuple[int, int]:
    """(offset, limit) from 1-indexed `page` and `size` (default 30, at most 100)."""
    page = query_int("page", 1, 1, MAX_PAGE)
    size = query_int("size", DEFAULT_SIZE, 1, MAX_SIZE)
    return (page - 1) * size, size


def sort_order(fields: tuple[str, ...], default: str) -> tuple[str, bool]:
    """(field, ascending) from `sort=<field>-ASC|DESC`."""
    raw = query_value("sort") or default
    field, _, direction = raw.rpartition("-")
    if field not in fields or direction.upper() not in ("ASC", "DESC"):
        choices = ", ".join(f"{f}-ASC, {f}-DESC" for f in fields)
        raise ValidationError("sort is invalid", [field_error("sort", f"must be one of {choices}")])
    return field, direction.upper() == "ASC"


def query_text(name: str, max_chars: int) -> str | None:
    """A free-text query parameter: printable, at most `max_chars`; empty means absent."""
    raw = query_value(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_chars or not raw.isprintable():
        raise ValidationError(
            f"{name} is invalid",
            [field_error(name, f"must be at most {max_chars} printable characters")],
        )
    return raw


def query_datetime(name: str) -> datetime | None:
    """An ISO 8601 date-time query parameter with a time zone."""
    raw = query_value(name)
    return None if raw is None else parse_datetime(raw, name)


def path_id(value: str, field: str = "id") -> str:
    """A UUID from the path, in canonical lower case."""
    if not UUID.match(value):
        raise ValidationError(f"{field} is not a UUID", [field_error(field, "must be a UUID")])
    return value.lower()
