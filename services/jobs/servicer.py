"""JobsService over gRPC: checks the caller's rights, validates, resolves program and backend, and
calls the JobStore; the executor runs what CreateJob queues.

Jobs belong to the caller's instance: another instance's job answers NOT_FOUND exactly like one that
does not exist. Service principals (no instance) may read every job. CreateJob asks the programs and
devices services ON BEHALF OF the user, forwarding the user's token, so the user's visibility of
programs and the user's plan's backends apply; the runner later calls the devices service with the
service's own token.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt

from google.protobuf import duration_pb2
from qruntime.devices.v1 import backend_pb2, devices_service_pb2, devices_service_pb2_grpc
from qruntime.jobs.v1 import job_pb2, jobs_service_pb2, jobs_service_pb2_grpc
from qruntime.programs.v1 import program_pb2, programs_service_pb2_grpc

from qruntime_kit.audit import event_json, pending_success
from qruntime_kit.auth import Principal, current_principal
from qruntime_kit.errors import FailedPrecondition, InvalidArgument, NotFound, ServiceError, Unavailable
from qruntime_kit.interceptors import current_request_id, describe_call
from qruntime_kit.logging import get_logger
from qruntime_kit.outbound import Credentials, call
from qruntime_kit.store import page_size

from . import quick, typed, uploads, validation
from .admission import AdmissionLimits, check_admission
from .audit_outbox import AuditOutbox
from .backend_lookup import BackendLookup
from .circuit_checks import Check, check_circuits, circuit_checks, refused_everywhere
from .executor import JobExecutor
from .filters import parse_filter
from .idempotency import check_same_request, request_fingerprint
from .messages import (
    JobPages,
    interim_result_message,
    job_message,
    log_entry_message,
    log_level_name,
    state_name,
    timestamp,
)
from .program_lookup import ProgramLookup
from .quick import QuickRun
from .sessions import check_session_job
from .store import DONE, FINAL_STATES, JobRecord, JobStore, ResultDigest, new_job_id, utcnow, would_create
from .uploads import UploadLimits
from .validation import check_create_request, check_inputs, check_tags
from .watch import JobWatch

log = get_logger("jobs")

JOBS_PAGE = {"default": 50, "maximum": 200}
LOGS_PAGE = {"default": 500, "maximum": 5000}
INTERIM_PAGE = {"default": 100, "maximum": 1000}
DEFAULT_LIMIT_SECONDS = 3 * 60 * 60  # when neither the backend nor the program sets one
MAX_BATCH_GET = 100
RESULT_CHUNK_BYTES = 16 * 1024 * 1024  # a result larger than this comes in chunks of at most this size
INPUTS_CHUNK_BYTES = 16 * 1024 * 1024  # so do inputs (GetJobInputs)
# A CreateJob request up to this size (a sampler job's few circuits) is parsed and digested on the event
# loop: 8 us for a Bell job's, 19 us at 8 KiB (measured).
INLINE_CHECK_BYTES = 8 * 1024


_JOB_STATE_VALUES = frozenset(job_pb2.JobState.values())  # values() makes a new list at every call


@dataclasses.dataclass(frozen=True)
class JobsDependencies:
    """What the servicer works with, ready once the component has started."""

    store: JobStore
    executor: JobExecutor
    watch: JobWatch
    audit_outbox: AuditOutbox
    programs: programs_service_pb2_grpc.ProgramsServiceStub
    devices: devices_service_pb2_grpc.DevicesServiceStub
    credentials: Credentials
    limits: AdmissionLimits = AdmissionLimits()
    uploads: UploadLimits = UploadLimits()


class JobsServicer(jobs_service_pb2_grpc.JobsServiceServicer):
    def __init__(self) -> None:
        self._deps: JobsDependencies | None = None
        self._pages = JobPages()
        self._programs = ProgramLookup()
        self._backends = BackendLookup()

    def attach(self, deps: JobsDependencies) -> None:
        """Start answering with these dependencies (calls before are answered UNAVAILABLE)."""
        self._deps = deps

    @property
    def deps(self) -> JobsDependencies:
        if self._deps is None:
            raise Unavailable("the jobs service is starting; retry shortly", reason="SERVICE_STARTING")
        return self._deps

    async def CreateJob(self, request, context):
        principal = current_principal()
        principal.require("job.create")
        instance = principal.require_instance("jobs")
        # Up to 32 MiB of JSON to parse, and the whole request to digest: off the event loop, unless the
        # request is small enough for microseconds of it (a thread's round trip takes 0.1-0.2 ms).
        request_bytes = request.ByteSize()
        if request_bytes <= INLINE_CHECK_BYTES:
            inputs, fingerprint = _checked_request(request)
        else:
            inputs, fingerprint = await asyncio.to_thread(_checked_request, request)
        uploads.check_alone(request)
        primitive = request.primitive_input if request.HasField("primitive_input") else None
        if primitive is not None:
            typed.check_request(request.program_id, primitive, request.inputs)
        deps = self.deps
        if request.input_upload_id:  # what it holds, for the fingerprint (one a retried call's job used too)
            upload = await asyncio.to_thread(deps.store.get_upload, request.input_upload_id, instance=instance,
                                             owner=principal.subject, used=True)
            fingerprint = request_fingerprint(request, upload)  # of a request without its inputs: small
        if request.request_id:  # a retry: answer with the job the first call created, if it asked the same
            existing = await asyncio.to_thread(deps.store.find_by_request_id, instance, request.request_id)
            if existing is not None:
                check_same_request(existing, fingerprint, request.program_id, request.inputs)
                return jobs_service_pb2.CreateJobResponse(job=job_message(existing, job_pb2.JOB_VIEW_BASIC))
        text, digest = request.inputs or "{}", None
        if request.input_upload_id:  # from here on, the upload's inputs are checked as the request's would be
            uploaded = await asyncio.to_thread(uploads.uploaded_inputs, deps.store, request, instance=instance,
                                               owner=principal.subject)
            text, inputs, primitive, digest = uploaded.text, uploaded.inputs, uploaded.primitive, uploaded.digest
        backend_name = request.options.backend_name
        if request.session_id:  # the job runs on its session's backend
            session = await asyncio.to_thread(deps.store.get_session, request.session_id, instance=instance)
            check_session_job(session, principal.subject, backend_name)
            backend_name = session.backend
        if deps.limits.any:  # a store read: in a thread, and only when there is something to check
            await asyncio.to_thread(check_admission, deps.store, instance, deps.limits)
        metadata = await deps.credentials.metadata(on_behalf_of=principal)
        job_id, ran = new_job_id(), None
        if quick.candidate(request, backend_name, request_bytes):  # maybe a quick job (quick.py)
            program = await self._programs.program(deps.programs, request.program_id, metadata)
            _check_program_inputs(program, inputs, primitive)
            backend, chosen, ran = await self._backend_quickly(backend_name, metadata, program, inputs, primitive,
                                                               job_id, request)
        else:
            program, backend, chosen = await self._program_and_backend(request, backend_name, metadata, inputs,
                                                                       primitive)
        limit_seconds, limit_source = time_limit(backend, program, _requested_limit(request))
        values = dict(
            instance=instance,
            owner=principal.subject,
            program_id=program.id,
            runtime=program_pb2.ProgramRuntime.Name(program.runtime).removeprefix("PROGRAM_RUNTIME_"),
            backend=backend.name,
            log_level=log_level_name(request.options.log_level),
            max_execution_seconds=limit_seconds,
            time_limit_source=limit_source,
            request_id=request.request_id,
            trace_id=current_request_id(),
            program_version=program.version,
            request_fingerprint=fingerprint,
            tags=sorted(set(request.tags)),
            # The job records the backend chosen for it and why.
            first_log="" if backend_name else f"backend {backend.name}: {chosen}",
            session_id=request.session_id,
            primitive_inputs=primitive is not None,
            input_upload_id=request.input_upload_id,
        )

        def store() -> tuple[JobRecord, bool, jobs_service_pb2.GetJobResultResponse | None]:
            """The job stored (validate_only: as it would be), in one trip off the event loop."""
            stored, digest_of_stored = _stored_inputs(text, primitive, digest)
            values.update(inputs=stored, inputs_digest=digest_of_stored)
            if request.validate_only:  # a dry run: admitted, on this backend, under this limit; nothing stored
                return would_create(**values), False, None
            # The call's success audit event, stored with the job (audit_outbox.py).
            pending = pending_success()
            values.update(audit_event=event_json(pending.event()) if pending is not None else "")
            if ran is None:
                (job, created), result = deps.store.create(**values), None
            else:
                job, created, result = self._store_quick_job(values, job_id, ran)
            if created and pending is not None:  # committed, and nothing left that can fail the call
                pending.stored = True
            return job, created, result

        job, created, result = await asyncio.to_thread(store)
        if request.validate_only:
            return jobs_service_pb2.CreateJobResponse(job=job_message(job, job_pb2.JOB_VIEW_BASIC))
        if not created:  # a concurrent call with the same request_id stored its job first
            check_same_request(job, fingerprint, request.program_id, request.inputs)
        if created:
            deps.audit_outbox.wake()
            if ran is None:
                deps.executor.wake()
            describe_call(job_id=job.id, program_id=job.program_id, backend=job.backend, backend_chosen=chosen,
                          instance=instance, limit_seconds=job.max_execution_seconds,
                          session_id=job.session_id or None, input_upload_id=request.input_upload_id or None,
                          ran_at_once=job.state if ran is not None else None)
        return jobs_service_pb2.CreateJobResponse(job=job_message(job, job_pb2.JOB_VIEW_BASIC), result=result)

    def _store_quick_job(self, values: dict, job_id: str, ran: QuickRun):
        """(job, created, result): the quick job stored ended and, if it ended DONE with a result that
        fits one message, that result as GetJobResult answers it at offset 0 (None for the job of an
        earlier call with the same request_id)."""
        ended = ran.ended(self.deps.executor.runner_id)
        job, created = self.deps.store.create(**values, job_id=job_id, ended=ended)
        if not created or job.state != DONE or ended.result_json is None:
            return job, created, None
        if typed.is_primitive(job):  # what _result_part reads back from its proto3 JSON: the devices' answer
            result = ran.response.primitive_result
            if result.ByteSize() <= RESULT_CHUNK_BYTES:
                return job, created, jobs_service_pb2.GetJobResultResponse(primitive_result=result)
        digest = ended.result_digest  # as stored: computed once
        if digest.size > RESULT_CHUNK_BYTES:
            return job, created, None
        return job, created, jobs_service_pb2.GetJobResultResponse(
            result=ended.result_json, total_bytes=digest.size, sha256=digest.sha256)

    async def GetJob(self, request, context):
        principal = _reader(current_principal())
        view = _view(request.view)
        store, instance, inputs = self.deps.store, _scope(principal), _inputs_read(view)
        # The message is built in the same thread: a full view parses the job's stored inputs (MiBs of JSON).
        job = await asyncio.to_thread(
            lambda: job_message(store.get(request.job_id, instance=instance, inputs=inputs), view))
        return jobs_service_pb2.GetJobResponse(job=job)

    async def BatchGetJobs(self, request, context):
        principal = _reader(current_principal())
        view = _view(request.view)
        if not 1 <= len(request.job_ids) <= MAX_BATCH_GET:
            raise InvalidArgument(
                f"job_ids holds {len(request.job_ids)} ids; ask for 1 to {MAX_BATCH_GET} jobs at a time",
                reason="INVALID_BATCH_SIZE", field_violations=[("job_ids", f"1 to {MAX_BATCH_GET} ids")],
            )
        store, instance, ids, inputs = self.deps.store, _scope(principal), list(request.job_ids), _inputs_read(view)
        jobs = await asyncio.to_thread(
            lambda: [job_message(j, view) for j in store.get_many(ids, instance=instance, inputs=inputs)])
        return jobs_service_pb2.BatchGetJobsResponse(jobs=jobs)

    async def ListJobs(self, request, context):
        principal = _reader(current_principal())
        size = page_size(request.page_size, **JOBS_PAGE)
        view = _view(request.view)
        if request.state not in _JOB_STATE_VALUES:
            raise InvalidArgument(
                f"state {request.state} is not a JobState", reason="INVALID_STATE",
                field_violations=[("state", "must be a JobState value")],
            )
        where = parse_filter(request.filter, caller=principal.subject, program_id=request.program_id,
                             state=state_name(request.state) if request.state else "")
        store, instance = self.deps.store, _scope(principal)

        def page() -> jobs_service_pb2.ListJobsResponse:  # messages built here too (see GetJob)
            if view == job_pb2.JOB_VIEW_BASIC:  # rows: JobPages makes records only of jobs it has no message of
                return self._pages.response(*store.list_rows(instance, page_size=size, page_token=request.page_token,
                                                             where=where))
            jobs, token = store.list(instance, page_size=size, page_token=request.page_token, where=where,
                                     inputs=_inputs_read(view))
            now = utcnow()
            return jobs_service_pb2.ListJobsResponse(jobs=[job_message(j, view, now=now) for j in jobs],
                                                     next_page_token=token)

        return await asyncio.to_thread(page)

    async def UpdateJobTags(self, request, context):
        principal = current_principal()
        principal.require("job.create")
        tags = check_tags(request.tags)
        job = await asyncio.to_thread(self.deps.store.set_tags, request.job_id, tags, instance=_scope(principal))
        log.info("job tags updated", job_id=job.id, tags=tags)
        return jobs_service_pb2.UpdateJobTagsResponse(job=job_message(job, job_pb2.JOB_VIEW_BASIC))

    async def GetUsage(self, request, context):
        principal = _reader(current_principal())
        instance = principal.require_instance("jobs")
        now = utcnow()
        start = (request.start_time.ToDatetime(dt.UTC) if request.HasField("start_time")
                 else now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
        end = request.end_time.ToDatetime(dt.UTC) if request.HasField("end_time") else now
        if end <= start:
            raise InvalidArgument("end_time must be after start_time", reason="INVALID_PERIOD",
                                  field_violations=[("end_time", "must be after start_time")])
        rows = await asyncio.to_thread(self.deps.store.usage, instance, start, end)
        response = jobs_service_pb2.GetUsageResponse(start_time=timestamp(start), end_time=timestamp(end))
        backends: dict[str, jobs_service_pb2.BackendUsage] = {}
        for row in rows:
            counter = {"DONE": "jobs_done", "ERROR": "jobs_error", "CANCELLED": "jobs_cancelled"}[row.state]
            setattr(response, counter, getattr(response, counter) + row.jobs)
            response.usage_seconds += row.usage_seconds
            usage = backends.setdefault(row.backend, jobs_service_pb2.BackendUsage(backend=row.backend))
            usage.jobs += row.jobs
            usage.usage_seconds += row.usage_seconds
        response.backends.extend(backends[name] for name in sorted(backends))
        return response

    async def WatchJob(self, request, context):
        principal = _reader(current_principal())
        if request.after_sequence < 0:
            raise InvalidArgument("after_sequence must not be negative", reason="INVALID_SEQUENCE",
                                  field_violations=[("after_sequence", "0, or the last sequence received")])
        instance = _scope(principal)
        job, replay, result = await asyncio.to_thread(
            self._watch_opening, request.job_id, instance, request.after_sequence, request.include_result)
        # Messages encoded by the watch, once for all its watchers, and written rather than yielded: a
        # coroutine's writes skip the per-response step a generator's pass (kit.interceptors).
        if replay is not None:
            for message in replay:
                await context.write(message)
        else:
            async for message in self.deps.watch.follow(job.id, request.after_sequence):
                await context.write(message)
            if request.include_result:  # the stream closes after the job's end: with its result, if it is DONE
                with contextlib.suppress(NotFound):  # deleted meanwhile: its events were all there is
                    result = await asyncio.to_thread(self._result_part, job.id, instance, 0, done_only=False)
        if result is not None:
            await context.write(jobs_service_pb2.WatchJobResponse(result=result))

    def _watch_opening(self, job_id: str, instance: str | None, after: int, include_result: bool):
        """(job, replay, result): for a job that has ended, its messages after `after` and (when asked, and
        it is DONE) its result, read in one trip; replay None for one still going, or with more events
        than one read takes, which the watch follows."""
        job = self.deps.store.get(job_id, instance=instance)
        if job.state not in FINAL_STATES:
            return job, None, None
        replay = self.deps.watch.replay_ended(job.id, after)
        if replay is None or not include_result:
            return job, replay, None
        with contextlib.suppress(NotFound):  # deleted meanwhile
            return job, replay, self._result_part(job.id, instance, 0, done_only=False, job=job)
        return job, replay, None

    async def CancelJob(self, request, context):
        principal = current_principal()
        principal.require("job.create")
        deps = self.deps
        instance = _scope(principal)
        job = await asyncio.to_thread(
            lambda: job_message(deps.store.cancel(request.job_id, instance=instance), job_pb2.JOB_VIEW_BASIC))
        deps.executor.cancel(job.id)  # if it runs here; other replicas see it at their next claim renewal
        log.info("job cancelled", job_id=job.id)
        return jobs_service_pb2.CancelJobResponse(job=job)

    async def DeleteJob(self, request, context):
        principal = current_principal()
        principal.require("job.delete")
        await asyncio.to_thread(self.deps.store.delete, request.job_id, instance=_scope(principal))
        log.info("job deleted", job_id=request.job_id)
        return jobs_service_pb2.DeleteJobResponse()

    async def GetJobResult(self, request, context):
        principal = _reader(current_principal())
        _check_offset(request.offset)
        return await asyncio.to_thread(self._result_part, request.job_id, _scope(principal), request.offset)

    def _result_part(self, job_id: str, instance: str | None, offset: int, *, done_only: bool = True,
                     job: JobRecord | None = None) -> jobs_service_pb2.GetJobResultResponse | None:
        """GetJobResult's answer, read in one trip off the event loop; for a job that is not DONE,
        FAILED_PRECONDITION, or None when not done_only (WatchJob's include_result). job: the job, if
        read already."""
        store = self.deps.store
        job = job or store.get(job_id, instance=instance)
        if job.state != DONE:
            if not done_only:
                return None
            raise FailedPrecondition(
                f"job {job.id!r} is {job.state}; only a DONE job has a result"
                + (f" ({job.reason}: {job.reason_message})" if job.reason else ""),
                reason="JOB_NOT_DONE",
                metadata={"job_id": job.id, "state": f"JOB_STATE_{job.state}"},
            )
        # One byte past the chunk, to see whether the chunk would end inside a character.
        digest, data = store.result_part(job.id, offset, RESULT_CHUNK_BYTES + 1)
        # A typed result small enough comes as itself (its JSON form, stored, is larger than the message).
        if typed.is_primitive(job) and offset == 0 and digest.size <= 2 * RESULT_CHUNK_BYTES:
            whole = data if len(data) == digest.size else (store.get_result(job.id) or "").encode()
            result = typed.primitive_result(whole.decode())
            if result.ByteSize() <= RESULT_CHUNK_BYTES:
                return jobs_service_pb2.GetJobResultResponse(primitive_result=result)
        text, next_offset = _chunk(digest, data, offset, RESULT_CHUNK_BYTES, "result")
        return jobs_service_pb2.GetJobResultResponse(result=text, total_bytes=digest.size, sha256=digest.sha256,
                                                     next_offset=next_offset)

    async def GetJobInputs(self, request, context):
        principal = _reader(current_principal())
        _check_offset(request.offset)
        store, instance = self.deps.store, _scope(principal)

        def read() -> jobs_service_pb2.GetJobInputsResponse:  # one trip off the event loop for it all
            job = store.get(request.job_id, instance=instance)
            head, tail = typed.served_span(job)
            digest, data = store.inputs_part(job.id, head + request.offset, INPUTS_CHUNK_BYTES + 1)
            if digest is None:  # a job stored before inputs digests were kept: its inputs fit one message
                digest = typed.served_digest(store.get(job.id, inputs=None).inputs, typed.is_primitive(job))
                store.keep_inputs_digest(job.id, digest)
            data = data[:max(digest.size - request.offset, 0)]  # the closing brace of a primitive's is not served
            text, next_offset = _chunk(digest, data, request.offset, INPUTS_CHUNK_BYTES, "inputs")
            return jobs_service_pb2.GetJobInputsResponse(inputs=text, total_bytes=digest.size, sha256=digest.sha256,
                                                         next_offset=next_offset, primitive=typed.is_primitive(job))

        return await asyncio.to_thread(read)

    async def CreateInputUpload(self, request, context):
        principal = current_principal()
        principal.require("job.create")
        instance = principal.require_instance("jobs")
        deps = self.deps
        content = uploads.check_new_upload(request, deps.uploads)
        upload = await asyncio.to_thread(
            deps.store.create_upload, instance=instance, owner=principal.subject, content=content,
            total_bytes=request.total_bytes, sha256=request.sha256, lifetime_seconds=deps.uploads.lifetime_seconds,
            max_instance_bytes=deps.uploads.max_instance_bytes)
        log.info("input upload created", upload_id=upload.id, content=content, total_bytes=upload.total_bytes,
                 instance=instance)
        return jobs_service_pb2.CreateInputUploadResponse(upload=uploads.upload_message(upload))

    async def UploadInputChunk(self, request, context):
        principal = current_principal()
        principal.require("job.create")
        instance = principal.require_instance("jobs")
        uploads.check_chunk(request)
        upload = await asyncio.to_thread(  # hashes up to 16 MiB and writes them
            self.deps.store.add_upload_chunk, request.upload_id, instance=instance, owner=principal.subject,
            offset=request.offset, data=request.data)
        return jobs_service_pb2.UploadInputChunkResponse(upload=uploads.upload_message(upload))

    async def ListJobLogs(self, request, context):
        principal = _reader(current_principal())
        store = self.deps.store
        size = page_size(request.page_size, **LOGS_PAGE)
        job = await asyncio.to_thread(store.get, request.job_id, instance=_scope(principal))
        entries, token = await asyncio.to_thread(store.list_logs, job.id, page_size=size, page_token=request.page_token)
        return jobs_service_pb2.ListJobLogsResponse(
            entries=[log_entry_message(e) for e in entries], next_page_token=token
        )

    async def ListJobInterimResults(self, request, context):
        principal = _reader(current_principal())
        store = self.deps.store
        size = page_size(request.page_size, **INTERIM_PAGE)
        job = await asyncio.to_thread(store.get, request.job_id, instance=_scope(principal))
        results, token = await asyncio.to_thread(
            store.list_interim_results, job.id, page_size=size, page_token=request.page_token
        )
        return jobs_service_pb2.ListJobInterimResultsResponse(
            interim_results=[interim_result_message(r) for r in results], next_page_token=token
        )

    async def _program_and_backend(self, request, backend_name: str, metadata, inputs, primitive):
        """The job's program, its backend and why, once the inputs are checked for the program and the
        circuits for the backend. The program and the backend are asked for at once (the backend does
        not depend on the program); the circuits are checked once the backend is known."""
        deps = self.deps
        checked = asyncio.create_task(self._backend_and_circuits(backend_name, metadata, inputs, primitive))
        try:
            program = await self._programs.program(deps.programs, request.program_id, metadata)
            _check_program_inputs(program, inputs, primitive)
            backend, chosen = await checked
        finally:
            if not checked.done():
                checked.cancel()
            elif not checked.cancelled():
                checked.exception()  # seen: the program's own error, found first, is the one to report
        return program, backend, chosen

    async def _backend_quickly(self, name: str, metadata, program, inputs, primitive, job_id: str, request):
        """The named backend, why, and the job's run if it was quick (quick.py: then that run checked
        its circuits); else None, once the circuits are checked for the backend as for any job."""
        deps = self.deps
        backend, chosen = await self.resolve_backend(name, metadata)
        runtime = program_pb2.ProgramRuntime.Name(program.runtime).removeprefix("PROGRAM_RUNTIME_")
        run = quick.quick_run(job_id, program.id, runtime, backend, inputs, primitive)
        if run is not None:
            # Within the job's time limit too: past it, the job is queued, and its run there ends at the limit.
            limit, _ = time_limit(backend, program, _requested_limit(request))
            with deps.executor.quick_slot() as allowed:
                if allowed and (ran := await quick.run_quickly(deps.devices, await deps.credentials.metadata(), run,
                                                         limit)):
                    return backend, chosen, ran
        checks = await asyncio.to_thread(circuit_checks, inputs, primitive)
        await check_circuits(deps.devices, metadata, backend.name, checks)
        return backend, chosen, None

    async def _backend_and_circuits(self, name: str, metadata, inputs, primitive) -> tuple[backend_pb2.Backend, str]:
        """The job's backend and why (see resolve_backend), once the input circuits (or PUBs) are checked for it."""
        if not name:  # the least busy backend that accepts them (checked there by SelectBackend)
            return await self.resolve_backend("", metadata, await asyncio.to_thread(circuit_checks, inputs, primitive))
        # A named backend and the verdict on the circuits are asked for at once: the devices service checks
        # the user's access to the backend for both, and the backend's error, when there is one, is the one
        # reported, as when they were asked in turn.
        named = asyncio.create_task(self.resolve_backend(name, metadata))
        try:
            checks = await asyncio.to_thread(circuit_checks, inputs, primitive)
            await check_circuits(self.deps.devices, metadata, name, checks)
        except asyncio.CancelledError:
            named.cancel()
            raise
        except Exception:
            await asyncio.wait([named])
            named.result()  # its error first
            raise
        return await named

    async def resolve_backend(self, name: str, metadata, checks: list[Check] = ()) -> tuple[backend_pb2.Backend, str]:
        """The named backend, or the least busy one the user's plan allows that accepts the checks (chosen by
        devices, from the jobs queued and running here and the runs pending there); and why it was chosen."""
        devices = self.deps.devices
        if name:
            return await self._backends.backend(devices, name, current_principal().plan, metadata), "named"
        queued, running = await asyncio.to_thread(self.deps.store.load_by_backend)
        request = devices_service_pb2.SelectBackendRequest(queued_jobs=queued, running_jobs=running,
                                                           checks=[check for _, check in checks])
        try:
            chosen = await call(devices.SelectBackend, request, metadata=metadata)
        except ServiceError as err:
            if err.reason != "NO_BACKEND_RUNS_CIRCUITS":
                raise
            raise refused_everywhere(checks, err) from None
        return chosen.backend, chosen.reason


