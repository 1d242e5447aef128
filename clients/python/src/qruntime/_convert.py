"""Small conversions from protobuf well-known types to Python values, shared by the wrappers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from google.protobuf.message import Message

_Value = TypeVar("_Value", bound=int)


def optional_datetime(message: Message, field: str) -> datetime | None:
    """The Timestamp field ``field`` of ``message`` as an aware UTC datetime, or None when unset."""
    if not message.HasField(field):
        return None
    return getattr(message, field).ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]


def optional_seconds(message: Message, field: str) -> float | None:
    """The Duration field ``field`` of ``message`` in seconds, or None when unset."""
    if not message.HasField(field):
        return None
    return getattr(message, field).ToNanoseconds() / 1e9  # type: ignore[no-any-return]


def enum_label(name_of: Callable[[_Value], str], value: _Value, prefix: str) -> str:
    """A value's name (by the enum's ``Name``) without the enum's prefix; the number if the enum lacks it."""
    try:
        name = name_of(value)
    except ValueError:  # a value added to the contract after this client was built
        return str(value)
    return name.removeprefix(prefix)
