"""Programs as the service keeps them, and who may see, read and change them.

Plain values with no gRPC in them: the store reads and writes these, the servicer translates them
to and from the wire. Enum values are the proto enum names without their prefix ("PUBLIC", not
"VISIBILITY_PUBLIC"), which is also how they are stored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum

from qruntime_kit.auth import Principal

# The longest max_execution_time a program may declare; a backend's own limit may cap it further.
MAX_EXECUTION_SECONDS = 8 * 60 * 60


class Visibility(enum.StrEnum):
    """Who may see and run a program."""

    PRIVATE = "PRIVATE"
    PUBLIC = "PUBLIC"


class Runtime(enum.StrEnum):
    """How the jobs service runs a program."""

    BUILTIN = "BUILTIN"
    PYTHON = "PYTHON"


class InputType(enum.StrEnum):
    """The JSON type a program input must have; UNSPECIFIED accepts any value."""

    UNSPECIFIED = "UNSPECIFIED"
    STRING = "STRING"
    INTEGER = "INTEGER"
    NUMBER = "NUMBER"
    BOOLEAN = "BOOLEAN"
    ARRAY = "ARRAY"
    OBJECT = "OBJECT"
    CIRCUITS = "CIRCUITS"


@dataclasses.dataclass(frozen=True)
class ProgramInput:
    """One input a program declares."""

    name: str
    type: InputType = InputType.UNSPECIFIED
    required: bool = False
    description: str = ""


@dataclasses.dataclass(frozen=True)
class Program:
    """A program at one of its versions: code with declared inputs and a time limit, owned by an
    instance or built in."""

    id: str
    name: str
    description: str = ""
    inputs: tuple[ProgramInput, ...] = ()
    max_execution_seconds: int = 300
    visibility: Visibility = Visibility.PRIVATE
    runtime: Runtime = Runtime.PYTHON
    owner_instance: str = ""  # empty for built-ins
    data: str = ""  # Python source of PYTHON programs
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None  # when this version was made
    version: int = 1  # 1 at creation, one more per update that changes anything; built-ins stay at 1

    @property
    def is_builtin(self) -> bool:
        return self.runtime == Runtime.BUILTIN

    def owned_by(self, principal: Principal) -> bool:
        """Whether the principal's instance owns the program (built-ins have no owner)."""
        return bool(self.owner_instance) and self.owner_instance == principal.instance_crn

    def visible_to(self, principal: Principal) -> bool:
        """Public programs are seen by all, private ones by their owner; services see everything."""
        return principal.is_service or self.visibility == Visibility.PUBLIC or self.owned_by(principal)

    def source_visible_to(self, principal: Principal) -> bool:
        """The source goes to the owner, and to services: the jobs service runs it for every user."""
        return principal.is_service or self.owned_by(principal)
