"""Helpers of the client tests against the real suite (the fixtures are in conftest.py).

``Recorder`` observes the client's own channel: each call's method, request, the metadata sent and
the trailing metadata the server answered with (its request id). The other helpers reach into the running suite the
way an operator or another user would affect it: a busy backend, an expired or foreign token.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import jwt
from qruntime import IBMRuntimeService

from qruntime_kit.auth import Principal
from qruntime_kit.tokens import issue_token

SERVICES = ("programs", "devices", "jobs")
WORKERS = 4  # jobs the module suites run at once
# What the module suites' simulations may use: 28 qubits of state vector, whatever this machine has.
SIMULATION_MEMORY = 4 << 30
INSTANCE_NAME = "my-instance"
LITE_SIMULATORS = [
    "ibmq_qasm_simulator", "simulator_extended_stabilizer", "simulator_mps", "simulator_stabilizer",
    "simulator_statevector",
]
STANDARD_SYSTEMS = ["ibm_lima", "ibm_manila", "ibm_sherbrooke", "ibm_torino"]
BUILTIN_PROGRAMS = ["estimator", "hello-world", "sampler"]


@dataclasses.dataclass(frozen=True)
class Call:
    """One call the client made, as its channel saw it."""

    method: str  # e.g. "GetJob"
    request: Any  # a copy, as sent
    sent: dict[str, str]  # the metadata the client sent
    echoed: dict[str, str]  # the trailing metadata the server answered with
    code: grpc.StatusCode


class Recorder(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Notes every call on the channels it wraps (a stream's when it starts, without its outcome);
    changes nothing about them."""

    def __init__(self) -> None:
        self.log: list[Call] = []
        self._lock = threading.Lock()

    def intercept_unary_unary(self, continuation, client_call_details, request):
        sent = dict(client_call_details.metadata or ())
        copy = type(request)()
        copy.CopyFrom(request)  # paging reuses one request object
        outcome = continuation(client_call_details, request)  # the response, or the RpcError
        method = client_call_details.method
        method = method.decode() if isinstance(method, bytes) else method
        with self._lock:
            self.log.append(Call(method.rsplit("/", 1)[-1], copy, sent, dict(outcome.trailing_metadata() or ()),
                                 outcome.code()))
        return outcome

    def intercept_unary_stream(self, continuation, client_call_details, request):
        copy = type(request)()
        copy.CopyFrom(request)
        method = client_call_details.method
        method = method.decode() if isinstance(method, bytes) else method
        with self._lock:
            self.log.append(Call(method.rsplit("/", 1)[-1], copy, dict(client_call_details.metadata or ()), {}, None))
        return continuation(client_call_details, request)

    def calls(self, method: str) -> list[Call]:
        """The calls of ``method`` (its short name), oldest first."""
        with self._lock:
            return [call for call in self.log if call.method == method]


def component(suite, name: str):
    """The suite's component of service ``name`` (auth, programs, devices or jobs)."""
    return next(c for c in suite.suite.components if c.name == name)


def signed_token(suite, like: str, ttl_seconds: int, private_key_pem: str | None = None,
                 key_id: str | None = None) -> str:
    """A token with the claims of token ``like``, signed with the auth service's own key (or the one
    given) to live ``ttl_seconds``; negative beyond the 30 s leeway: already expired."""
    claims = jwt.decode(like, options={"verify_signature": False})
    principal = Principal(subject=claims["sub"], kind=claims["kind"], account_id=claims.get("acct", ""),
                          instance_crn=claims.get("ins", ""), plan=claims.get("plan", ""),
                          actions=frozenset(claims.get("act", ())), account_role=claims.get("arole", ""))
    if private_key_pem is None:
        key = component(suite, "auth").store.signing_keys()[0]
        key_id, private_key_pem = key["key_id"], key["private_key_pem"]
    return issue_token(principal, key_id=key_id or "unknown", private_key_pem=private_key_pem,
                       ttl_seconds=ttl_seconds, audiences=claims["aud"], api_key_id=claims.get("akid", ""))[0]


def plant_token(service: IBMRuntimeService, token: str) -> None:
    """Make the service object's token source hold ``token`` as if CreateToken had just returned it
    with an hour to live. The real auth service hands out only good tokens: this is how a test puts
    an expired or foreign one on the wire."""
    source = service._transport.tokens
    with source._lock:
        source._token, source._refresh_at = token, float("inf")


@contextlib.contextmanager
def busy(suite, backend: str) -> Iterator[None]:
    """Hold every execution slot of ``backend``, as long runs of other users would: runs sent to it
    wait in its queue (counted in its pending_jobs, their jobs RUNNING) until the block ends."""
    queue = component(suite, "devices").queues._queue(backend)
    for _ in range(queue.adapter.concurrency):
        suite.run(queue.slots.acquire())
    try:
        yield
    finally:
        for _ in range(queue.adapter.concurrency):
            suite.loop.call_soon_threadsafe(queue.slots.release)


def wait_until(condition, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        time.sleep(0.02)
