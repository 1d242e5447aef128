"""Fixtures that start real servers on real sockets (port 0) for the tests.

`start_suite("auth", "programs", ...)` composes the named services exactly as `qruntime up` does
(one kit server, each service with its own SQLite store under tmp_path) in a background event-loop
thread, and returns a RunningSuite with the bootstrap user's API key and instance, a service key,
and helpers for tokens, channels and more users. `start_module_suite` is the same for a suite that
the tests of one module share.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from postgres_support import new_postgres_database
from qruntime.auth.v1 import auth_service_pb2, auth_service_pb2_grpc

from qruntime_auth.keys import new_api_key
from qruntime_kit.server import Suite, start_server
from qruntime_suite.embedded import SuiteSettings, build_components


@dataclasses.dataclass
class RunningSuite:
    """A kit server serving some services on 127.0.0.1:<port>."""

    address: str
    data_dir: Path
    api_key: str  # the bootstrap user's (Manager on a Lite instance)
    instance: str  # that instance's CRN
    service_key: str
    suite: Suite
    loop: asyncio.AbstractEventLoop

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def token(self, api_key: str | None = None, instance: str | None = None) -> str:
        """A real token from the auth service. The service key (the jobs service's identity) is
        exchanged as the services served with auth do, in process: the port refuses it."""
        api_key = api_key or self.api_key
        if api_key == self.service_key:
            return self.run(self.suite.components[0].exchange_service_key(api_key))[0]
        instance = instance or self.instance
        with self.channel() as channel:
            stub = auth_service_pb2_grpc.AuthServiceStub(channel)
            return stub.CreateToken(auth_service_pb2.CreateTokenRequest(api_key=api_key, instance=instance)).token

    def metadata(self, token: str | None = None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token or self.token()}"),)

    @property
    def auth_store(self):
        return self.suite.components[0].store  # auth is always first

    def make_user(self, plan: str = "lite", role: str = "manager", instance_name: str = "other") -> tuple[str, str]:
        """A new account with one instance and one user (its owner) holding role on it; returns
        (api_key, instance CRN)."""
        store = self.auth_store
        user = store.create_user(f"{new_api_key()[4:20]}@example.org")
        account = store.create_account(f"account-{instance_name}", user)
        instance = store.create_instance(account, instance_name, plan)
        store.create_policy(account, "user", user, instance["id"], role)
        return store.create_user_key(user)[0], instance["crn"]

    def run(self, coroutine):
        """Run a coroutine on the suite's event loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)


@contextlib.contextmanager
def suite_starter(base: Path) -> Iterator:
    """A start(*services, **overrides) function whose suites (data under base) stop at exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="suite-loop", daemon=True)
    thread.start()
    started: list[RunningSuite] = []

    def start(*services: str, backends=None, **overrides) -> RunningSuite:
        """backends: the devices service's adapters by name, in place of the default ones."""
        service_key = new_api_key()
        settings = SuiteSettings(**{"port": 0, "data_dir": str(base / f"data{len(started)}"),
                                    "service_key": service_key, "grace_seconds": 0.5,
                                    # one warm host each and one simulation worker, started on first use:
                                    # every suite a test starts pays for its processes
                                    "warm_hosts": 1, "warm_sandboxed_hosts": 0, "simulation_workers": 1,
                                    "warm_up": False, **overrides})
        components = build_components(settings, ("auth", *services), devices_backends=backends)
        suite = asyncio.run_coroutine_threadsafe(start_server(components, settings, front_door=True),
                                                 loop).result(timeout=60)
        bootstrap = json.loads((Path(settings.data_dir) / "bootstrap.json").read_text())
        running = RunningSuite(f"127.0.0.1:{suite.port}", Path(settings.data_dir), bootstrap["api_key"],
                               bootstrap["instance"], service_key, suite, loop)
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            asyncio.run_coroutine_threadsafe(running.suite.stop(0.5), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


@pytest.fixture
def start_suite(tmp_path: Path) -> Iterator:
    with suite_starter(tmp_path) as start:
        yield start


@pytest.fixture(scope="module")
def start_module_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """start_suite for a suite the tests of one module share: give each test its own instance
    (RunningSuite.make_user) so that what one test creates does not show in another's listings."""
    with suite_starter(tmp_path_factory.mktemp("suite")) as start:
        yield start


@pytest.fixture
def bell():
    """The Bell circuit users run: measured into a 2-bit register "c", about half 00, half 11."""
    from qruntime import ReferenceCircuits

    return ReferenceCircuits.bell()


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (dropped after it); skips if the server is down."""
    with new_postgres_database() as url:
        yield url
