"""The cheap checks on a program as a caller sends it, run in the servicer before anything else.

Sizes first (size_violations): a field past its cap is refused before anything else looks at it, so a
huge upload costs a length check and nothing more. Then the rest (program_violations) returns field
violations (path, what is wrong) instead of stopping at the first, so one InvalidArgument tells the
caller everything to fix. Compiling the source is not cheap and is not done here: source_check.py
does it in a worker process.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence

from google.protobuf import field_mask_pb2
from qruntime.programs.v1 import program_pb2

from qruntime_kit.errors import FieldViolation, InvalidArgument

from .model import MAX_EXECUTION_SECONDS

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# main(backend, user_messenger, **inputs) takes these itself, so no input may be called so.
RESERVED_INPUT_NAMES = frozenset({"backend", "user_messenger"})
# The fields UpdateProgram may change, as update_mask paths. "name" is the display name only: the id
# ("<name>-<suffix>", fixed at creation) does not change with it.
UPDATABLE_PATHS = ("name", "description", "visibility", "data", "inputs", "max_execution_time")
# The fields CreateProgram checks.
CREATE_FIELDS = ("name", "description", "runtime", "visibility", "data", "inputs", "max_execution_time")

_VISIBILITIES = frozenset(program_pb2.Visibility.values())
_UPLOADABLE_RUNTIMES = (program_pb2.PROGRAM_RUNTIME_UNSPECIFIED, program_pb2.PROGRAM_RUNTIME_PYTHON)
_NOT_IDENTIFIER = "must be a Python identifier: letters, digits and underscores, not starting with a digit"
_INPUT_TYPES = frozenset(program_pb2.InputType.values())

# Caps, in bytes of UTF-8 (documented in program.proto). A 1 MiB source is a very large program;
# the caps keep one upload's check (and every later read of it) cheap.
KiB, MiB = 1024, 1024 * 1024
MAX_DATA_BYTES = 1 * MiB
MAX_DESCRIPTION_BYTES = 4 * KiB
MAX_INPUTS = 100
MAX_INPUT_NAME_BYTES = 64
MAX_INPUT_DESCRIPTION_BYTES = 1 * KiB
MAX_ID_LENGTH = 80  # the store's id column; no longer id can exist


def invalid_program(violations: Sequence[FieldViolation]) -> InvalidArgument:
    """The one error for a program that is not valid: INVALID_PROGRAM with every violation."""
    summary = "; ".join(f"{path}: {what}" for path, what in violations)
    return InvalidArgument(f"the program is not valid: {summary}", reason="INVALID_PROGRAM",
                           field_violations=violations)


def check_sizes(program: program_pb2.Program, fields: Collection[str], prefix: str = "program") -> None:
    """Raise InvalidArgument INVALID_PROGRAM naming every field of the named ones past its cap."""
    violations = size_violations(program, fields, prefix)
    if violations:
        raise invalid_program(violations)


def size_violations(
    program: program_pb2.Program, fields: Collection[str], prefix: str = "program"
) -> list[FieldViolation]:
    """One violation per field past its cap, naming the cap."""
    violations: list[FieldViolation] = []
    if "data" in fields:
        violations += _at(prefix + ".data", _over(program.data, MAX_DATA_BYTES, "1 MiB"))
    if "description" in fields:
        violations += _at(prefix + ".description", _over(program.description, MAX_DESCRIPTION_BYTES, "4 KiB"))
    if "inputs" in fields:
        if len(program.inputs) > MAX_INPUTS:
            violations.append((prefix + ".inputs", f"at most {MAX_INPUTS} inputs; got {len(program.inputs)}"))
        else:
            for index, program_input in enumerate(program.inputs):
                path = f"{prefix}.inputs[{index}]"
                violations += _at(path + ".name", _over(program_input.name, MAX_INPUT_NAME_BYTES))
                violations += _at(path + ".description",
                                  _over(program_input.description, MAX_INPUT_DESCRIPTION_BYTES, "1 KiB"))
    return violations


def _over(text: str, limit: int, unit: str = "") -> list[str]:
    """The problem of a text longer than limit bytes of UTF-8, if it is."""
    # Measured without encoding where possible: ASCII text (Python knows, in constant time) is one
    # byte a character, and other text is at least that; a 60 MB upload is refused on its length.
    if len(text) * 4 <= limit:
        return []
    cap = f"{unit} ({limit} bytes of UTF-8)" if unit else f"{limit} bytes of UTF-8"
    if text.isascii() or len(text) <= limit:
        size = len(text) if text.isascii() else len(text.encode())
        return [f"must be at most {cap}; it is {size} bytes"] if size > limit else []
    return [f"must be at most {cap}; it is more than {len(text)} bytes"]


def check_program(program: program_pb2.Program, fields: Collection[str], prefix: str = "program") -> None:
    """Raise InvalidArgument INVALID_PROGRAM listing every problem the cheap checks find in the named
    fields: the caps first, alone when one is exceeded."""
    check_sizes(program, fields, prefix)
    violations = program_violations(program, fields, prefix)
    if violations:
        raise invalid_program(violations)


def program_violations(
    program: program_pb2.Program, fields: Collection[str], prefix: str = "program"
) -> list[FieldViolation]:
    """The problems of the named fields of program that the cheap checks find, caps included; field
    paths start with prefix."""
    violations: list[FieldViolation] = size_violations(program, fields, prefix)
    if "name" in fields:
        violations += _at(prefix + ".name", name_violations(program.name))
    if "runtime" in fields and program.runtime not in _UPLOADABLE_RUNTIMES:
        violations.append((prefix + ".runtime", "only PROGRAM_RUNTIME_PYTHON programs can be uploaded"))
    if "visibility" in fields and program.visibility not in _VISIBILITIES:
        violations.append((prefix + ".visibility", "must be VISIBILITY_PRIVATE or VISIBILITY_PUBLIC"))
    if "data" in fields:
        violations += _at(prefix + ".data", data_violations(program.data))
    if "inputs" in fields:
        violations += inputs_violations(program.inputs, prefix + ".inputs")
    if "max_execution_time" in fields:
        duration = program.max_execution_time if program.HasField("max_execution_time") else None
        violations += _at(prefix + ".max_execution_time", max_execution_time_violations(duration))
    return violations


def name_violations(name: str) -> list[str]:
    if not name:
        return ["required"]
    if not NAME_PATTERN.fullmatch(name):
        return ["must be 1 to 63 lowercase letters, digits and hyphens, starting with a letter or digit"]
    return []


def data_violations(data: str) -> list[str]:
    """What the servicer can tell of a source cheaply: whether there is one. Whether it compiles and
    defines main is for the worker (source_worker.source_problems)."""
    if not data.strip():
        return ["required: the program's Python source"]
    return []


def max_execution_time_violations(duration) -> list[str]:
    """duration: a google.protobuf.Duration, or None when the field is not set."""
    if duration is None:
        return ["required: the longest one job of this program may run"]
    if duration.seconds < 0 or duration.nanos < 0 or (duration.seconds == 0 and duration.nanos == 0):
        return ["must be positive"]
    if (duration.seconds, duration.nanos) > (MAX_EXECUTION_SECONDS, 0):
        return [f"must be at most 8 hours ({MAX_EXECUTION_SECONDS} s)"]
    if duration.nanos:
        return ["must be a whole number of seconds"]
    return []


def inputs_violations(
    inputs: Sequence[program_pb2.ProgramInput], prefix: str = "program.inputs"
) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if len(inputs) > MAX_INPUTS:
        return violations  # size_violations says so; a thousand more lines about each would not help
    first_index: dict[str, int] = {}
    for index, program_input in enumerate(inputs):
        path, name = f"{prefix}[{index}]", program_input.name
        if not name:
            violations.append((path + ".name", "required"))
        elif not name.isidentifier():
            violations.append((path + ".name", _NOT_IDENTIFIER))
        elif name in RESERVED_INPUT_NAMES:
            violations.append((path + ".name", f"{name!r} is reserved: main receives it as its own argument"))
        elif name in first_index:
            violations.append((path + ".name", f"{name!r} is already taken by {prefix}[{first_index[name]}]"))
        else:
            first_index[name] = index
        if program_input.type not in _INPUT_TYPES:
            violations.append((path + ".type", f"unknown input type {program_input.type}"))
    return violations


def update_paths(mask: field_mask_pb2.FieldMask) -> tuple[str, ...]:
    """The paths of an UpdateProgram mask, each once; InvalidArgument INVALID_UPDATE_MASK unless every
    path is an updatable field and there is at least one."""
    if not mask.paths:
        raise InvalidArgument(
            "update_mask is required: name the fields to change",
            reason="INVALID_UPDATE_MASK",
            field_violations=[("update_mask", f"must list one or more of {', '.join(UPDATABLE_PATHS)}")],
        )
    unknown = [p for p in mask.paths if p not in UPDATABLE_PATHS]
    if unknown:
        raise InvalidArgument(
            f"update_mask names fields that cannot be changed: {', '.join(map(repr, unknown))}",
            reason="INVALID_UPDATE_MASK",
            field_violations=[
                ("update_mask", f"{p!r} cannot be changed; allowed: {', '.join(UPDATABLE_PATHS)}")
                for p in unknown
            ],
        )
    return tuple(dict.fromkeys(mask.paths))


def _at(path: str, problems: Iterable[str]) -> list[FieldViolation]:
    return [(path, problem) for problem in problems]
