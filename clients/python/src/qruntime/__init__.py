"""Python client of qruntime, a self-hostable quantum job service in the style of Qiskit Runtime.

    from qruntime import IBMRuntimeService, ReferenceCircuits

    IBMRuntimeService.save_account(auth="cloud", token=API_KEY, instance=CRN_OR_NAME, url="127.0.0.1:8443")
    service = IBMRuntimeService()
    job = service.run(program_id="sampler", options={"backend_name": "ibmq_qasm_simulator"},
                      inputs={"circuits": ReferenceCircuits.bell()})
    print(job.result())

The names below are the public API; the modules starting with ``_`` are not. Errors live in
:mod:`qruntime.exceptions`, the wire encoding of inputs and results in :mod:`qruntime.encoding`, and the
generated gRPC code in ``qruntime.<service>.v1``.
"""

from importlib.metadata import PackageNotFoundError, version

from . import encoding, exceptions
from ._backends import (
    BackendConfiguration,
    BackendProperties,
    BackendStatus,
    GateProperties,
    QubitProperties,
)
from ._jobs import JobStatus, ResultDecoder, RuntimeJob
from ._options import RuntimeOptions
from ._programs import ProgramParameter, RuntimeProgram
from ._service import IBMRuntimeService, QiskitRuntimeService
from ._session import Batch, Session
from .circuits import ReferenceCircuits
from .exceptions import (
    IBMAccountError,
    IBMApiError,
    IBMBackendApiError,
    IBMBackendApiProtocolError,
    IBMBackendError,
    IBMBackendValueError,
    IBMError,
    IBMInputValueError,
    IBMNotAuthorizedError,
    IBMRuntimeError,
    RuntimeInvalidStateError,
    RuntimeJobFailureError,
    RuntimeJobMaxTimeoutError,
    RuntimeJobNotFound,
    RuntimeJobTimeoutError,
    RuntimeProgramNotFound,
)

# Names whose modules import Qiskit: imported only once asked for, so importing the client stays light.
_LAZY = {"RuntimeBackend": "_runtime_backend", "SamplerV2": "_primitives", "EstimatorV2": "_primitives",
         "RuntimeJobV2": "_primitives"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'qruntime' has no attribute {name!r}")


try:
    __version__ = version("qruntime")
    """The installed version of the client."""
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "BackendConfiguration",
    "BackendProperties",
    "BackendStatus",
    "Batch",
    "EstimatorV2",
    "GateProperties",
    "IBMAccountError",
    "IBMApiError",
    "IBMBackendApiError",
    "IBMBackendApiProtocolError",
    "IBMBackendError",
    "IBMBackendValueError",
    "IBMError",
    "IBMInputValueError",
    "IBMNotAuthorizedError",
    "IBMRuntimeError",
    "IBMRuntimeService",
    "JobStatus",
    "ProgramParameter",
    "QiskitRuntimeService",
    "QubitProperties",
    "ReferenceCircuits",
    "ResultDecoder",
    "RuntimeBackend",
    "RuntimeInvalidStateError",
    "RuntimeJob",
    "RuntimeJobFailureError",
    "RuntimeJobMaxTimeoutError",
    "RuntimeJobNotFound",
    "RuntimeJobTimeoutError",
    "RuntimeJobV2",
    "RuntimeOptions",
    "RuntimeProgram",
    "RuntimeProgramNotFound",
    "SamplerV2",
    "Session",
    "encoding",
    "exceptions",
]
