"""ProgramsService over gRPC: checks the caller's rights, validates, and calls the ProgramStore.

Access rules: every caller sees public programs and its own instance's; a private program of another
instance answers NOT_FOUND exactly like one that does not exist. Only the owner instance changes or
deletes a program, and gets its source back; built-ins are read-only. Service principals (the jobs
service) may read every program, at every version, source included, since they run them.

Order of work on a change: the caller's rights and ownership first (a stranger's request costs one
read), then the size caps, then the other cheap checks, and only then the source check, which runs in
a worker process (source_check.py): nothing a caller sends is compiled in this process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import string
from collections.abc import Iterable
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2
from qruntime.programs.v1 import program_pb2, programs_service_pb2, programs_service_pb2_grpc

from qruntime_kit.auth import Principal, current_principal
from qruntime_kit.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from qruntime_kit.logging import get_logger
from qruntime_kit.store import decode_page_token, encode_page_token, invalid_page_token, page_size

from .model import InputType, Program, ProgramInput, Runtime, Visibility
from .source_check import SourceChecker
from .store import ProgramStore
from .validation import (
    CREATE_FIELDS,
    MAX_ID_LENGTH,
    check_sizes,
    invalid_program,
    program_violations,
    update_paths,
)

log = get_logger("programs")

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 200
ID_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
ID_SUFFIX_LENGTH = 6
_CREATE_ATTEMPTS = 3  # a fresh random suffix on the rare id clash


class ProgramsServicer(programs_service_pb2_grpc.ProgramsServiceServicer):
    def __init__(self, store: ProgramStore, checker: SourceChecker) -> None:
        self._store = store
        self._checker = checker

    async def GetProgram(self, request, context):
        principal = current_principal()
        # A Writer may run the programs it sees (job.create) without the Reader's program.read.
        principal.require_any("program.read", "job.create")
        if request.version < 0:
            raise InvalidArgument(
                f"version must be 0 (the latest) or a version number from 1, not {request.version}",
                reason="INVALID_PROGRAM_VERSION", field_violations=[("version", "must be 0 or more")],
            )
        program = await self._visible(principal, request.program_id, "program_id")
        if request.version and request.version != program.version:
            # Who may read a version is decided by the program as it is now, checked above.
            version = await asyncio.to_thread(self._store.get_version, program.id, request.version)
            if version is None:
                raise NotFound(
                    f"program {program.id!r} has no version {request.version}; its latest is {program.version}",
                    reason="PROGRAM_VERSION_NOT_FOUND",
                    metadata={"program_id": program.id, "version": request.version,
                              "latest_version": program.version},
                )
            program = version
        return programs_service_pb2.GetProgramResponse(
            program=program_message(program, with_data=program.source_visible_to(principal))
        )

    async def ListProgramVersions(self, request, context):
        principal = current_principal()
        principal.require("program.read")
        limit = page_size(request.page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        position = decode_page_token(request.page_token, program=str, before=int)
        if position is not None and position["program"] != request.program_id:
            raise invalid_page_token()  # a token is bound to the program whose versions it pages
        program = await self._visible(principal, request.program_id, "program_id")
        before = position["before"] if position else None
        page = await asyncio.to_thread(self._store.list_versions, program.id, limit=limit, before=before)
        response = programs_service_pb2.ListProgramVersionsResponse(
            programs=[program_message(v, with_data=False) for v in page.versions]
        )
        if page.more:
            response.next_page_token = encode_page_token({"program": program.id,
                                                          "before": page.versions[-1].version})
        return response

    async def ListPrograms(self, request, context):
        principal = current_principal()
        principal.require("program.read")
        limit = page_size(request.page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        after = (decode_page_token(request.page_token, after=str) or {}).get("after")
        viewer = None if principal.is_service else principal.instance_crn
        page = await asyncio.to_thread(self._store.list_visible, viewer, limit=limit, after=after)
        response = programs_service_pb2.ListProgramsResponse(
            programs=[program_message(p, with_data=False) for p in page.programs]
        )
        if page.more:
            response.next_page_token = encode_page_token({"after": page.programs[-1].id})
        return response

    async def CreateProgram(self, request, context):
        principal = current_principal()
        principal.require("program.create")
        principal.require_instance("programs")
        await self._check(request.program, CREATE_FIELDS)
        sent = request.program
        draft = Program(
            id="",
            name=sent.name,
            description=sent.description,
            inputs=inputs_from_messages(sent.inputs),
            max_execution_seconds=sent.max_execution_time.seconds,
            visibility=_visibility(sent.visibility),
            runtime=Runtime.PYTHON,
            owner_instance=principal.instance_crn,
            data=sent.data,
        )
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            candidate = dataclasses.replace(draft, id=new_program_id(draft.name))
            try:
                program = await asyncio.to_thread(self._store.create, candidate)
                break
            except AlreadyExists:
                if attempt == _CREATE_ATTEMPTS:
                    raise
        log.info("program created", program_id=program.id, instance=program.owner_instance,
                 visibility=program.visibility.value)
        return programs_service_pb2.CreateProgramResponse(program=program_message(program, with_data=True))

    async def UpdateProgram(self, request, context):
        principal = current_principal()
        principal.require("program.update")
        current = await self._owned(principal, request.program.id, "program.id", "change")
        paths = update_paths(request.update_mask)
        await self._check(request.program, paths)
        changes = _store_changes(request.program, paths)
        program = await asyncio.to_thread(self._store.update, current.id, changes)
        if program is None:  # deleted since we read it
            raise _not_found(current.id)
        log.info("program updated", program_id=program.id, fields=list(paths), version=program.version,
                 changed=program.version != current.version)
        return programs_service_pb2.UpdateProgramResponse(program=program_message(program, with_data=True))

    async def DeleteProgram(self, request, context):
        principal = current_principal()
        principal.require("program.delete")
        program = await self._owned(principal, request.program_id, "program_id", "delete")
        if not await asyncio.to_thread(self._store.delete, program.id):
            raise _not_found(program.id)
        log.info("program deleted", program_id=program.id)
        return programs_service_pb2.DeleteProgramResponse()

    async def _check(self, sent: program_pb2.Program, fields: Iterable[str]) -> None:
        """Raise INVALID_PROGRAM with every problem of the named fields: a field past its cap at once
        and alone; else every problem of the cheap checks and of the source, compiled in a worker."""
        check_sizes(sent, fields)
        violations = program_violations(sent, fields)
        if "data" in fields and not any(path == "program.data" for path, _ in violations):
            violations += [("program.data", problem) for problem in await self._checker.problems(sent.data)]
        if violations:
            raise invalid_program(violations)

    async def _visible(self, principal: Principal, program_id: str, field: str) -> Program:
        """The program, if the principal may see it; NotFound alike when it is absent or hidden."""
        if not program_id:
            raise InvalidArgument(f"{field} is required", reason="PROGRAM_ID_MISSING",
                                  field_violations=[(field, "required")])
        if len(program_id) > MAX_ID_LENGTH:  # cannot exist; not worth sending to the database
            raise _not_found(program_id)
        program = await asyncio.to_thread(self._store.get, program_id)
        if program is None or not program.visible_to(principal):
            raise _not_found(program_id)
        return program

    async def _owned(self, principal: Principal, program_id: str, field: str, verb: str) -> Program:
        """The program, if the principal's instance owns it (so may change or delete it)."""
        program = await self._visible(principal, program_id, field)
        if program.is_builtin:
            raise PermissionDenied(
                f"{program.id!r} is a built-in program of the suite; it cannot be changed or deleted "
                "(upload your own copy instead)",
                reason="BUILTIN_PROGRAM_READ_ONLY",
                metadata={"program_id": program.id},
            )
        if not program.owned_by(principal):
            raise PermissionDenied(
                f"only the instance that owns program {program.id!r} may {verb} it",
                reason="NOT_PROGRAM_OWNER",
                metadata={"program_id": program.id},
            )
        return program


