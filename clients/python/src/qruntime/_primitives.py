"""Qiskit's V2 primitives on qruntime: SamplerV2, EstimatorV2 and their job, RuntimeJobV2.

    from qruntime import IBMRuntimeService, SamplerV2
    sampler = SamplerV2(mode=service.backend("ibmq_qasm_simulator"))
    result = sampler.run([circuit], shots=1000).result()
    result[0].data.meas.get_counts()

A job's PUBs travel typed (qruntime.primitives.v1): each circuit as QPY, once, never decoded on its way
to the devices service; parameter values and observables as arrays with their shapes. Results come
back typed too (packed bits, expectation values) and become Qiskit's PrimitiveResult. Imported on
first use, as it imports Qiskit.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterable
from functools import cached_property
from types import SimpleNamespace
from typing import Any

import numpy as np
from google.protobuf import json_format
from qiskit import qpy
from qiskit.primitives import BaseEstimatorV2, BasePrimitiveJob, BaseSamplerV2
from qiskit.primitives.containers import (
    BitArray,
    DataBin,
    PrimitiveResult,
    PubResult,
    SamplerPubResult,
)
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.sampler_pub import SamplerPub

from ._bit_array import CountedBitArray
from ._jobs import JobStatus, RuntimeJob
from ._session import current_session
from ._uploads import read_inputs
from .exceptions import IBMRuntimeError, RuntimeInvalidStateError, RuntimeJobFailureError, _invalid_argument
from .primitives.v1 import primitives_pb2 as pb

__all__ = ["EstimatorV2", "RuntimeJobV2", "SamplerV2"]


class RuntimeJobV2(RuntimeJob, BasePrimitiveJob):
    """A primitive's job, as qiskit-ibm-runtime's RuntimeJobV2: ``status()`` is one of the strings
    "QUEUED", "RUNNING", "DONE", "ERROR", "CANCELLED" (a JobStatus, which is a str), ``result()`` Qiskit's
    ``PrimitiveResult``."""

    def __init__(self, job: RuntimeJob) -> None:
        RuntimeJob.__init__(self, job.proto, job._transport, first_result=job._first_result)
        BasePrimitiveJob.__init__(self, job.proto.id)
        self._primitive_result: PrimitiveResult | None = None

    @cached_property
    def inputs(self) -> pb.PrimitiveInput:  # type: ignore[override]
        """The job's typed inputs (its PUBs and options), fetched on first use; read in chunks when larger
        than one message."""
        job = self._full_view()
        if job.omitted_inputs_bytes:
            return json_format.Parse(read_inputs(self._transport, job.id)[0], pb.PrimitiveInput())
        return job.primitive_input

    @property
    def primitive_id(self) -> str:
        """``"sampler"`` or ``"estimator"``."""
        return self.program_id

    @property
    def session_id(self) -> str | None:
        """The session or batch the job runs in, if any."""
        return getattr(self.proto, "session_id", "") or None

    def errored(self) -> bool:
        """Whether the job ended in ERROR."""
        return self.status() is JobStatus.ERROR

    def result(self, timeout: float | None = None) -> PrimitiveResult:  # type: ignore[override]
        """Wait for the job to end; its result as Qiskit's PrimitiveResult.

        Raises:
            RuntimeJobFailureError: the job ended in ERROR.
            RuntimeInvalidStateError: the job was cancelled.
            RuntimeJobTimeoutError: the job had not ended after ``timeout`` seconds.
        """
        if self._primitive_result is None:
            status = self.wait_for_final_state(timeout)
            if status is JobStatus.ERROR:
                raise RuntimeJobFailureError(self.proto.id, self._reason(), self.proto.reason_message)
            if status is JobStatus.CANCELLED:
                raise RuntimeInvalidStateError(f"job {self.proto.id!r} was cancelled; it has no result")
            self._primitive_result = to_primitive_result(self._fetch_typed_result())
        return self._primitive_result

    def _fetch_typed_result(self) -> pb.PrimitiveResult:
        response = self._result_part()
        if response.HasField("primitive_result"):
            return response.primitive_result
        if not response.result:
            raise IBMRuntimeError(f"job {self.proto.id!r} has no typed result; read it with RuntimeJob.result()")
        # Larger than one message: its proto3 JSON, in chunks.
        return json_format.Parse(self._fetch_result(), pb.PrimitiveResult())

    def __repr__(self) -> str:
        return f"<RuntimeJobV2('{self.proto.id}', '{self.primitive_id}')>"


# -- modes -----------------------------------------------------------------------------------------------


def submit(mode: Any, program_id: str, primitive: pb.PrimitiveInput) -> RuntimeJobV2:
    """Create the primitive's job in mode: a backend (RuntimeBackend), or a Session or Batch (any object
    with `service`, `backend_name` and `session_id`); no mode inside a ``with Session(...)`` block means
    that session, as in qiskit-ibm-runtime."""
    mode = mode if mode is not None else current_session()
    if mode is None:
        raise _invalid_argument("mode", "give a backend, a Session or a Batch")
    service = getattr(mode, "service", None)
    backend_name = getattr(mode, "backend_name", None) or getattr(mode, "name", None)
    if service is None or not isinstance(backend_name, str):
        raise _invalid_argument(
            "mode", f"must be a backend from a service, a Session or a Batch, not {type(mode).__name__}")
    job = service.run(program_id, {}, {"backend_name": backend_name}, primitive_input=primitive,
                      session_id=getattr(mode, "session_id", None))
    return RuntimeJobV2(job)


# -- encoding PUBs ---------------------------------------------------------------------------------------


def _circuit(circuit) -> pb.Circuit:
    buffer = io.BytesIO()
    qpy.dump(circuit, buffer)
    return pb.Circuit(qpy=buffer.getvalue())


def _bindings(pub) -> pb.BindingsArray | None:
    circuit, values = pub.circuit, pub.parameter_values
    if not circuit.parameters and values.shape == ():
        return None
    array = np.asarray(values.as_array(circuit.parameters), dtype=float)
    return pb.BindingsArray(parameter_names=[p.name for p in circuit.parameters],
                            values=pb.Tensor(shape=list(array.shape), values=array.ravel().tolist()))


def sampler_input(pubs: Iterable[Any], shots: int | None, options: Any) -> pb.PrimitiveInput:
    coerced = [SamplerPub.coerce(pub, shots) for pub in pubs]
    options._warn_ignored()
    message = pb.SamplerInput(options=pb.SamplerOptions(default_shots=options.default_shots or 0))
    if options._seed(options.seed_simulator) is not None:
        message.options.seed = options._seed(options.seed_simulator)
    for pub in coerced:
        item = message.pubs.add(circuit=_circuit(pub.circuit))
        bindings = _bindings(pub)
        if bindings is not None:
            item.parameter_values.CopyFrom(bindings)
        if pub.shots is not None:
            item.shots = pub.shots
    return pb.PrimitiveInput(sampler=message)


def estimator_input(pubs: Iterable[Any], precision: float | None, options: Any) -> pb.PrimitiveInput:
    coerced = [EstimatorPub.coerce(pub, precision) for pub in pubs]
    options._warn_ignored()
    message = pb.EstimatorInput(options=pb.EstimatorOptions(
        default_precision=options.default_precision or 0, default_shots=options.default_shots or 0,
        resilience_level=options.resilience_level or 0))
    if options._seed(options.seed_estimator) is not None:
        message.options.seed = options._seed(options.seed_estimator)
    for pub in coerced:
        item = message.pubs.add(circuit=_circuit(pub.circuit))
        observables = pub.observables
        item.observables.shape.extend(observables.shape)
        for index in np.ndindex(*observables.shape):
            terms = observables[index] if observables.shape else observables.tolist()
            labels = list(terms)
            coeffs = [complex(terms[label]) for label in labels]
            if any(abs(c.imag) > 1e-12 for c in coeffs):
                raise _invalid_argument("observables", "coefficients must be real (Hermitian observables)")
            item.observables.observables.add(paulis=labels, coeffs=[c.real for c in coeffs])
        bindings = _bindings(pub)
        if bindings is not None:
            item.parameter_values.CopyFrom(bindings)
        if pub.precision is not None:
            item.precision = pub.precision
    return pb.PrimitiveInput(estimator=message)


# -- decoding results ------------------------------------------------------------------------------------


def _tensor(tensor: pb.Tensor) -> np.ndarray:
    return np.asarray(tensor.values, dtype=float).reshape(tuple(tensor.shape))


def _bit_array(bits: pb.BitArray) -> BitArray:
    shape = (*bits.shape, bits.num_shots, math.ceil(bits.num_bits / 8))
    return CountedBitArray(np.frombuffer(bits.packed, dtype=np.uint8).reshape(shape), bits.num_bits)


def to_primitive_result(result: pb.PrimitiveResult) -> PrimitiveResult:
    """Qiskit's PrimitiveResult of a typed result."""
    kind = result.WhichOneof("primitive")
    body = getattr(result, kind)
    metadata = {"version": body.metadata.version or 2, "backend": body.metadata.backend,
                "execution_seconds": body.metadata.execution_seconds}
    pubs: list[PubResult] = []
    if kind == "sampler":
        for pub in body.pub_results:
            fields = {reg.name: _bit_array(reg.bits) for reg in pub.registers}
            shape = tuple(pub.registers[0].bits.shape) if pub.registers else ()
            pubs.append(SamplerPubResult(DataBin(**fields, shape=shape),
                                         metadata={"shots": pub.metadata.shots, "circuit_metadata": {}}))
    else:
        for pub in body.pub_results:
            evs, stds = _tensor(pub.evs), _tensor(pub.stds)
            pubs.append(PubResult(DataBin(evs=evs, stds=stds, shape=evs.shape),
                                  metadata={"target_precision": pub.metadata.target_precision,
                                            "shots": pub.metadata.shots, "circuit_metadata": {}}))
    return PrimitiveResult(pubs, metadata=metadata)


