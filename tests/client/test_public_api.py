"""Pins the public names of the client: adding or removing one must be a decision, not an accident."""

from __future__ import annotations

import inspect

import qruntime
from qruntime import encoding, exceptions

PUBLIC = [
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

EXCEPTIONS = [
    "AccountAlreadyExistsError",
    "IBMAccountError",
    "IBMApiError",
    "IBMBackendApiError",
    "IBMBackendApiProtocolError",
    "IBMBackendError",
    "IBMBackendValueError",
    "RuntimeJobMaxTimeoutError",
    "RuntimeJobNotFound",
    "RuntimeProgramNotFound",
    "AccountNotFoundError",
    "AccountsError",
    "AlreadyExistsError",
    "FailedPreconditionError",
    "FieldViolation",
    "IBMError",
    "IBMInputValueError",
    "IBMNotAuthorizedError",
    "IBMRuntimeError",
    "InvalidAccountError",
    "NotFoundError",
    "ResourceExhaustedError",
    "RuntimeInvalidStateError",
    "RuntimeJobFailureError",
    "RuntimeJobTimeoutError",
    "RuntimeServiceError",
    "ServiceUnavailableError",
    "from_grpc_error",
]

ENCODING = [
    "TYPE_KEY",
    "VALUE_KEY",
    "dump_circuits_qpy",
    "dumps",
    "is_encoded_circuit",
    "load_circuits_qpy",
    "loads",
]


def test_public_names_are_pinned() -> None:
    assert qruntime.__all__ == PUBLIC
    assert exceptions.__all__ == EXCEPTIONS
    assert encoding.__all__ == ENCODING
    for module in (qruntime, exceptions, encoding):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name} is listed but missing"


def test_qiskit_runtime_service_is_the_same_class() -> None:
    assert qruntime.QiskitRuntimeService is qruntime.IBMRuntimeService


def test_version() -> None:
    assert isinstance(qruntime.__version__, str) and qruntime.__version__[0].isdigit()


def test_every_public_name_has_a_docstring() -> None:
    missing = []
    for module in (qruntime, exceptions, encoding):
        for name in module.__all__:
            obj = getattr(module, name)
            documentable = inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj)
            if documentable and not obj.__doc__:
                missing.append(f"{module.__name__}.{name}")
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or not callable(member) and not isinstance(member, property):
                        continue
                    if not inspect.getdoc(member):
                        missing.append(f"{module.__name__}.{name}.{attr}")
    assert missing == []


def test_exception_hierarchy() -> None:
    assert issubclass(exceptions.RuntimeServiceError, exceptions.IBMRuntimeError)
    assert issubclass(exceptions.IBMRuntimeError, exceptions.IBMError)
    assert issubclass(exceptions.IBMInputValueError, ValueError)
    assert issubclass(exceptions.InvalidAccountError, ValueError)
    assert issubclass(exceptions.AccountsError, exceptions.IBMError)
    for name in (
        "IBMInputValueError",
        "IBMNotAuthorizedError",
        "NotFoundError",
        "AlreadyExistsError",
        "FailedPreconditionError",
        "ResourceExhaustedError",
        "ServiceUnavailableError",
    ):
        assert issubclass(getattr(exceptions, name), exceptions.RuntimeServiceError)


def test_qiskit_ibm_runtimes_exception_names_are_importable_from_qruntime() -> None:
    import qiskit_ibm_runtime.exceptions as original

    names = [name for name, value in vars(original).items()
             if inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == original.__name__]
    assert len(names) >= 15
    missing = [name for name in names if not isinstance(getattr(qruntime, name, None), type)]
    assert missing == []
    assert qruntime.RuntimeJobNotFound is exceptions.NotFoundError  # what service.job() of an unknown id raises
    assert issubclass(qruntime.IBMBackendValueError, ValueError)
