"""Programs as users see them, and the translation of upload/update metadata to Program messages."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from google.protobuf import duration_pb2

from ._convert import enum_label, optional_datetime, optional_seconds
from .exceptions import _invalid_argument
from .programs.v1 import program_pb2

__all__ = ["ProgramParameter", "RuntimeProgram"]

_TYPE_BY_NAME: dict[str, program_pb2.InputType.ValueType] = {
    "any": program_pb2.INPUT_TYPE_UNSPECIFIED,
    "string": program_pb2.INPUT_TYPE_STRING,
    "integer": program_pb2.INPUT_TYPE_INTEGER,
    "number": program_pb2.INPUT_TYPE_NUMBER,
    "boolean": program_pb2.INPUT_TYPE_BOOLEAN,
    "array": program_pb2.INPUT_TYPE_ARRAY,
    "object": program_pb2.INPUT_TYPE_OBJECT,
    "circuits": program_pb2.INPUT_TYPE_CIRCUITS,
}
_NAME_BY_TYPE = {value: name for name, value in _TYPE_BY_NAME.items()}
# Metadata key -> the Program field (and update_mask path) it sets.
_METADATA_FIELDS = {
    "name": "name",
    "description": "description",
    "max_execution_time": "max_execution_time",
    "parameters": "inputs",
    "inputs": "inputs",
    "is_public": "visibility",
}


class ProgramParameter(NamedTuple):
    """One input a program declares."""

    name: str
    """The key of the job's inputs dict."""
    type: str
    """The JSON type the value must have: string, integer, number, boolean, array, object, circuits or any."""
    required: bool
    """Whether a job must give it."""
    description: str
    """What it means, for people."""


class RuntimeProgram:
    """A program that jobs run: a built-in one, or Python source uploaded by an instance."""

    def __init__(self, program: program_pb2.Program) -> None:
        self._program = program

    @property
    def program_id(self) -> str:
        """Unique id, e.g. ``"hello-world"``."""
        return self._program.id

    @property
    def name(self) -> str:
        """Short name shown to people."""
        return self._program.name

    @property
    def description(self) -> str:
        """What the program does."""
        return self._program.description

    @property
    def inputs(self) -> list[ProgramParameter]:
        """The inputs the program takes."""
        return [
            ProgramParameter(i.name, _NAME_BY_TYPE.get(i.type, "any"), i.required, i.description)
            for i in self._program.inputs
        ]

    @property
    def max_execution_time(self) -> int | None:
        """The longest one job of this program may run, in whole seconds; None when unset."""
        seconds = optional_seconds(self._program, "max_execution_time")
        return None if seconds is None else int(seconds)

    @property
    def is_public(self) -> bool:
        """Whether every instance may see and run it."""
        return self._program.visibility == program_pb2.VISIBILITY_PUBLIC

    @property
    def data(self) -> str:
        """The Python source of an uploaded program; empty for built-ins and in list results."""
        return self._program.data

    @property
    def runtime(self) -> str:
        """How the program is run: ``"BUILTIN"`` or ``"PYTHON"``."""
        return enum_label(program_pb2.ProgramRuntime.Name, self._program.runtime, "PROGRAM_RUNTIME_")

    @property
    def owner_instance(self) -> str:
        """CRN of the owning instance; empty for built-ins."""
        return self._program.owner_instance

    @property
    def version(self) -> int:
        """The version of the program's content: 1 when uploaded, one more after every change to it.
        Built-in programs are always version 1."""
        return self._program.version

    @property
    def creation_date(self) -> datetime | None:
        """When the program was created."""
        return optional_datetime(self._program, "create_time")

    @property
    def update_date(self) -> datetime | None:
        """When the program was last changed (when this version was made)."""
        return optional_datetime(self._program, "update_time")

    @property
    def proto(self) -> program_pb2.Program:
        """The ProgramsService message it was built from."""
        return self._program

    def __repr__(self) -> str:
        return f"<RuntimeProgram({self.program_id!r})>"

    def __str__(self) -> str:
        lines = [f"{self.program_id}:", f"  Name: {self.name}", f"  Version: {self.version}",
                 f"  Description: {self.description}"]
        lines.append(f"  Max execution time: {self.max_execution_time} s")
        lines.append(f"  Public: {self.is_public}")
        lines.append("  Inputs:" if self.inputs else "  Inputs: none")
        for p in self.inputs:
            required = "required" if p.required else "optional"
            lines.append(f"    - {p.name} ({p.type}, {required}): {p.description}")
        return "\n".join(lines)


def program_for_upload(data: str, metadata: Mapping[str, Any]) -> program_pb2.Program:
    """The Program message to create from Python source and its metadata.

    Raises:
        IBMInputValueError: empty source, a missing name, an unknown key or a badly typed value.
    """
    if not isinstance(data, str) or not data.strip():
        raise _invalid_argument("data", "must be the program's Python source, a non-empty string")
    if not isinstance(metadata, Mapping):
        raise _invalid_argument("metadata", f"must be a dict, not {type(metadata).__name__}")
    if "name" not in metadata:
        raise _invalid_argument("metadata.name", "is required")
    program = program_pb2.Program(data=data, runtime=program_pb2.PROGRAM_RUNTIME_PYTHON)
    program.visibility = program_pb2.VISIBILITY_PRIVATE
    _apply_metadata(program, metadata)
    return program


