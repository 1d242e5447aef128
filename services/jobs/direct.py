"""The sampler's common case, run without a program host: one circuit, sampled as it came.

A sampler job whose inputs are one encoded circuit (with optional shots and seed) needs nothing a
host offers: nothing binds its parameters or selects among circuits, and the devices service decodes
and checks the circuit in its own worker anyway. So the runner passes the circuit's QPY bytes to
RunCircuits unopened (the service decodes no user circuit) and shapes the counts into the sampler's
result, which is arithmetic on a dictionary. It saves the host's fork, two frames each way, and a
decode and re-encode of the circuit. Everything else goes to builtin_programs/sampler.py in a host,
which owns the sampler's meaning; the two must agree (tests/jobs/test_jobs_executor.py runs both).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json

from qruntime.devices.v1 import devices_service_pb2
from qruntime.encoding import TYPE_KEY, VALUE_KEY, dumps, is_encoded_circuit

from .backend import BackendError
from .builtin_programs.sampler import DEFAULT_SHOTS
from .outcome import Outcome
from .store import DONE, ERROR, JobRecord

_INPUTS = {"circuits", "shots", "seed"}
_MAX_SEED = 2**63 - 1
_SAMPLER_REFUSES = {"NO_MEASUREMENTS", "UNBOUND_PARAMETERS"}  # devices' reasons for what sampler.py checks


@dataclasses.dataclass(frozen=True)
class DirectSample:
    """A sampler job that can run directly: its one circuit's QPY bytes, shots and seed."""

    circuit_qpy: bytes
    shots: int
    seed: int | None


def direct_sample(job: JobRecord) -> DirectSample | None:
    """The job as a DirectSample when it is the sampler's common case; None to run it in a host."""
    if job.runtime != "BUILTIN" or job.program_id != "sampler":
        return None
    try:
        inputs = json.loads(job.inputs or "{}")
    except ValueError:
        return None
    return sample_of(inputs)


def sample_of(inputs: object) -> DirectSample | None:
    """The built-in sampler's parsed inputs as a DirectSample when they are its common case, else None."""
    if not isinstance(inputs, dict) or not set(inputs) <= _INPUTS:
        return None
    circuits = inputs.get("circuits")
    if isinstance(circuits, list) and len(circuits) == 1:
        circuits = circuits[0]
    shots, seed = inputs.get("shots", DEFAULT_SHOTS), inputs.get("seed")
    if not is_encoded_circuit(circuits) or not _whole(shots, 1) or not (seed is None or _whole(seed, 0)):
        return None  # the host's sampler says what is wrong with them
    if circuits[TYPE_KEY] != "QuantumCircuit":
        return None
    try:
        qpy = base64.b64decode(circuits[VALUE_KEY], validate=True)
    except (binascii.Error, ValueError, TypeError):
        return None
    return DirectSample(qpy, int(shots), None if seed is None else int(seed))


def sampling_request(job_id: str, backend: str, sample: DirectSample) -> devices_service_pb2.RunCircuitsRequest:
    request = devices_service_pb2.RunCircuitsRequest(
        backend=backend, circuits_qpy=sample.circuit_qpy, shots=sample.shots, job_id=job_id)
    if sample.seed is not None:
        request.seed = sample.seed
    return request


def sampler_outcome(backend: str, sample: DirectSample, response: devices_service_pb2.RunCircuitsResponse,
                    started: dt.datetime) -> Outcome:
    """The end of the sampler's run on backend, with its log lines, as sampler.main would end it."""
    logs = [("INFO", f"sampling {len(response.results)} circuit(s), {sample.shots} shots each, on {backend}",
             started)]
    counts = [dict(sorted(result.counts.items())) for result in response.results]
    quasi_dists = [{k: v / (sum(c.values()) or 1) for k, v in c.items()} for c in counts]
    result = {"quasi_dists": quasi_dists, "counts": counts, "metadata": [{"shots": sample.shots} for _ in counts]}
    logs.append(("INFO", f"sampled {len(counts)} circuit(s)", _now()))
    return Outcome(DONE, result=dumps(result), logs=tuple(logs))


def refused_outcome(err: BackendError) -> Outcome:
    """The sampler's end when the backend refuses or fails its circuit, as the host reports it; a
    circuit the sampler itself would have refused (nothing measured, parameters unbound) is the
    user's INVALID_INPUT, as in the host."""
    if err.error.reason in _SAMPLER_REFUSES:
        message = f"the circuit cannot be sampled: {err.error.message}"
        return Outcome(ERROR, "INVALID_INPUT", message, logs=(("ERROR", message, _now()),))
    message = f"the backend refused or failed the circuits ({err.error.reason}): {err.error.message}"
    return Outcome(ERROR, "BACKEND_ERROR", message, logs=(("ERROR", message, _now()),))


def _whole(value, minimum: int) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return (isinstance(value, int) or value.is_integer()) and minimum <= value <= _MAX_SEED


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