def _store_changes(sent: program_pb2.Program, paths: Iterable[str]) -> dict[str, Any]:
    """The store fields an update sets: only those the mask names, whose values were validated."""
    changes: dict[str, Any] = {}
    for path in paths:
        match path:
            case "visibility":
                changes["visibility"] = _visibility(sent.visibility)
            case "inputs":
                changes["inputs"] = inputs_from_messages(sent.inputs)
            case "max_execution_time":
                changes["max_execution_seconds"] = sent.max_execution_time.seconds
            case "name" | "description" | "data":
                changes[path] = getattr(sent, path)
    return changes


def new_program_id(name: str) -> str:
    """'<name>-<6 random lowercase letters and digits>', as IBM's runtime names uploaded programs."""
    suffix = "".join(secrets.choice(ID_SUFFIX_ALPHABET) for _ in range(ID_SUFFIX_LENGTH))
    return f"{name}-{suffix}"


def _not_found(program_id: str) -> NotFound:
    # The same words whether the program is absent or another instance's private one.
    return NotFound(f"program {program_id!r} not found", reason="PROGRAM_NOT_FOUND",
                    metadata={"program_id": program_id})


def _visibility(value: int) -> Visibility:
    # Unspecified means private: nothing is published by accident.
    return Visibility.PUBLIC if value == program_pb2.VISIBILITY_PUBLIC else Visibility.PRIVATE


def inputs_from_messages(inputs) -> tuple[ProgramInput, ...]:
    return tuple(
        ProgramInput(i.name, InputType(program_pb2.InputType.Name(i.type).removeprefix("INPUT_TYPE_")),
                     i.required, i.description)
        for i in inputs
    )


def program_message(program: Program, *, with_data: bool) -> program_pb2.Program:
    """The wire form of a program; its source only when with_data."""
    message = program_pb2.Program(
        id=program.id,
        name=program.name,
        description=program.description,
        inputs=[
            program_pb2.ProgramInput(
                name=i.name, type=program_pb2.InputType.Value(f"INPUT_TYPE_{i.type.value}"),
                required=i.required, description=i.description,
            )
            for i in program.inputs
        ],
        max_execution_time=duration_pb2.Duration(seconds=program.max_execution_seconds),
        visibility=program_pb2.Visibility.Value(f"VISIBILITY_{program.visibility.value}"),
        runtime=program_pb2.ProgramRuntime.Value(f"PROGRAM_RUNTIME_{program.runtime.value}"),
        owner_instance=program.owner_instance,
        data=program.data if with_data else "",
        version=program.version,
    )
    for field, value in (("create_time", program.create_time), ("update_time", program.update_time)):
        if value is not None:
            stamp = timestamp_pb2.Timestamp()
            stamp.FromDatetime(value)
            getattr(message, field).CopyFrom(stamp)
    return message