def program_update(
    program_id: str, data: str | None, metadata: Mapping[str, Any] | None, is_public: bool | None
) -> tuple[program_pb2.Program, list[str]]:
    """The Program message and update_mask paths that change what is given.

    Raises:
        IBMInputValueError: nothing to change, an unknown key or a badly typed value.
    """
    program = program_pb2.Program(id=program_id)
    paths: list[str] = []
    if data is not None:
        if not isinstance(data, str) or not data.strip():
            raise _invalid_argument("data", "must be the program's Python source, a non-empty string")
        program.data = data
        paths.append("data")
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise _invalid_argument("metadata", f"must be a dict, not {type(metadata).__name__}")
        if is_public is not None and "is_public" in metadata:
            raise _invalid_argument("is_public", "given both as an argument and in metadata; give one")
        paths += _apply_metadata(program, metadata)
    if is_public is not None:
        paths += _apply_metadata(program, {"is_public": is_public})
    if not paths:
        raise _invalid_argument("update_program", "nothing to change: give data, metadata or is_public")
    return program, sorted(set(paths))


def _apply_metadata(program: program_pb2.Program, metadata: Mapping[str, Any]) -> list[str]:
    """Set the fields the metadata names on ``program``; return their update_mask paths."""
    if "parameters" in metadata and "inputs" in metadata:
        raise _invalid_argument("metadata.inputs", "given together with metadata.parameters; give one")
    paths = []
    for key, value in metadata.items():
        if key not in _METADATA_FIELDS:
            raise _invalid_argument(
                f"metadata.{key}", f"unknown key; known keys: {', '.join(_METADATA_FIELDS)}"
            )
        if key in ("name", "description"):
            if not isinstance(value, str) or (key == "name" and not value.strip()):
                raise _invalid_argument(
                    f"metadata.{key}", f"must be a {'non-empty ' * (key == 'name')}string"
                )
            setattr(program, key, value)
        elif key == "max_execution_time":
            program.max_execution_time.CopyFrom(_duration(value))
        elif key == "is_public":
            if not isinstance(value, bool):
                raise _invalid_argument("metadata.is_public", f"must be True or False, not {value!r}")
            program.visibility = program_pb2.VISIBILITY_PUBLIC if value else program_pb2.VISIBILITY_PRIVATE
        else:
            del program.inputs[:]
            program.inputs.extend(_program_input(key, i, p) for i, p in enumerate(_as_list(key, value)))
        paths.append(_METADATA_FIELDS[key])
    return paths


def _duration(value: Any) -> duration_pb2.Duration:
    """A whole, positive number of seconds (the service keeps whole seconds and refuses fractions)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise _invalid_argument(
            "metadata.max_execution_time", f"must be a positive whole number of seconds, not {value!r}"
        )
    if not isinstance(value, numbers.Integral) and not float(value).is_integer():
        raise _invalid_argument(
            "metadata.max_execution_time",
            f"must be a whole number of seconds, not {value!r}: the service keeps whole seconds",
        )
    try:
        return duration_pb2.Duration(seconds=int(value))
    except (ValueError, OverflowError):  # beyond what a Duration holds (about 10,000 years)
        raise _invalid_argument(
            "metadata.max_execution_time", f"must be at most 8 hours (28800 s), not {value!r}"
        ) from None


def _as_list(key: str, value: Any) -> Sequence[Any]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise _invalid_argument(f"metadata.{key}", "must be a list of inputs")
    return value


def _program_input(key: str, index: int, value: Any) -> program_pb2.ProgramInput:
    """One declared input from a ProgramParameter, a (name, type, required, description) tuple or a dict."""
    field = f"metadata.{key}[{index}]"
    if isinstance(value, Mapping):
        unknown = set(value) - set(ProgramParameter._fields)
        if unknown:
            raise _invalid_argument(
                f"{field}.{min(unknown)}", "unknown key; known: name, type, required, description"
            )
        spec = dict(value)
    elif isinstance(value, Sequence) and not isinstance(value, str) and 1 <= len(value) <= 4:
        spec = dict(zip(ProgramParameter._fields, value, strict=False))
    else:
        raise _invalid_argument(field, "must be a dict with name, type, required and description")
    name, type_name = spec.get("name"), spec.get("type", "any")
    required, description = spec.get("required", False), spec.get("description", "")
    if not isinstance(name, str) or not name:
        raise _invalid_argument(f"{field}.name", "must be a non-empty string")
    if not isinstance(type_name, str) or type_name.lower() not in _TYPE_BY_NAME:
        raise _invalid_argument(
            f"{field}.type", f"must be one of {', '.join(_TYPE_BY_NAME)}, not {type_name!r}"
        )
    if not isinstance(required, bool):
        raise _invalid_argument(f"{field}.required", "must be True or False")
    if not isinstance(description, str):
        raise _invalid_argument(f"{field}.description", "must be a string")
    return program_pb2.ProgramInput(
        name=name, type=_TYPE_BY_NAME[type_name.lower()], required=required, description=description
    )
