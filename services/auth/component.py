"""The auth service as the server kit serves it.

State: its own tables (auth_*) in data_dir/auth.db or the configured database; the signing key
lives there too, so tokens survive restarts and replicas share it.
"""

from __future__ import annotations

import asyncio
import dataclasses

from qruntime.auth.v1 import auth_service_pb2_grpc

from qruntime_kit.logging import get_logger
from qruntime_kit.server import Runtime
from qruntime_kit.settings import ServerSettings, setting

from .bootstrap import bootstrap_if_empty
from .servicer import AuthServicer
from .store import AuthStore
from .tokens import TokenIssuer

log = get_logger("auth")
SERVICE = "qruntime.auth.v1.AuthService"


@dataclasses.dataclass(frozen=True)
class AuthSettings(ServerSettings):
    """Settings of the auth service."""

    public_url: str = setting("", "the URL clients use, written to bootstrap.json; empty: this server's")
    bootstrap: bool = setting(True, "on an empty store, create a first account and write bootstrap.json")


class AuthComponent:
    name = "auth"
    service_names = (SERVICE,)
    public_methods = frozenset({f"/{SERVICE}/CreateToken", f"/{SERVICE}/ListSigningKeys"})

    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        self.store = AuthStore(settings.database_url_for("auth"))
        self.issuer = TokenIssuer(self.store)
        if settings.resolved_service_key():
            self.store.ensure_service_key(settings.resolved_service_key())

    def register(self, server) -> None:
        auth_service_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(self.store, self.issuer), server)

    async def start(self, runtime: Runtime) -> None:
        if self._settings.bootstrap:
            url = self._settings.public_url or runtime.address
            path = await asyncio.to_thread(bootstrap_if_empty, self.store, self._settings.data_path(), url)
            if path:
                log.info("created the first account, Lite instance and API key", file=str(path))

    async def stop(self) -> None:
        self.store.close()


def build_component(settings: AuthSettings) -> AuthComponent:
    return AuthComponent(settings)


SETTINGS = AuthSettings
