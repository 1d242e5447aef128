"""The programs service as the server kit serves it.

State: its own tables (programs_*) in data_dir/programs.db or the configured database. The built-in
programs are seeded into them at every start, so a new release brings its catalogue with it.
"""

from __future__ import annotations

import asyncio

from qruntime.programs.v1 import programs_service_pb2_grpc

from qruntime_kit.logging import get_logger
from qruntime_kit.server import Runtime
from qruntime_kit.settings import ServerSettings

from .builtins import BUILTIN_PROGRAMS
from .servicer import ProgramsServicer
from .store import ProgramStore

log = get_logger("programs")
SERVICE = "qruntime.programs.v1.ProgramsService"


class ProgramsComponent:
    name = "programs"
    service_names = (SERVICE,)
    public_methods: frozenset[str] = frozenset()

    def __init__(self, settings: ServerSettings) -> None:
        self._settings = settings
        self.store = ProgramStore()  # opened by start(); calls before that are answered UNAVAILABLE

    def register(self, server) -> None:
        programs_service_pb2_grpc.add_ProgramsServiceServicer_to_server(ProgramsServicer(self.store), server)

    async def start(self, runtime: Runtime) -> None:
        await asyncio.to_thread(self.store.open, self._settings.database_url_for("programs"))
        report = await asyncio.to_thread(self.store.seed_builtins, BUILTIN_PROGRAMS)
        log.info("built-in programs seeded", inserted=report.inserted, updated=report.updated,
                 removed=report.removed)

    async def stop(self) -> None:
        self.store.close()


def build_component(settings: ServerSettings) -> ProgramsComponent:
    return ProgramsComponent(settings)


SETTINGS = ServerSettings