def time_limit(
    backend: backend_pb2.Backend, program: program_pb2.Program, requested: duration_pb2.Duration | None = None,
) -> tuple[float, str]:
    """The job's time limit in seconds and which it is (SYSTEM, PROGRAM, USER): the smallest of the
    backend's system limit, the program's max_execution_time and the limit the job asked for; unset
    ones ignored (none set: the system limit of a simulator)."""
    if requested is not None and (requested.seconds < 0 or requested.nanos < 0):
        raise InvalidArgument(
            "options.max_execution_time must not be negative", reason="INVALID_TIME_LIMIT",
            field_violations=[("options.max_execution_time", "a positive duration, or unset for none")],
        )
    candidates = [(backend.configuration.max_execution_time, "SYSTEM"), (program.max_execution_time, "PROGRAM"),
                  (requested or duration_pb2.Duration(), "USER")]
    limits = [(d.ToTimedelta().total_seconds(), source) for d, source in candidates if d.seconds > 0 or d.nanos > 0]
    return min(limits, key=lambda limit: limit[0]) if limits else (DEFAULT_LIMIT_SECONDS, "SYSTEM")


def _requested_limit(request: jobs_service_pb2.CreateJobRequest) -> duration_pb2.Duration | None:
    return request.options.max_execution_time if request.options.HasField("max_execution_time") else None


