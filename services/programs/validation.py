"""Checks on a program as a caller sends it, before anything is stored.

Each check returns field violations (path, what is wrong) instead of stopping at the first, so one
InvalidArgument tells the caller everything to fix.
"""

from __future__ import annotations

import ast
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
CREATE_FIELDS = ("name", "runtime", "visibility", "data", "inputs", "max_execution_time")

_VISIBILITIES = frozenset(program_pb2.Visibility.values())
_UPLOADABLE_RUNTIMES = (program_pb2.PROGRAM_RUNTIME_UNSPECIFIED, program_pb2.PROGRAM_RUNTIME_PYTHON)
_NOT_IDENTIFIER = "must be a Python identifier: letters, digits and underscores, not starting with a digit"
_INPUT_TYPES = frozenset(program_pb2.InputType.values())


def check_program(program: program_pb2.Program, fields: Collection[str], prefix: str = "program") -> None:
    """Raise InvalidArgument INVALID_PROGRAM listing every problem of the named fields."""
    violations = program_violations(program, fields, prefix)
    if violations:
        summary = "; ".join(f"{path}: {what}" for path, what in violations)
        raise InvalidArgument(f"the program is not valid: {summary}", reason="INVALID_PROGRAM",
                              field_violations=violations)


def program_violations(
    program: program_pb2.Program, fields: Collection[str], prefix: str = "program"
) -> list[FieldViolation]:
    """The problems of the named fields of program; field paths start with prefix."""
    violations: list[FieldViolation] = []
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
    """The source must compile and define a top-level def main(backend, user_messenger, **inputs)."""
    if not data.strip():
        return ["required: the program's Python source"]
    try:
        compile(data, "<program>", "exec")
        tree = ast.parse(data, "<program>")
    except SyntaxError as err:
        return [f"does not compile: {err.msg} (line {err.lineno})"]
    except (ValueError, RecursionError, MemoryError) as err:
        return [f"does not compile: {err}"]
    kinds = {
        type(node) for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "main"
    }
    if ast.FunctionDef in kinds:
        return []
    if ast.AsyncFunctionDef in kinds:
        return ["main must be a plain function (def main(backend, user_messenger, **inputs)), not async"]
    return ["must define a top-level function main(backend, user_messenger, **inputs)"]


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
