"""The auth service as the server kit serves it.

State: its own tables (auth_*) in data_dir/auth.db or the configured database; the signing keys
live there too, so tokens survive restarts and replicas share them. The secret that keys API key
hashes lives in its own owner-only file (replicas share it), never in the database.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from qruntime.admin.v1 import admin_service_pb2_grpc
from qruntime.auth.v1 import auth_service_pb2_grpc

from qruntime_kit.audit import AuditEvent
from qruntime_kit.logging import get_logger
from qruntime_kit.secrets import check_private, private_secret, read_private
from qruntime_kit.server import Runtime
from qruntime_kit.settings import ServerSettings, setting

from .admin import AdminServicer
from .bootstrap import BOOTSTRAP_FILE, bootstrap_if_empty
from .ratelimit import RateLimiter
from .servicer import AuthServicer
from .store import AuthStore
from .tokens import TokenIssuer

log = get_logger("auth")
SERVICE = "qruntime.auth.v1.AuthService"
ADMIN_SERVICE = "qruntime.admin.v1.AdminService"
KEY_HASH_SECRET_FILE = "key-hash.secret"
SERVICE_KEYS_DIR = "service-keys"


@dataclasses.dataclass(frozen=True)
class AuthSettings(ServerSettings):
    """Settings of the auth service."""

    public_url: str = setting("", "the URL clients use, written to bootstrap.json; empty: this server's")
    public_http_url: str = setting(
        "", "the HTTP/JSON API's and web console's base URL (the gateway's --http-port, e.g. "
            "http://localhost:8080), written to bootstrap.json as http_url; empty: none written")
    bootstrap: bool = setting(True, "on an empty store, create a first account and write bootstrap.json")
    key_hash_secret_file: str = setting(
        "", f"owner-only file with the secret API key hashes are keyed with (made if missing); "
            f"empty: data_dir/{KEY_HASH_SECRET_FILE}")
    service_keys: str = setting(
        "", "the suite's services' keys, as name=key,... (e.g. jobs=qrk_...); each service gets only its own "
            f"calls. Also read: every <name>.key file in data_dir/{SERVICE_KEYS_DIR}", secret=True)
    token_requests_per_key: float = setting(5.0, "CreateToken attempts a second per API key id (bursts of 20)")
    token_requests_per_peer: float = setting(50.0, "CreateToken attempts a second per peer address (bursts of 100)")
    trusted_proxies: str = setting(
        "", "peers (e.g. ipv4:10.0.0.5) whose x-forwarded-for is believed: the gateway's address(es), comma-separated")


def service_keys_of(settings: AuthSettings) -> dict[str, str]:
    """Service name -> key, from the setting and from the owner-only files of the keys folder."""
    found = {}
    for item in filter(None, (part.strip() for part in settings.service_keys.split(","))):
        name, sep, key = item.partition("=")
        if not sep or not name or not key:
            raise SystemExit("qruntime: QRUNTIME_SERVICE_KEYS must read name=key,name=key")
        found[name] = key
    folder = settings.data_path() / SERVICE_KEYS_DIR
    for path in sorted(folder.glob("*.key")) if folder.is_dir() else ():
        found.setdefault(path.stem, read_private(path))
    return found


class AuthComponent:
    name = "auth"
    service_names = (SERVICE, ADMIN_SERVICE)
    public_methods = frozenset({f"/{SERVICE}/CreateToken", f"/{SERVICE}/ListSigningKeys",
                                f"/{SERVICE}/CreateServiceToken", f"/{SERVICE}/CreateDelegatedToken"})

    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        bootstrap_file = settings.data_path() / BOOTSTRAP_FILE  # holds the first API key
        if bootstrap_file.exists():
            check_private(bootstrap_file)
        secret_file = Path(settings.key_hash_secret_file or settings.data_path() / KEY_HASH_SECRET_FILE)
        self.store = AuthStore(settings.database_url_for("auth"), private_secret(secret_file))
        self.issuer = TokenIssuer(self.store)
        for service_name, key in service_keys_of(settings).items():
            self.store.ensure_service_key(service_name, key)
        self._limits = (RateLimiter(settings.token_requests_per_key, 20),
                        RateLimiter(settings.token_requests_per_peer, 100))

    def register(self, server) -> None:
        auth_service_pb2_grpc.add_AuthServiceServicer_to_server(
            AuthServicer(self.store, self.issuer, *self._limits, trusted_proxies=frozenset(
                p.strip() for p in self._settings.trusted_proxies.split(",") if p.strip())), server)
        admin_service_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(self.store), server)

    async def exchange_service_key(self, service_key: str) -> tuple[str, int]:
        """CreateServiceToken in process, for the services served with this component."""
        return await asyncio.to_thread(self.issuer.create_service_token, service_key)

    async def delegate(self, service_key: str, subject_token: str) -> tuple[str, int]:
        """CreateDelegatedToken in process, for the services served with this component."""
        return await asyncio.to_thread(self.issuer.create_delegated_token, service_key, subject_token)

    async def revocations_since(self, since: float) -> list[tuple[str, float]]:
        """ListRevocations in process, for the services served with this component."""
        rows = await asyncio.to_thread(self.store.revocations_since, since)
        return [(r["subject"], r["revoke_time"]) for r in rows]

    async def record_audit_events(self, events: list[AuditEvent]) -> None:
        """RecordAuditEvents in process, for the services served with this component."""
        # The events made rows in the thread too: a batch may hold hundreds (an outbox's).
        await asyncio.to_thread(lambda: self.store.append_audit_events([dataclasses.asdict(e) for e in events]))

    async def start(self, runtime: Runtime) -> None:
        if self._settings.bootstrap:
            url = self._settings.public_url or runtime.address
            path = await asyncio.to_thread(bootstrap_if_empty, self.store, self._settings.data_path(), url,
                                           self._settings.public_http_url)
            if path:
                log.info("created the first account, its Lite and Standard instances and an API key", file=str(path))

    async def stop(self) -> None:
        self.store.close()


def build_component(settings: AuthSettings) -> AuthComponent:
    return AuthComponent(settings)


SETTINGS = AuthSettings
