"""CreateJob's lookup of a job's program: built-in programs (public, read-only while the suite runs)
are asked for once a minute; any other program on every job, so an update shows at once."""

from __future__ import annotations

import asyncio

from qruntime.programs.v1 import program_pb2, programs_service_pb2

from qruntime_jobs.program_lookup import BUILTIN_SECONDS, ProgramLookup

BUILTIN = program_pb2.Program(id="sampler", runtime=program_pb2.PROGRAM_RUNTIME_BUILTIN,
                              visibility=program_pb2.VISIBILITY_PUBLIC, version=1)
UPLOADED = program_pb2.Program(id="mine-1a2b", runtime=program_pb2.PROGRAM_RUNTIME_PYTHON,
                               visibility=program_pb2.VISIBILITY_PUBLIC, version=1)


class Programs:
    """The programs service's GetProgram as the lookup sees it; counts the calls, versions move on."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, tuple]] = []

    async def GetProgram(self, request, *, metadata, timeout):  # noqa: N802 - the gRPC method's name
        self.asked.append((request.program_id, metadata))
        program = program_pb2.Program()
        program.CopyFrom(BUILTIN if request.program_id == BUILTIN.id else UPLOADED)
        program.version = len(self.asked)
        return programs_service_pb2.GetProgramResponse(program=program)


def test_a_builtin_program_is_asked_for_once_a_minute():
    now = [0.0]
    programs, lookup = Programs(), ProgramLookup(clock=lambda: now[0])

    async def scenario():
        first = await lookup.program(programs, "sampler", (("authorization", "Bearer a"),))
        again = await lookup.program(programs, "sampler", (("authorization", "Bearer b"),))
        now[0] = BUILTIN_SECONDS + 1
        later = await lookup.program(programs, "sampler", (("authorization", "Bearer b"),))
        return first, again, later

    first, again, later = asyncio.run(scenario())
    assert again == first and later.version == 2
    assert [p for p, _ in programs.asked] == ["sampler", "sampler"]


def test_any_other_program_is_asked_for_every_time_with_the_callers_credentials():
    programs, lookup = Programs(), ProgramLookup()

    async def scenario():
        return [await lookup.program(programs, "mine-1a2b", (("authorization", f"Bearer {who}"),))
                for who in ("a", "b")]

    first, second = asyncio.run(scenario())
    assert (first.version, second.version) == (1, 2)
    assert [m for _, m in programs.asked] == [(("authorization", "Bearer a"),), (("authorization", "Bearer b"),)]