def _check_offset(offset: int) -> None:
    """A chunked read's offset: 0, or a previous response's next_offset."""
    if offset < 0:
        raise InvalidArgument("offset must not be negative", reason="INVALID_OFFSET",
                              field_violations=[("offset", "0, or the previous response's next_offset")])


def _chunk(digest: ResultDigest, data: bytes, offset: int, most: int, what: str) -> tuple[str, int]:
    """The chunk of a text's UTF-8 bytes from offset and the offset of the next (0 after the last),
    given data (its bytes from offset, one past `most` at most): at most `most` bytes, ending on a
    character's boundary (a UTF-8 continuation byte is 0b10xxxxxx)."""
    size = digest.size
    if offset > size or 0 < offset < size and data[0] & 0xC0 == 0x80:
        raise InvalidArgument(f"offset {offset} is not the start of a chunk of these {size}-byte {what}",
                              reason="INVALID_OFFSET",
                              field_violations=[("offset", "0, or the previous response's next_offset")])
    end = min(most, size - offset)
    while offset + end < size and data[end] & 0xC0 == 0x80:
        end -= 1
    return data[:end].decode(), offset + end if offset + end < size else 0


def _checked_request(request: jobs_service_pb2.CreateJobRequest) -> tuple[dict, str]:
    """The request's inputs, checked (check_create_request), and its fingerprint."""
    return check_create_request(request), request_fingerprint(request)


