"""Quick jobs: a small sampler job, run within the CreateJob call that submits it.

A Bell circuit's simulation takes about a millisecond. Queued, its job also costs a commit to queue
it, a worker's wake-up and its claim (another commit), and a watch that follows it live: most of its
time end to end. So when CreateJob meets the sampler's common case (direct.py) on a named simulator
while this replica has an idle executor worker (which found nothing to claim: as far as this replica
knows, nobody's job waits, so a quick job passes nobody), it asks the devices service to run the
circuit only if the run is quick (RunCircuitsRequest.only_if_quick: a free slot on the backend, a
small ideal circuit), which checks the circuit as it checks every run. When it ran, the job is stored
once, ended, with the history a queued run would have given it (store.EndedRun), and CreateJob
answers with it. Anything else (not quick, a refusal, an error, a timeout) and CreateJob goes on as
for any job: the circuits are checked and the job is queued, so what a user is told of a bad circuit
or a busy backend does not change. A quick run that was not stored (the replica died, the insert
failed) ran on a simulator for nothing: nothing was acknowledged, and a retry runs it again.

Not for sessions (their jobs run in their order), physical systems (their work runs once, through
their queue), a per-instance running limit (the claim's to keep), nor primitive jobs and programs in
hosts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import structlog
from qruntime.devices.v1 import backend_pb2, devices_service_pb2, devices_service_pb2_grpc

from qruntime_kit.errors import ServiceError
from qruntime_kit.outbound import call

from .direct import DirectSample, sample_of, sampler_outcome, sampling_request
from .store import EndedRun

log = structlog.get_logger("jobs.quick")
# A quick run takes milliseconds; one that takes longer than this is given up (its worker is killed)
# and the job queued as any other.
TIMEOUT_SECONDS = 5.0


def quick_sample(program_id: str, runtime: str, backend: backend_pb2.Backend, inputs: object,
                 session_id: str) -> DirectSample | None:
    """The job's circuit, shots and seed when the job may run quickly; None when it may not."""
    if (program_id != "sampler" or runtime != "BUILTIN" or session_id
            or backend.kind != backend_pb2.BACKEND_KIND_SIMULATOR):
        return None
    return sample_of(inputs)


@dataclasses.dataclass(frozen=True)
class QuickRun:
    """A sample that ran: what the devices service answered, and when it ran."""

    backend: str
    sample: DirectSample
    response: devices_service_pb2.RunCircuitsResponse
    start_time: dt.datetime
    end_time: dt.datetime

    def ended(self, runner: str) -> EndedRun:
        """The run's end as the executor would have stored it (direct.sampler_outcome): for a wide
        circuit, milliseconds of counts to shape and JSON to write: call it off the event loop."""
        outcome = sampler_outcome(self.backend, self.sample, self.response, self.start_time)
        return EndedRun(runner=runner, start_time=self.start_time, end_time=self.end_time, state=outcome.state,
                        reason=outcome.reason, message=outcome.message, result_json=outcome.result,
                        logs=outcome.logs)


async def run_quickly(devices: devices_service_pb2_grpc.DevicesServiceStub, metadata, *, job_id: str,
                      backend: str, sample: DirectSample) -> QuickRun | None:
    """Run the sample on backend if the run is quick (metadata: the jobs service's own credentials);
    None when it did not run (the job is then checked and queued as any other)."""
    request = sampling_request(job_id, backend, sample)
    request.only_if_quick = True
    started = _now()
    try:
        response = await call(devices.RunCircuits, request, metadata=metadata, timeout=TIMEOUT_SECONDS)
    except ServiceError as err:
        if err.reason != "NOT_QUICK":  # a refused circuit, a devices service down: the usual path says so
            log.info("quick run not made; the job goes the usual way", job_id=job_id, reason=err.reason)
        return None
    return QuickRun(backend, sample, response, started, _now())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
