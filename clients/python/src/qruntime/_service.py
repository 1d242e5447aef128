"""The entry point users know from Qiskit Runtime: accounts, backends, programs and jobs of one instance."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from itertools import islice
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import grpc
from google.protobuf import field_mask_pb2

from . import _accounts, encoding
from ._backends import runtime_backend
from ._channel import DEFAULT_TIMEOUT, Transport
from ._jobs import ResultDecoder, RuntimeJob
from ._options import RuntimeOptions, to_job_options
from ._programs import RuntimeProgram, program_for_upload, program_update
from ._uploads import upload_if_large
from .devices.v1 import devices_service_pb2
from .exceptions import NotFoundError, _invalid_argument
from .jobs.v1 import jobs_service_pb2
from .programs.v1 import programs_service_pb2

if TYPE_CHECKING:
    from ._runtime_backend import RuntimeBackend
    from .primitives.v1.primitives_pb2 import PrimitiveInput

__all__ = ["IBMRuntimeService", "QiskitRuntimeService"]

_MAX_PAGE_SIZE = 200


class IBMRuntimeService:
    """A connection to a qruntime service as one instance: run programs, follow jobs, list backends.

    The account is the token and instance given, else the saved account ``name`` (else the default
    one) with any of ``token``, ``instance`` and ``url`` given replacing its own. The API key is
    checked at once: a refused key raises ``IBMNotAuthorizedError`` here rather than on first use.
    ``timeout`` is the seconds each call to the service may take. ``ca_file`` (or the
    ``QRUNTIME_CA_FILE`` environment variable) names the PEM CA bundle of a service that serves TLS.

    Raises:
        AccountNotFoundError: no account given and none saved.
        InvalidAccountError: the account's fields are invalid.
        IBMNotAuthorizedError: the service refused the API key, or the user has no role on the instance.
        NotFoundError: the key's account has no such instance.
        ServiceUnavailableError: the service could not be reached.
    """

    def __init__(
        self,
        auth: str | None = None,
        token: str | None = None,
        instance: str | None = None,
        url: str | None = None,
        name: str | None = None,
        channel: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ca_file: str | None = None,
    ) -> None:
        account = _accounts.resolve_account(auth, token, instance, url, name, channel)
        self._account = account
        self._transport = Transport(account.url, account.token, account.instance, timeout=timeout,
                                    ca_file=ca_file or os.environ.get("QRUNTIME_CA_FILE") or None)
        try:
            response = self._transport.tokens.response
        except BaseException:
            self._transport.close()
            raise
        self._instance = response.instance.crn or account.instance

    @staticmethod
    def save_account(
        auth: str | None = None,
        token: str | None = None,
        instance: str | None = None,
        url: str | None = None,
        name: str | None = None,
        overwrite: bool = False,
        channel: str | None = None,
        set_as_default: bool | None = None,
    ) -> None:
        """Save an account in ``~/.qiskit/qiskit-ibm.json`` (mode 0600) for later service objects.

        ``auth="cloud"`` (or ``channel="ibm_cloud"``) is the only kind; ``url`` defaults to
        ``127.0.0.1:8443``; ``name`` to ``"default-cloud"``.

        Raises:
            InvalidAccountError: a field is invalid.
            AccountAlreadyExistsError: that name is saved already and ``overwrite`` is false.
        """
        _accounts.save_account(auth, token, instance, url, name, overwrite, channel, set_as_default)

    @staticmethod
    def saved_accounts() -> dict[str, dict[str, Any]]:
        """Every account this client saved, by name, as stored (tokens included); other libraries'
        entries in the shared file are left out."""
        return _accounts.saved_accounts()

    @staticmethod
    def delete_account(name: str | None = None) -> bool:
        """Delete a saved account (by default the default one); whether one was deleted."""
        return _accounts.delete_account(name)

    def active_account(self) -> dict[str, str]:
        """The account this service object uses: ``auth``, ``channel``, ``token``, ``instance`` (its
        CRN) and ``url``, as saved accounts hold them."""
        return {**self._account.to_saved_format(), "instance": self._instance}

    def instances(self) -> list[str]:
        """The CRNs of the instances of this instance's account."""
        return self._transport.account_instances()

    @property
    def instance(self) -> str:
        """The CRN of the instance this service object acts as."""
        return self._instance

    @property
    def url(self) -> str:
        """The ``host:port`` of the service."""
        return self._account.url

    # Backends

    def backends(
        self,
        name: str | None = None,
        min_num_qubits: int | None = None,
        instance: str | None = None,
        filters: Callable[[RuntimeBackend], bool] | None = None,
        **kwargs: Any,
    ) -> list[RuntimeBackend]:
        """The backends the instance may use, filtered as qiskit-ibm-runtime filters them.

        ``name`` and ``min_num_qubits`` select by name and width; ``filters`` is a function that keeps a
        backend when it returns True; every other keyword is an attribute the backend must have with
        that value, looked up on the backend, then its configuration, then its status (e.g.
        ``simulator=False``, ``operational=True``, ``max_shots=100000``). ``instance`` is accepted for
        qiskit-ibm-runtime's signature: a service object acts as one instance, so another instance
        is refused.

        Raises:
            IBMInputValueError: ``instance`` names another instance, or a keyword no backend has.
        """
        _check_instance(instance, self._instance)
        request = devices_service_pb2.ListBackendsRequest(page_size=_MAX_PAGE_SIZE)
        found = []
        for message in self._transport.paginate(self._transport.devices.ListBackends, request, "backends"):
            backend = runtime_backend(message, self._transport, service=self)
            if name is not None and backend.name != name:
                continue
            if min_num_qubits is not None and backend.num_qubits < min_num_qubits:
                continue
            if not all(_attribute(backend, key) == value for key, value in kwargs.items()):
                continue
            if filters is not None and not filters(backend):
                continue
            found.append(backend)
        return found

    def backend(self, name: str) -> RuntimeBackend:
        """The backend ``name``.

        Raises:
            NotFoundError: no such backend.
            IBMNotAuthorizedError: the instance's plan does not include it.
        """
        request = devices_service_pb2.GetBackendRequest(name=name)
        return runtime_backend(
            self._transport.call(self._transport.devices.GetBackend, request).backend, self._transport, service=self
        )

    def least_busy(
        self,
        min_num_qubits: int | None = None,
        instance: str | None = None,
        filters: Callable[[RuntimeBackend], bool] | None = None,
        **kwargs: Any,
    ) -> RuntimeBackend:
        """The operational backend with the fewest pending jobs among those ``backends(...)`` with the
        same arguments returns (e.g. ``least_busy(simulator=False, min_num_qubits=100)``).

        Raises:
            NotFoundError: no operational backend matches.
        """
        kwargs.setdefault("operational", True)
        candidates = self.backends(min_num_qubits=min_num_qubits, instance=instance, filters=filters, **kwargs)
        if not candidates:
            raise NotFoundError(grpc.StatusCode.NOT_FOUND, "", "no operational backend matches the criteria")
        return min(candidates, key=lambda b: b.proto.status.pending_jobs)

    # Jobs

    def run(
        self,
        program_id: str,
        inputs: Mapping[str, Any],
        options: RuntimeOptions | Mapping[str, Any] | None = None,
        *,
        result_decoder: ResultDecoder | None = None,
        request_id: str | None = None,
        callback: Callable[[str, Any], None] | None = None,
        job_tags: list[str] | None = None,
        session_id: str | None = None,
        primitive_input: PrimitiveInput | None = None,
    ) -> RuntimeJob:
        """Start a job of ``program_id`` and return it at once, QUEUED.

        ``inputs`` is a dict of the program's inputs; circuits, numpy arrays and complex numbers in it
        are encoded as described in :mod:`qruntime.encoding`. ``options`` chooses the backend and log
        level. A retry with the same ``request_id`` returns the job the first call created. With
        ``callback``, ``callback(job_id, interim_result)`` is called for each interim result the program
        publishes (see :meth:`RuntimeJob.stream_results`). ``job_tags`` label the job. With ``session_id``
        the job joins that session or batch (see :class:`Session`) and runs on its backend. ``primitive_input``
        (a ``qruntime.primitives.v1.PrimitiveInput``, what SamplerV2 and EstimatorV2 send) gives the sampler's
        or estimator's inputs typed, ``inputs`` then being empty. Inputs larger than one message carries
        (32 MiB encoded) are uploaded in chunks first, checksummed, and the job made from the upload.

        Raises:
            IBMInputValueError: inputs or options invalid, here or according to the service.
            NotFoundError: no such program, or no such backend.
            IBMNotAuthorizedError: the backend named is not in the instance's plan, the role may not run
                jobs, or the session is another user's.
            FailedPreconditionError: the session no longer accepts jobs.
        """
        if not isinstance(program_id, str) or not program_id:
            raise _invalid_argument("program_id", "must be a non-empty string")
        if not isinstance(inputs, Mapping):
            raise _invalid_argument(
                "inputs", f"must be a dict of input name to value, not {type(inputs).__name__}"
            )
        for key in inputs:
            if not isinstance(key, str):
                raise _invalid_argument("inputs", f"input names must be strings, not {key!r}")
        try:
            encoded = encoding.dumps(dict(inputs))
        except (TypeError, ValueError) as exc:
            raise _invalid_argument("inputs", str(exc)) from exc
        upload_id = upload_if_large(self._transport, encoded, primitive_input)  # "": the inputs fit the request
        request = jobs_service_pb2.CreateJobRequest(
            program_id=program_id,
            inputs="" if upload_id else encoded,
            options=to_job_options(options),
            request_id=request_id or "",
            tags=job_tags or [],
            session_id=session_id or "",
            input_upload_id=upload_id,
        )
        if primitive_input is not None and not upload_id:
            request.primitive_input.CopyFrom(primitive_input)
        created = self._transport.call(self._transport.jobs.CreateJob, request)
        job = RuntimeJob(created.job, self._transport, result_decoder,
                         first_result=created.result if created.HasField("result") else None)
        if callback is not None:
            job.stream_results(callback, result_decoder)
        return job

    def job(self, job_id: str) -> RuntimeJob:
        """The job ``job_id``.

        Raises:
            NotFoundError: no such job in the instance.
        """
        request = jobs_service_pb2.GetJobRequest(job_id=job_id)
        return RuntimeJob(self._transport.call(self._transport.jobs.GetJob, request).job, self._transport)

    def jobs(
        self,
        limit: int | None = 10,
        skip: int = 0,
        backend_name: str | None = None,
        pending: bool | None = None,
        program_id: str | None = None,
        instance: str | None = None,
        job_tags: list[str] | None = None,
        session_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> list[RuntimeJob]:
        """The instance's jobs, newest first: at most ``limit`` (None: all) after skipping ``skip``.

        ``pending=True`` keeps queued and running jobs, ``pending=False`` ended ones; ``backend_name``,
        ``program_id`` and ``session_id`` keep those jobs; ``job_tags`` jobs with every one of those
        tags; ``created_after`` and ``created_before`` (datetimes; naive ones are UTC) bound the
        creation time. ``instance`` is accepted for qiskit-ibm-runtime's signature (see ``backends``).

        Raises:
            IBMInputValueError: an argument is invalid.
        """
        for field, value in (("limit", limit), ("skip", skip)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise _invalid_argument(field, f"must be a non-negative integer, not {value!r}")
        if skip is None:
            raise _invalid_argument("skip", "must be a non-negative integer, not None")
        _check_instance(instance, self._instance)
        if limit == 0:
            return []
        terms = [f"{field} = {_quoted(value)}" for field, value in (
            ("backend", backend_name), ("program", program_id), ("session", session_id)) if value]
        terms += [f"tags:{_quoted(tag)}" for tag in job_tags or []]
        if pending is not None:
            terms.append("state IN (QUEUED, RUNNING)" if pending else "state IN (DONE, ERROR, CANCELLED)")
        for op, at in ((">", created_after), ("<", created_before)):
            if at is not None:
                if not isinstance(at, datetime):
                    raise _invalid_argument("created_after" if op == ">" else "created_before",
                                            f"must be a datetime, not {type(at).__name__}")
                at = at if at.tzinfo else at.replace(tzinfo=UTC)
                terms.append(f'create_time {op} "{at.isoformat()}"')
        page_size = min((limit or _MAX_PAGE_SIZE) + skip, _MAX_PAGE_SIZE)
        request = jobs_service_pb2.ListJobsRequest(page_size=page_size, filter=" AND ".join(terms))
        pages = self._transport.paginate(self._transport.jobs.ListJobs, request, "jobs")
        stop = None if limit is None else skip + limit
        return [RuntimeJob(message, self._transport) for message in islice(pages, skip, stop)]

    def delete_job(self, job_id: str) -> None:
        """Delete an ended job with its result and logs.

        Raises:
            NotFoundError: no such job in the instance.
            FailedPreconditionError: the job has not ended.
        """
        self._transport.call(self._transport.jobs.DeleteJob, jobs_service_pb2.DeleteJobRequest(job_id=job_id))

    # Programs

    def programs(self, limit: int | None = None) -> list[RuntimeProgram]:
        """The programs the instance may see (public ones and its own), ordered by id; at most ``limit``."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise _invalid_argument("limit", f"must be None or a non-negative integer, not {limit!r}")
        page_size = min(limit or _MAX_PAGE_SIZE, _MAX_PAGE_SIZE)
        request = programs_service_pb2.ListProgramsRequest(page_size=page_size)
        pages = self._transport.paginate(self._transport.programs.ListPrograms, request, "programs")
        return [RuntimeProgram(p) for p in islice(pages, limit)]

    def program(self, program_id: str) -> RuntimeProgram:
        """The program ``program_id``, with its source when the instance owns it.

        Raises:
            NotFoundError: no such program visible to the instance.
        """
        request = programs_service_pb2.GetProgramRequest(program_id=program_id)
        return RuntimeProgram(self._transport.call(self._transport.programs.GetProgram, request).program)

    def upload_program(self, data: str, metadata: Mapping[str, Any]) -> str:
        """Upload Python source defining ``main(backend, user_messenger, **inputs)``; the new program's id.

        ``metadata`` keys: ``name`` (required), ``description``, ``max_execution_time`` (whole seconds),
        ``parameters`` (or ``inputs``: dicts with name, type, required, description) and ``is_public``.

        Raises:
            IBMInputValueError: the source or metadata is invalid.
        """
        request = programs_service_pb2.CreateProgramRequest(program=program_for_upload(data, metadata))
        return self._transport.call(self._transport.programs.CreateProgram, request).program.id

    def update_program(
        self,
        program_id: str,
        data: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        is_public: bool | None = None,
    ) -> RuntimeProgram:
        """Change the source, metadata (keys as for ``upload_program``) or visibility of an owned program.

        Raises:
            IBMInputValueError: nothing to change, or invalid values.
            NotFoundError: no such program visible to the instance.
            IBMNotAuthorizedError: a built-in program, or a public one another instance owns.
        """
        program, paths = program_update(program_id, data, metadata, is_public)
        request = programs_service_pb2.UpdateProgramRequest(
            program=program, update_mask=field_mask_pb2.FieldMask(paths=paths)
        )
        return RuntimeProgram(self._transport.call(self._transport.programs.UpdateProgram, request).program)

    def delete_program(self, program_id: str) -> None:
        """Delete a program the instance owns.

        Raises:
            NotFoundError: no such program visible to the instance.
            IBMNotAuthorizedError: a built-in program, or a public one another instance owns.
        """
        request = programs_service_pb2.DeleteProgramRequest(program_id=program_id)
        self._transport.call(self._transport.programs.DeleteProgram, request)

    # Lifetime

    def close(self) -> None:
        """Close the connection; the service object and its jobs cannot call the service afterwards."""
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<IBMRuntimeService(url={self.url!r}, instance={self._instance!r})>"


def _check_instance(instance: str | None, own: str) -> None:
    if instance is not None and instance != own:
        raise _invalid_argument(
            "instance", f"this service object acts as instance {own}; make another one for {instance}")


def _attribute(backend: RuntimeBackend, key: str) -> Any:
    """A backend's attribute by qiskit-ibm-runtime's filter rules: the backend's own, else its
    configuration's, else its status's; IBMInputValueError when none has it."""
    if key == "operational":  # a live value: the status, as listed
        return backend.proto.status.operational
    for source in (backend, backend.configuration(), backend.status()):
        if hasattr(source, key):
            return getattr(source, key)
    raise _invalid_argument(key, "is not an attribute of a backend, its configuration or its status")


def _quoted(value: str) -> str:
    """A ListJobs filter value: in double quotes, with \\ and \" escaped."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


QiskitRuntimeService = IBMRuntimeService
"""The same class under the name qiskit-ibm-runtime users know."""