# -- the primitives --------------------------------------------------------------------------------------


class OptionGroup(SimpleNamespace):
    """A group of qiskit-ibm-runtime options (``options.dynamical_decoupling.enable = True``): any
    attribute may be set. The groups qruntime does not apply are accepted, as IBM's local testing mode
    accepts them, and a warning names what was set and ignored."""


# qiskit-ibm-runtime's option groups that qruntime's simulators and emulated systems do not apply.
_IGNORED_GROUPS = ("dynamical_decoupling", "twirling", "execution", "environment")


class _Options:
    """Options as qiskit-ibm-runtime's, set as attributes or with update(); those that matter here are
    sent with the job, the rest of IBM's groups accepted and ignored with a warning."""

    _names: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.simulator = OptionGroup(seed_simulator=None)
        for group in _IGNORED_GROUPS:
            setattr(self, group, OptionGroup())

    def update(self, **values: Any) -> None:
        """Set options by name; a group's as a dict (``update(twirling={"enable_gates": True})``)."""
        for name, value in values.items():
            if name in ("simulator", *_IGNORED_GROUPS):
                vars(getattr(self, name)).update(dict(value))
            elif name in self._names:
                setattr(self, name, value)
            else:
                raise _invalid_argument("options", f"{name!r} is not an option (options: {self._names})")

    def _seed(self, own: int | None) -> int | None:
        return own if own is not None else self.simulator.seed_simulator

    def _warn_ignored(self) -> None:
        ignored = [f"{group}.{key}" for group in _IGNORED_GROUPS
                   for key, value in vars(getattr(self, group)).items() if value not in (None, False)]
        if ignored:
            warnings.warn(f"qruntime does not apply these options, and ignores them: {', '.join(ignored)}",
                          UserWarning, stacklevel=4)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self._names)})"


