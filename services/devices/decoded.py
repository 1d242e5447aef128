"""Decoded PUB circuits a simulation worker keeps for the jobs it served last.

An iterative program (a VQE's estimator) sends the same parameterised circuit at every step with new
parameter values; decoding its QPY again at each step is work the worker can skip. An entry is kept
under its job, the function that decoded it (the estimator keeps circuits without their final
measurements) and the SHA-256 of its QPY bytes, so a job is only ever given what its own bytes decode
to, and another job that sends the same bytes decodes them itself: nothing one job sent is reachable,
or measurably faster, from another. Requests without a job (CheckCircuits) keep nothing. Bounded: the
last MAX_JOBS jobs, MAX_PER_JOB circuits each, each of at most MAX_QPY_BYTES. Whoever takes a circuit
from here must not change it (binding parameters and adding bases copy it)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

from qiskit import QuantumCircuit

Decode = Callable[[bytes], QuantumCircuit]  # e.g. primitives.qpy_circuit: the key holds it with the bytes' digest
MAX_JOBS = 4
MAX_PER_JOB = 16
MAX_QPY_BYTES = 1 << 20  # larger circuits are decoded at each use: the cache stays small next to a simulation


class DecodedCircuits:
    """QPY circuits decoded once per job, least recently used jobs and circuits dropped first."""

    def __init__(self, max_jobs: int = MAX_JOBS, per_job: int = MAX_PER_JOB, max_qpy_bytes: int = MAX_QPY_BYTES):
        self._max_jobs = max_jobs
        self._per_job = per_job
        self._max_qpy_bytes = max_qpy_bytes
        self._jobs: OrderedDict[str, OrderedDict[tuple[Decode, bytes], QuantumCircuit]] = OrderedDict()
        self.hits = 0  # for tests and logs: how many decodes were skipped

    def decoder(self, job_id: str) -> Callable[[bytes, Decode], QuantumCircuit]:
        """decode(data, how): how(data), kept for job_id's later requests with the same data and how;
        a request without a job keeps nothing."""
        if not job_id:
            return lambda data, how: how(data)
        return lambda data, how: self._decode(job_id, data, how)

    def _decode(self, job_id: str, data: bytes, how: Decode) -> QuantumCircuit:
        if len(data) > self._max_qpy_bytes:
            return how(data)
        key = (how, hashlib.sha256(data).digest())
        entries = self._jobs.get(job_id)
        if entries is not None and key in entries:
            self._jobs.move_to_end(job_id)
            entries.move_to_end(key)
            self.hits += 1
            return entries[key]
        circuit = how(data)  # what does not decode raises, and is not kept
        entries = self._jobs.setdefault(job_id, OrderedDict())
        self._jobs.move_to_end(job_id)
        entries[key] = circuit
        if len(entries) > self._per_job:
            entries.popitem(last=False)
        if len(self._jobs) > self._max_jobs:
            self._jobs.popitem(last=False)
        return circuit

    def jobs(self) -> list[str]:
        """The jobs with circuits kept, least recently used first."""
        return list(self._jobs)
