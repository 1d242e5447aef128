"""The executor: `workers` asyncio tasks that take queued jobs from the store and run them.

A worker claims the next QUEUED job, fairly across instances and within max_running_per_instance
(store.claim_next_queued; replicas sharing one PostgreSQL database share the work), runs its
program through the runner (which enforces the job's time limit), and stores how it ended: the
result with DONE in one transaction, or ERROR with a typed reason.

Every claim counts an attempt. A job whose program host died on its own (memory, crash) goes back
to the queue while it has attempts left, and ends ERROR with the host's reason after the last; a job
claimed once more than max_attempts (its replica kept dying while it ran) ends TOO_MANY_ATTEMPTS
without running: a poison job ends instead of looping. An idle worker wakes at once when this replica
accepts a job: one worker per job accepted (a claim is a transaction, and every idle worker claiming
for every new job cost the service more CPU than the job itself). Workers also poll every second, to
pick up jobs other replicas accepted, and a worker whose job ended claims the next at once.

A service a job needs (devices, programs, auth) that is down makes jobs wait, never fail: the run
that found it down puts its job back in the queue, with a line in the job's logs saying why, and
does not count against its attempts; the replica then stops claiming for a backoff (1 s, doubling to
30 s while the outage lasts), so the other queued jobs stay queued until a probe run gets through.

Quick jobs (quick.py) run beside the workers, within the CreateJob calls that submit them, while as far
as this replica knows no job waits in the queue (quick_slot).

Sessions move on at the same beat (store.sweep_sessions: past max_time, idle, closed and drained);
how they schedule their jobs is the claim's business (store.claim_next_queued). Input uploads that
expired unused are deleted at the same beat too (store.sweep_uploads).

Each replica renews its lease on its running jobs every few seconds, on the database's clock. A
RUNNING job whose lease was not renewed for lease_seconds belongs to a replica that died (or was
paused, or cut off); any replica puts it back in the queue, at start-up and periodically. Renewing
also tells a replica which of its jobs were cancelled through another replica, so it stops them.

The claim's attempt number is a fencing token: every write for the job (logs, interim results, the
requeue, the end and its result) names it, and the store refuses it once the job has moved on, so
a replica that comes back after losing its lease, or a program abandoned at a cancel or a time
limit, cannot touch the job again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import socket
import uuid
from collections.abc import Iterator

import structlog

from qruntime_kit.logging import get_logger

from .control import JobControl
from .outcome import Outcome
from .runner import ProgramRunner
from .store import CANCELLED, ERROR, JobRecord, JobStore

log = get_logger("jobs.executor")
POLL_SECONDS = 1.0
HEARTBEAT_SECONDS = 5.0
BACKOFF_SECONDS = (1.0, 30.0)  # the first pause after a dependency was found down, and the longest
# Quick jobs running at once in a replica, besides its workers' jobs: each takes milliseconds, and the
# devices service runs a backend's few at a time while the others wait their turn (in memory, a few KiB
# of circuit each). Past it, jobs queue; once jobs queue, the workers are busy and quick jobs wait for
# the queue to drain (quick_slot): a flood is served in the queue's fair order.
QUICK_AT_ONCE = 64


class JobExecutor:
    """Runs queued jobs, at most `workers` at a time in this replica."""

    def __init__(
        self, store: JobStore, runner: ProgramRunner, *, workers: int = 4, lease_seconds: float = 30.0,
        poll_seconds: float = POLL_SECONDS, heartbeat_seconds: float = HEARTBEAT_SECONDS, max_attempts: int = 2,
        max_running_per_instance: int = 0,
    ) -> None:
        self._store = store
        self._runner = runner
        self._workers = workers
        self._lease = lease_seconds
        self._poll = poll_seconds
        self._heartbeat = min(heartbeat_seconds, lease_seconds / 3)
        self._max_attempts = max_attempts
        self._max_running_per_instance = max_running_per_instance  # 0: no limit
        self._doorbell = _Doorbell(most=workers)
        self._running: dict[str, tuple[int, JobControl]] = {}  # job id -> (attempt, its stop signal)
        self._tasks: list[asyncio.Task] = []
        self._claims: set[asyncio.Future] = set()  # claims under way in threads
        self._stopping = False
        self._backoff = 0.0  # the current pause while a dependency is down; 0 when all answer
        self._paused_until = 0.0  # the event loop's time before which no worker claims
        self._quick = 0  # quick jobs running now (quick_slot)
        # Whether the last claim found no job to start and none was queued here since (another
        # replica's queued jobs show at the next poll's claim); _wakes counts the jobs queued here.
        self._queue_empty = False
        self._wakes = 0
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
        # A claim cancelled while its thread ran still commits: wait for it, so its job is requeued below.
        await asyncio.gather(*self._claims, return_exceptions=True)
        try:
            requeued = await asyncio.to_thread(self._store.requeue_running, runner=self.runner_id)
        except Exception:  # their claims lapse and another start requeues them
            log.exception("could not requeue this replica's running jobs")
            return
        for job in requeued:
            log.info("requeued the job for the next start", job_id=job.id, request_id=job.trace_id)

    def wake(self) -> None:
        """A job was queued: wake an idle worker now rather than at its next poll."""
        self._wakes += 1
        self._queue_empty = False
        self._doorbell.ring()

    @contextlib.contextmanager
    def quick_slot(self) -> Iterator[bool]:
        """Whether a quick job (quick.py) may run now, holding its place for the block: as far as this
        replica knows no job waits in the queue (its last claim found none to start, and no job was
        queued here since); claiming is not paused; fewer than QUICK_AT_ONCE quick jobs run here. Never
        with a per-instance running limit: that count is the claim's, across replicas."""
        allowed = (not self._stopping and self._max_running_per_instance == 0 and self._quick < QUICK_AT_ONCE
                   and self._queue_empty
                   and asyncio.get_running_loop().time() >= self._paused_until)
        self._quick += allowed
        try:
            yield allowed
        finally:
            self._quick -= allowed

    def cancel(self, job_id: str) -> None:
        """Tell the job's program to stop, if this replica runs it (its state is already CANCELLED)."""
        running = self._running.get(job_id)
        if running is not None:
            running[1].cancel()

    @property
    def running_jobs(self) -> list[str]:
        return list(self._running)

    async def _work(self) -> None:
        while not self._stopping:
            pause = self._paused_until - asyncio.get_running_loop().time()
            if pause > 0:  # a dependency is down: leave the queue alone until the backoff passes
                await asyncio.sleep(pause)
                continue
            wakes = self._wakes
            try:
                claim = asyncio.ensure_future(asyncio.to_thread(
                    self._store.claim_next_queued, self.runner_id,
                    max_running_per_instance=self._max_running_per_instance))
                self._claims.add(claim)
                claim.add_done_callback(self._claims.discard)
                job = await asyncio.shield(claim)  # cancelling this worker must not lose sight of the claim
            except Exception:  # the database may be back at the next poll
                log.exception("could not claim a job")
                job = None
            self._queue_empty = job is None and wakes == self._wakes  # none queued during the claim
            if job is None:
                await self._doorbell.wait(self._poll)
                continue
            await self._execute(job)

    async def _execute(self, job: JobRecord) -> None:
        tokens = structlog.contextvars.bind_contextvars(job_id=job.id, request_id=job.trace_id)
        control = JobControl()
        self._running[job.id] = (job.attempts, control)
        try:
            await self._run(job, control)
        except Exception:  # its claim lapses and another run picks the job up
            log.exception("could not store how the job ended")
        finally:
            self._running.pop(job.id, None)
            structlog.contextvars.reset_contextvars(**tokens)

    async def _run(self, job: JobRecord, control: JobControl) -> None:
        """Run the job's program and store how it ended."""
        if job.failed_attempts > self._max_attempts:
            message = (f"the job was started {job.failed_attempts - 1} times and its runner stopped each time "
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
        if outcome.logs and (outcome.dependency_down or outcome.retry):  # before the attempt stops running
            await asyncio.to_thread(self._store.append_attempt_logs, job.id, job.attempts, list(outcome.logs))
        if outcome.dependency_down:
            await self._wait_for_dependency(job, outcome)
            return
        self._backoff = 0.0  # the job's dependencies answered
        if outcome.retry and job.failed_attempts < self._max_attempts:
            message = f"{outcome.message}; the job goes back to the queue for attempt {job.attempts + 1}"
            if await asyncio.to_thread(self._store.requeue_attempt, job.id, job.attempts, why=message):  # still ours
                await asyncio.to_thread(self._store.append_log, job.id, "WARNING", message)
                log.warning("job requeued", why=outcome.message, attempt=job.attempts)
                self.wake()
            return
        await self._store_outcome(job, outcome)

    async def _wait_for_dependency(self, job: JobRecord, outcome: Outcome) -> None:
        """Put the job back in the queue, not counting the attempt, and pause claiming for a backoff."""
        now = asyncio.get_running_loop().time()
        if now >= self._paused_until:  # runs that failed together, during one pause, lengthen the next once
            first, longest = BACKOFF_SECONDS
            self._backoff = min(longest, self._backoff * 2 or first)
            self._paused_until = now + self._backoff * random.uniform(0.8, 1.2)  # replicas do not probe at once
        pause = self._paused_until - now
        message = f"{outcome.message}; the job goes back to the queue and is tried again in {pause:.0f} s or later"
        if await asyncio.to_thread(self._store.requeue_attempt, job.id, job.attempts, dependency_down=True,
                                   why=message):
            await asyncio.to_thread(self._store.append_log, job.id, "WARNING", message)
            log.warning("job waits for a service that is down", why=outcome.message, retry_in_seconds=round(pause, 1),
                        attempt=job.attempts)

    async def _store_outcome(self, job: JobRecord, outcome: Outcome) -> None:
        ended = await asyncio.to_thread(
            self._store.end_attempt, job.id, job.attempts, outcome.state, outcome.reason, outcome.message,
            outcome.result, logs=list(outcome.logs),
        )
        if ended:
            log.info("job ended", state=outcome.state, reason=outcome.reason or None)
        else:
            log.info("job had ended or been requeued meanwhile", outcome=outcome.state)

    async def _keep_claims(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._heartbeat)
            try:
                attempts = {job_id: attempt for job_id, (attempt, _) in self._running.items()}
                lost = await asyncio.to_thread(self._store.renew_leases, self.runner_id, attempts)
                for job_id in lost:
                    self.cancel(job_id)
                requeued = await asyncio.to_thread(self._store.requeue_running, stale_after=self._lease)
                if requeued:
                    _log_requeued(requeued)
                    for _ in requeued:
                        self.wake()
                if await asyncio.to_thread(self._store.sweep_sessions):  # max time, idle timeouts, closings
                    self.wake()
                if swept := await asyncio.to_thread(self._store.sweep_uploads):  # input uploads left unused
                    log.info("deleted expired input uploads", uploads=swept)
            except Exception:  # retried at the next beat
                log.exception("could not renew job claims")


class _Doorbell:
    """Wakes one waiting worker per ring. A ring while none waits is kept (up to `most`) for the next
    worker that would wait, so a job queued while every worker was busy is not left to the poll."""

    def __init__(self, most: int) -> None:
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._kept = 0
        self._most = most

    def ring(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._kept = min(self._kept + 1, self._most)

    async def wait(self, timeout: float) -> None:
        """Until a ring, or timeout seconds."""
        if self._kept:
            self._kept -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await waiter
        finally:
            if not waiter.done():
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)


def _log_requeued(jobs: list[JobRecord]) -> None:
    for job in jobs:
        log.warning("requeued the job of a replica that stopped", job_id=job.id, request_id=job.trace_id)