class SamplerOptions(_Options):
    """default_shots (None: 1024) and seed_simulator (None: a fresh one per job; also
    ``simulator.seed_simulator``, as in IBM's local mode)."""

    _names = ("default_shots", "seed_simulator")

    def __init__(self, default_shots: int | None = None, seed_simulator: int | None = None) -> None:
        super().__init__()
        self.default_shots, self.seed_simulator = default_shots, seed_simulator


class EstimatorOptions(_Options):
    """default_precision (None: 1/64, 4096 shots per basis), default_shots (if set, the shots per basis
    instead: precision 1/sqrt(default_shots), as IBM's), seed_estimator (None: a fresh one; also
    ``simulator.seed_simulator``) and resilience_level (0: none, the default; 1: readout error
    mitigation by twirled readout, TREX)."""

    _names = ("default_precision", "default_shots", "seed_estimator", "resilience_level")

    def __init__(self, default_precision: float | None = None, default_shots: int | None = None,
                 seed_estimator: int | None = None, resilience_level: int = 0) -> None:
        super().__init__()
        self.default_precision, self.default_shots = default_precision, default_shots
        self.seed_estimator, self.resilience_level = seed_estimator, resilience_level


def _options(cls: type[_Options], given: Any) -> _Options:
    if isinstance(given, cls):
        return given
    options = cls()
    options.update(**dict(given or {}))
    return options


class SamplerV2(BaseSamplerV2):
    """Qiskit's SamplerV2 running on qruntime: ``SamplerV2(mode=backend | session | batch)``,
    ``run(pubs, shots=None)`` returns a RuntimeJobV2 whose result holds one BitArray per classical
    register (``result[0].data.meas.get_counts()``)."""

    def __init__(self, mode: Any = None, options: SamplerOptions | dict | None = None) -> None:
        self._mode = mode
        self.options = _options(SamplerOptions, options)

    @property
    def mode(self) -> Any:
        """The backend, Session or Batch the jobs run in."""
        return self._mode

    def run(self, pubs: Iterable[Any], *, shots: int | None = None) -> RuntimeJobV2:
        """Sample the PUBs (circuits, or (circuit, parameter values, shots) tuples) in one job; shots for
        the PUBs that set none (None: options.default_shots, else 1024).

        Raises:
            IBMInputValueError: a PUB cannot run (the error names the PUB and why); nothing is queued.
        """
        return submit(self._mode, "sampler", sampler_input(pubs, shots, self.options))


class EstimatorV2(BaseEstimatorV2):
    """Qiskit's EstimatorV2 running on qruntime: ``EstimatorV2(mode=backend | session | batch)``,
    ``run(pubs, precision=None)`` returns a RuntimeJobV2 whose result holds ``evs`` and ``stds``."""

    def __init__(self, mode: Any = None, options: EstimatorOptions | dict | None = None) -> None:
        self._mode = mode
        self.options = _options(EstimatorOptions, options)

    @property
    def mode(self) -> Any:
        """The backend, Session or Batch the jobs run in."""
        return self._mode

    def run(self, pubs: Iterable[Any], *, precision: float | None = None) -> RuntimeJobV2:
        """Estimate the PUBs ((circuit, observables, parameter values, precision) tuples) in one job;
        precision for the PUBs that set none (None: options.default_precision, else 1/64).

        Raises:
            IBMInputValueError: a PUB cannot run (the error names the PUB and why); nothing is queued.
        """
        return submit(self._mode, "estimator", estimator_input(pubs, precision, self.options))
