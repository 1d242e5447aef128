"""The program a new job runs, as the programs service describes it; built-in programs remembered.

CreateJob asks the programs service for the job's program on the user's behalf: it must exist and be
visible to the user, and it gives the inputs, the time limit and the version the job records. A
built-in program is public and read-only while the suite runs (the programs service seeds it from
the code at every start and refuses changes), so its answer is the same for every caller that may
create jobs at all: kept for BUILTIN_SECONDS, it saves that call for most jobs. The call through the
suite's own port was 3-4 ms of a Bell job's 13-17 ms CreateJob (measured, embedded suite).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from qruntime.programs.v1 import program_pb2, programs_service_pb2

from qruntime_kit.outbound import call

BUILTIN_SECONDS = 60.0  # a new release's built-ins reach a running jobs service within this


class ProgramLookup:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._builtins: dict[str, tuple[program_pb2.Program, float]] = {}

    async def program(self, programs, program_id: str, metadata) -> program_pb2.Program:
        """The latest version of the program, fetched with the caller's credentials (metadata) unless
        it is a built-in program fetched in the last BUILTIN_SECONDS. The caller must hold job.create,
        which lets it read every public program."""
        kept = self._builtins.get(program_id)
        if kept is not None and self._clock() < kept[1]:
            return kept[0]
        request = programs_service_pb2.GetProgramRequest(program_id=program_id)
        program = (await call(programs.GetProgram, request, metadata=metadata)).program
        if (program.runtime == program_pb2.PROGRAM_RUNTIME_BUILTIN
                and program.visibility == program_pb2.VISIBILITY_PUBLIC):
            self._builtins[program_id] = (program, self._clock() + BUILTIN_SECONDS)
        return program
