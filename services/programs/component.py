"""The programs service as the server kit serves it.

State: its own tables (programs_*) in data_dir/programs.db or the configured database. The built-in
programs are seeded into them at every start, so a new release brings its catalogue with it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math

from qruntime.programs.v1 import programs_service_pb2_grpc

from qruntime_kit.logging import get_logger
from qruntime_kit.server import Runtime
from qruntime_kit.settings import ServerSettings, setting

from .builtins import BUILTIN_PROGRAMS
from .servicer import ProgramsServicer
from .source_check import CheckLimits, SourceChecker
from .store import ProgramStore

log = get_logger("programs")
SERVICE = "qruntime.programs.v1.ProgramsService"


@dataclasses.dataclass(frozen=True)
class ProgramsSettings(ServerSettings):
    """Settings of the programs service."""

    source_check_seconds: float = setting(
        15.0, "wall-clock seconds one upload's source check may take; then its worker is killed"
    )
    source_check_memory_mib: int = setting(512, "memory one upload's source check may use, in MiB")
    source_check_workers: int = setting(2, "how many uploads this replica checks at once; a few more wait")

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = []
        if not (math.isfinite(self.source_check_seconds) and self.source_check_seconds > 0):
            problems.append(f"source_check_seconds must be positive, got {self.source_check_seconds}")
        if self.source_check_memory_mib < 64:
            problems.append(f"source_check_memory_mib must be at least 64, got {self.source_check_memory_mib}")
        if self.source_check_workers < 1:
            problems.append(f"source_check_workers must be at least 1, got {self.source_check_workers}")
        if problems:
            raise ValueError("invalid settings: " + "; ".join(problems))

    def check_limits(self) -> CheckLimits:
        return CheckLimits(seconds=self.source_check_seconds, memory_bytes=self.source_check_memory_mib << 20,
                           workers=self.source_check_workers, waiting=4 * self.source_check_workers)


class ProgramsComponent:
    name = "programs"
    service_names = (SERVICE,)
    public_methods: frozenset[str] = frozenset()

    def __init__(self, settings: ProgramsSettings) -> None:
        self._settings = settings
        self.store = ProgramStore()  # opened by start(); calls before that are answered UNAVAILABLE
        self.checker = SourceChecker(settings.check_limits())

    def register(self, server) -> None:
        servicer = ProgramsServicer(self.store, self.checker)
        programs_service_pb2_grpc.add_ProgramsServiceServicer_to_server(servicer, server)

    async def start(self, runtime: Runtime) -> None:
        await asyncio.to_thread(self.store.open, self._settings.database_url_for("programs"))
        report = await asyncio.to_thread(self.store.seed_builtins, BUILTIN_PROGRAMS)
        log.info("built-in programs seeded", inserted=report.inserted, updated=report.updated,
                 removed=report.removed)

    async def stop(self) -> None:
        self.store.close()


def build_component(settings: ProgramsSettings) -> ProgramsComponent:
    return ProgramsComponent(settings)


SETTINGS = ProgramsSettings