def _check_program_inputs(program: program_pb2.Program, inputs, primitive) -> None:
    """InvalidArgument unless the inputs suit the program: JSON ones its declared inputs; typed ones
    (primitive) only a built-in primitive."""
    if primitive is None:
        check_inputs(program.id, program.inputs, inputs)
    elif program.runtime != program_pb2.PROGRAM_RUNTIME_BUILTIN:
        raise InvalidArgument(f"program {program.id!r} is not the built-in primitive; it takes JSON inputs",
                              reason="PRIMITIVE_PROGRAM_MISMATCH", metadata={"program_id": program.id},
                              field_violations=[("primitive_input", "must be empty for this program")])


def _stored_inputs(text: str, primitive, digest: ResultDigest | None) -> tuple[str, ResultDigest]:
    """A new job's inputs column and the digest of its inputs as GetJobInputs serves them, unless known
    (uploaded JSON's, checked already); blocking: a typed upload's are hundreds of MiB to encode and hash."""
    stored = typed.stored_inputs(primitive) if primitive is not None else text
    return stored, digest or typed.served_digest(stored, primitive is not None)


def _inputs_read(view: int) -> int:
    """How large inputs a read in this view takes from the store: none, or those a Job message carries."""
    return validation.MAX_INPUTS_BYTES if view == job_pb2.JOB_VIEW_FULL else 0


def _view(view: int) -> int:
    """The view asked for; unset means BASIC."""
    if view not in job_pb2.JobView.values():
        raise InvalidArgument(f"view {view} is not a JobView", reason="INVALID_VIEW",
                              field_violations=[("view", "must be a JobView value")])
    return view or job_pb2.JOB_VIEW_BASIC


def _reader(principal: Principal) -> Principal:
    principal.require("job.read")
    return principal


def _scope(principal: Principal) -> str | None:
    """The instance whose jobs the principal sees; None (all) for the suite's services."""
    return None if principal.is_service else principal.instance_crn
