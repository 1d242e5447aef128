"""Quick jobs: a small sampler (or primitive) job, run within the CreateJob call that submits it.

A Bell circuit's simulation takes about a millisecond. Queued, its job also costs a commit to queue
it, a worker's wake-up and its claim (another commit), and a watch that follows it live: most of its
time end to end. So when CreateJob meets the sampler's common case (direct.py) or a primitive job
(typed.py) on a named simulator while, as far as this replica knows, nobody's job waits in the queue
(JobExecutor.quick_slot: a quick job passes nobody), it asks the devices service to run the circuits
only if the run is quick (RunCircuitsRequest.only_if_quick: no other kind of run at the backend,
small ideal circuits), which checks them as it checks every run. When it ran, the job is stored
once, ended, with the history a queued run would have given it (store.EndedRun), and CreateJob
answers with it and its result (CreateJobResponse.result). Anything else (not quick, a refusal, an
error, a timeout) and CreateJob goes on as for any job: the circuits are checked and the job is
queued, so what a user is told of a bad circuit or a busy backend does not change. A quick run that
was not stored (the replica died, the insert failed) ran on a simulator for nothing: nothing was
acknowledged, and a retry runs it again.

Not for sessions (their jobs run in their order), physical systems (their work runs once, through
their queue), a per-instance running limit (the claim's to keep), nor programs in hosts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from qruntime.devices.v1 import backend_pb2, devices_service_pb2, devices_service_pb2_grpc
from qruntime.jobs.v1 import jobs_service_pb2
from qruntime.primitives.v1 import primitives_pb2

from qruntime_kit.errors import ServiceError
from qruntime_kit.logging import get_logger
from qruntime_kit.outbound import call

from . import typed
from .direct import DirectSample, sample_of, sampler_outcome, sampling_request
from .store import EndedRun

log = get_logger("jobs.quick")
# A quick run takes milliseconds; one that takes longer than this is given up (its worker is killed)
# and the job queued as any other.
TIMEOUT_SECONDS = 5.0
# The largest CreateJob request that may be a quick job. Its circuit is taken from the inputs (base64
# decoded, or the PUBs copied into the run's request) on the event loop: microseconds at this size,
# where quick circuits (at most 1,000 instructions) fit many times over.
MAX_REQUEST_BYTES = 256 * 1024


def candidate(request: jobs_service_pb2.CreateJobRequest, backend_name: str, request_bytes: int) -> bool:
    """Whether CreateJob tries the job as a quick one: a built-in primitive's program, a named backend,
    its inputs in the request and small, neither in a session nor a dry run."""
    return (request.program_id in typed.PROGRAMS and bool(backend_name) and request_bytes <= MAX_REQUEST_BYTES
            and not (request.session_id or request.validate_only or request.input_upload_id))


@dataclasses.dataclass(frozen=True)
class QuickRun:
    """A job's run asked for only if quick, and, once it ran, what the devices service answered."""

    request: devices_service_pb2.RunCircuitsRequest
    sample: DirectSample | None  # the sampler's common case; None for a primitive job
    response: devices_service_pb2.RunCircuitsResponse | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None

    def ended(self, runner: str) -> EndedRun:
        """The run's end as the executor would have stored it (direct.sampler_outcome, typed.done_outcome):
        for a wide circuit, milliseconds of counts to shape and JSON to write: call it off the event loop."""
        backend, request = self.request.backend, self.request
        outcome = (sampler_outcome(backend, self.sample, self.response, self.start_time) if self.sample is not None
                   else typed.done_outcome(backend, request.primitive, self.response, self.start_time))
        return EndedRun(runner=runner, start_time=self.start_time, end_time=self.end_time, state=outcome.state,
                        reason=outcome.reason, message=outcome.message, result_json=outcome.result,
                        logs=outcome.logs)


def quick_run(job_id: str, program_id: str, runtime: str, backend: backend_pb2.Backend, inputs: object,
              primitive: primitives_pb2.PrimitiveInput | None) -> QuickRun | None:
    """The job's run if it may be quick (not run yet); None when it may not."""
    if runtime != "BUILTIN" or backend.kind != backend_pb2.BACKEND_KIND_SIMULATOR:
        return None
    sample = None
    if primitive is not None:
        # Without an idempotency key: devices keeps keyed runs to answer a retry with the first run's result,
        # and a quick run is never retried (whatever fails, the job is checked and queued as any other).
        request = typed.run_request(job_id, backend.name, primitive)
    elif program_id == "sampler" and (sample := sample_of(inputs)) is not None:
        request = sampling_request(job_id, backend.name, sample)
    else:
        return None
    request.only_if_quick = True
    return QuickRun(request, sample)


async def run_quickly(devices: devices_service_pb2_grpc.DevicesServiceStub, metadata, run: QuickRun,
                      limit_seconds: float) -> QuickRun | None:
    """The run made if it was quick (metadata: the jobs service's own credentials) and ended within the
    job's time limit; None when it did not run (the job is then checked and queued as any other)."""
    started = _now()
    try:
        response = await call(devices.RunCircuits, run.request, metadata=metadata,
                              timeout=min(TIMEOUT_SECONDS, limit_seconds))
    except ServiceError as err:
        if err.reason != "NOT_QUICK":  # a refused circuit, a devices service down: the usual path says so
            log.info("quick run not made; the job goes the usual way", job_id=run.request.job_id, reason=err.reason)
        return None
    return dataclasses.replace(run, response=response, start_time=started, end_time=_now())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
