"""The options of one job, as a dataclass or a plain dict, and their translation to JobOptions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .exceptions import _invalid_argument
from .jobs.v1 import job_pb2

__all__ = ["RuntimeOptions"]

_LOG_LEVELS = {
    name: job_pb2.LogLevel.Value(f"LOG_LEVEL_{name}")
    for name in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
}


@dataclass
class RuntimeOptions:
    """Options of one job; ``service.run`` also takes them as a dict with the same keys.

    A dict may say ``"backend"`` instead of ``"backend_name"`` (the newer qiskit-ibm-runtime spelling)
    and give a backend object instead of its name. Any other key is refused.
    """

    backend_name: str = ""
    """The backend to run on; empty lets the service pick the least busy one the instance may use."""
    log_level: str | None = None
    """How much the program logs: DEBUG, INFO, WARNING, ERROR or CRITICAL; None means INFO."""

    def to_proto(self) -> job_pb2.JobOptions:
        """The JobOptions message.

        Raises:
            IBMInputValueError: a field has a wrong type or an unknown log level.
        """
        if not isinstance(self.backend_name, str):
            raise _invalid_argument("options.backend_name", f"must be a string, not {self.backend_name!r}")
        level = job_pb2.LOG_LEVEL_UNSPECIFIED
        if self.log_level is not None:
            name = self.log_level.upper() if isinstance(self.log_level, str) else None
            if name not in _LOG_LEVELS:
                raise _invalid_argument(
                    "options.log_level", f"must be one of {', '.join(_LOG_LEVELS)}, not {self.log_level!r}"
                )
            level = _LOG_LEVELS[name]
        return job_pb2.JobOptions(backend_name=self.backend_name, log_level=level)


def to_job_options(options: RuntimeOptions | Mapping[str, Any] | None) -> job_pb2.JobOptions:
    """Translate the ``options`` argument of ``service.run`` to JobOptions.

    Raises:
        IBMInputValueError: an unknown key, a value of the wrong type, or an unknown log level.
    """
    if options is None:
        return RuntimeOptions().to_proto()
    if isinstance(options, RuntimeOptions):
        return options.to_proto()
    if not isinstance(options, Mapping):
        raise _invalid_argument("options", f"must be a dict or RuntimeOptions, not {type(options).__name__}")
    values = dict(options)
    if "backend" in values:
        backend = values.pop("backend")
        backend = getattr(backend, "name", backend)  # a RuntimeBackend stands for its name
        if values.setdefault("backend_name", backend) != backend:
            raise _invalid_argument("options.backend", "disagrees with options.backend_name; give one")
    known = {f.name for f in fields(RuntimeOptions)}
    for key in values:
        if key not in known:
            raise _invalid_argument(
                f"options.{key}", f"unknown option; known options: {', '.join(sorted(known))}"
            )
    if "backend_name" in values:
        values["backend_name"] = getattr(values["backend_name"], "name", values["backend_name"])
    if values.get("backend_name") is None:
        values.pop("backend_name", None)
    return RuntimeOptions(**values).to_proto()
