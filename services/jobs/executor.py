"""The executor: `workers` asyncio tasks that take queued jobs from the store and run them.

A worker claims the oldest QUEUED job (so replicas sharing one PostgreSQL database share the work),
runs its program through the runner (which enforces the job's time limit), and stores how it
ended: the result with DONE in one transaction, or ERROR with a typed reason.

Every claim counts an attempt. A job whose program host died on its own (memory, crash) goes back
to the queue while it has attempts left, and ends ERROR with the host's reason after the last; a job
claimed once more than max_attempts (its replica kept dying while it ran) ends TOO_MANY_ATTEMPTS
without running: a poison job ends instead of looping. Workers wake at once when this replica
accepts a job and poll every second besides, to pick up jobs other replicas accepted.

Each replica renews its claim on its running jobs every few seconds. A RUNNING job whose claim was
not renewed for lease_seconds belongs to a replica that died; any replica puts it back in the queue,
at start-up and periodically. Renewing also tells a replica which of its jobs were cancelled
through another replica, so it stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid

import structlog

from qruntime_kit.logging import get_logger

from .control import JobControl
from .outcome import Outcome
from .runner import ProgramRunner
from .store import CANCELLED, ERROR, JobRecord, JobStore

log = get_logger("jobs.executor")
POLL_SECONDS = 1.0
HEARTBEAT_SECONDS = 5.0


class JobExecutor:
    """Runs queued jobs, at most `workers` at a time in this replica."""

    def __init__(
        self, store: JobStore, runner: ProgramRunner, *, workers: int = 4, lease_seconds: float = 30.0,
        poll_seconds: float = POLL_SECONDS, heartbeat_seconds: float = HEARTBEAT_SECONDS, max_attempts: int = 2,
    ) -> None:
        self._store = store
        self._runner = runner
        self._workers = workers
        self._lease = lease_seconds
        self._poll = poll_seconds
        self._heartbeat = min(heartbeat_seconds, lease_seconds / 3)
        self._max_attempts = max_attempts
        self._wake = asyncio.Event()
        self._running: dict[str, JobControl] = {}
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self.runner_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    async def start(self) -> None:
        """Requeue the jobs of replicas that died, then start the workers and the claim keeper."""
        _log_requeued(await asyncio.to_thread(self._store.requeue_running, stale_after=self._lease))
        self._tasks = [asyncio.create_task(self._work(), name=f"jobs-worker-{i}") for i in range(self._workers)]
        self._tasks.append(asyncio.create_task(self._keep_claims(), name="jobs-claims"))
        log.info("executor started", workers=self._workers, runner=self.runner_id)

    async def stop(self) -> None:
        """Stop the workers, tell running programs to stop, and put their jobs back in the queue
        for another replica (or this one's next start) to run from the beginning; what the
        interrupted run logged and published stays with the job."""
        # The flag ends a worker's loop even if its cancellation is lost in a race with a wait
        # that completes at the same moment (seen with asyncio.wait_for on Python 3.11).
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        try:
            requeued = await asyncio.to_thread(self._store.requeue_running, runner=self.runner_id)
        except Exception:  # their claims lapse and another start requeues them
            log.exception("could not requeue this replica's running jobs")
            return
        for job in requeued:
            log.info("requeued the job for the next start", job_id=job.id, request_id=job.trace_id)

    def wake(self) -> None:
        """A job was queued: wake an idle worker now rather than at its next poll."""
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Tell the job's program to stop, if this replica runs it (its state is already CANCELLED)."""
        control = self._running.get(job_id)
        if control is not None:
            control.cancel()

    @property
    def running_jobs(self) -> list[str]:
        return list(self._running)

    async def _work(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                job = await asyncio.to_thread(self._store.claim_next_queued, self.runner_id)
            except Exception:  # the database may be back at the next poll
                log.exception("could not claim a job")
                job = None
            if job is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll):
                        await self._wake.wait()
                continue
            await self._execute(job)

    async def _execute(self, job: JobRecord) -> None:
        tokens = structlog.contextvars.bind_contextvars(job_id=job.id, request_id=job.trace_id)
        control = JobControl()
        self._running[job.id] = control
        try:
            await self._run(job, control)
        except Exception:  # its claim lapses and another run picks the job up
            log.exception("could not store how the job ended")
        finally:
            self._running.pop(job.id, None)
            structlog.contextvars.reset_contextvars(**tokens)

    async def _run(self, job: JobRecord, control: JobControl) -> None:
        """Run the job's program and store how it ended."""
        if job.attempts > self._max_attempts:
            message = (f"the job was started {job.attempts - 1} times and its runner stopped each time "
                       "(the jobs service was stopped or killed while running it); it is not started again")
            await self._store_outcome(job, Outcome(ERROR, "TOO_MANY_ATTEMPTS", message))
            return
        limit = job.max_execution_seconds if job.max_execution_seconds > 0 else None
        log.info("job started", program_id=job.program_id, backend=job.backend, limit_seconds=limit,
                 attempt=job.attempts)
        try:
            outcome = await self._runner.run(job, control)
        except Exception:  # the runner failed; the job did not get a fair run
            log.exception("the runner failed")
            outcome = Outcome(ERROR, "INTERNAL_ERROR", "the runner failed; the jobs service logged the details")
        if outcome.state == CANCELLED:  # the store already says why: cancelled by a user, or requeued
            log.info("job stopped")
            return
        if outcome.retry and job.attempts < self._max_attempts:
            await asyncio.to_thread(self._store.append_logs, job.id, list(outcome.logs))
            message = f"{outcome.message}; the job goes back to the queue for attempt {job.attempts + 1}"
            if await asyncio.to_thread(self._store.requeue, job.id, runner=self.runner_id, why=message):  # still ours
                await asyncio.to_thread(self._store.append_log, job.id, "WARNING", message)
                log.warning("job requeued", why=outcome.message, attempt=job.attempts)
                self.wake()
            return
        await self._store_outcome(job, outcome)

    async def _store_outcome(self, job: JobRecord, outcome: Outcome) -> None:
        ended = await asyncio.to_thread(
            self._store.finish, job.id, outcome.state, outcome.reason, outcome.message, outcome.result,
            runner=self.runner_id, logs=list(outcome.logs),
        )
        if ended:
            log.info("job ended", state=outcome.state, reason=outcome.reason or None)
        else:
            log.info("job had ended or been requeued meanwhile", outcome=outcome.state)

    async def _keep_claims(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._heartbeat)
            try:
                lost = await asyncio.to_thread(self._store.renew_claims, self.runner_id, self.running_jobs)
                for job_id in lost:
                    self.cancel(job_id)
                requeued = await asyncio.to_thread(self._store.requeue_running, stale_after=self._lease)
                if requeued:
                    _log_requeued(requeued)
                    self.wake()
            except Exception:  # retried at the next beat
                log.exception("could not renew job claims")


def _log_requeued(jobs: list[JobRecord]) -> None:
    for job in jobs:
        log.warning("requeued the job of a replica that stopped", job_id=job.id, request_id=job.trace_id)
