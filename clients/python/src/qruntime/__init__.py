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


def __getattr__(name: str):
    if name == "RuntimeBackend":  # it imports Qiskit: only once asked for
        from ._runtime_backend import RuntimeBackend

        return RuntimeBackend
    raise AttributeError(f"module 'qruntime' has no attribute {name!r}")


try:
    __version__ = version("qruntime")
    """The installed version of the client."""
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "BackendConfiguration",
    "Batch",
    "BackendProperties",
    "BackendStatus",
    "GateProperties",
    "IBMRuntimeService",
    "JobStatus",
    "ProgramParameter",
    "QiskitRuntimeService",
    "QubitProperties",
    "ReferenceCircuits",
    "ResultDecoder",
    "RuntimeBackend",
    "RuntimeJob",
    "RuntimeOptions",
    "RuntimeProgram",
    "Session",
    "encoding",
    "exceptions",
]
