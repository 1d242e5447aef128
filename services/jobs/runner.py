"""The program runner: runs one job's program in a thread of its own and says how it ended.

This runner runs only the suite's BUILTIN programs, in-process. It is its own component so that a
sandboxed runner (a later issue) can replace it: that one will run uploaded PYTHON programs in a
separate process; this one ends such jobs ERROR with reason RUNTIME_UNAVAILABLE and never runs
user code.

Stopping a program is cooperative. A Python thread cannot be killed, so when a job is cancelled or
passes its time limit the runner stops waiting for it at once and sets the job's cancellation
signal; the program's backend and messenger raise JobCancelled at its next call, and a program
stuck elsewhere runs on in the background until it returns (its outcome is then ignored). The
sandboxed runner kills its process instead.

What a program logs through the "qruntime.program" logger at or above the job's log level becomes
the job's logs, and is echoed to structlog with job_id and request_id (the CreateJob call's) bound.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime as dt
import inspect
import logging
import threading
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from qruntime.encoding import dumps, loads

from qruntime_kit.logging import get_logger
from qruntime_kit.outbound import MAX_MESSAGE_BYTES

from .backend import BackendError, SuiteError
from .builtin_programs import BUILTIN_PROGRAMS, PROGRAM_LOGGER, InvalidInputError, ProgramMain
from .control import JobCancelled, JobControl
from .store import CANCELLED, DONE, ERROR, JobRecord, JobStore

log = get_logger("jobs.runner")
LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
          "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}
BackendFactory = Callable[[JobRecord, JobControl], Any]
MAX_RESULT_BYTES = MAX_MESSAGE_BYTES - 1024 * 1024  # GetJobResult's response holds it with room to spare


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a run ended: a final state, the reason (JobReason name without its prefix), the result."""

    state: str
    reason: str = ""
    message: str = ""
    result: str | None = None


class UserMessenger:
    """What a program publishes interim results with, as in IBM's runtime."""

    def __init__(self, store: JobStore, job_id: str, control: JobControl) -> None:
        self._store = store
        self._job_id = job_id
        self._control = control

    def publish(self, message: Any, final: bool = False) -> None:
        """Store message (anything qruntime.encoding encodes) as the job's next interim result.

        final is accepted for programs written for IBM's runtime and ignored: a program's result
        is what its main() returns."""
        self._control.check()
        self._store.add_interim_result(self._job_id, dumps(message))


class JobLog:
    """The logs of one job: lines at or above its level are stored and echoed to structlog."""

    def __init__(self, store: JobStore, job: JobRecord) -> None:
        self._store = store
        self._job_id = job.id
        self.level = LEVELS.get(job.log_level, logging.INFO)

    def write(self, levelno: int, message: str, time: dt.datetime | None = None) -> None:
        if levelno < self.level:
            return
        name = logging.getLevelName(levelno) if levelno in LEVELS.values() else _nearest_level(levelno)
        self._store.append_log(self._job_id, name, message, time)
        log.log(levelno, "program log", level_name=name, text=message)


def _nearest_level(levelno: int) -> str:
    return max((n for n, v in LEVELS.items() if v <= levelno), key=LEVELS.__getitem__, default="DEBUG")


_current_log: contextvars.ContextVar[JobLog | None] = contextvars.ContextVar("job_log", default=None)


class _ProgramLogHandler(logging.Handler):
    """Sends the program logger's records to the log of the job whose thread logged them."""

    def emit(self, record: logging.LogRecord) -> None:
        job_log = _current_log.get()
        if job_log is None:
            return
        try:
            job_log.write(record.levelno, self.format(record), dt.datetime.fromtimestamp(record.created, dt.UTC))
        except Exception:  # noqa: BLE001 - a log line must never break the program
            self.handleError(record)


def _install_program_log_handler() -> None:
    logger = logging.getLogger(PROGRAM_LOGGER)
    if not any(isinstance(h, _ProgramLogHandler) for h in logger.handlers):
        logger.addHandler(_ProgramLogHandler())
    logger.setLevel(logging.DEBUG)  # each job's own level filters
    logger.propagate = False  # the echo to structlog is the one copy on stderr


class ProgramRunner:
    """Runs built-in programs in threads; refuses uploaded ones (they need the sandboxed runner)."""

    def __init__(
        self, store: JobStore, backend_factory: BackendFactory, programs: Mapping[str, ProgramMain] = BUILTIN_PROGRAMS
    ) -> None:
        self._store = store
        self._backend_factory = backend_factory
        self._programs = programs
        _install_program_log_handler()

    async def run(self, job: JobRecord, control: JobControl) -> Outcome:
        """Run the job's program in a new thread; returns when it ends or once control is cancelled.
        If this coroutine is cancelled (time limit, shutdown), it cancels control as it goes."""
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[Outcome] = loop.create_future()

        def deliver(outcome: Outcome) -> None:
            if not ended.done():
                ended.set_result(outcome)

        def target() -> None:
            outcome = contextvars.Context().run(self.run_blocking, job, control)
            try:
                loop.call_soon_threadsafe(deliver, outcome)
            except RuntimeError:  # the loop has closed: the service stopped while the program ran
                pass

        threading.Thread(target=target, name=f"job-{job.id}", daemon=True).start()
        stopped = asyncio.ensure_future(control.wait())
        try:
            await asyncio.wait({ended, stopped}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            control.cancel()
            raise
        finally:
            stopped.cancel()
        if ended.done():
            return ended.result()
        return Outcome(CANCELLED, "CANCELLED_BY_USER", "cancelled by a user")

    def run_blocking(self, job: JobRecord, control: JobControl) -> Outcome:
        """Run the job's program in the calling thread and classify how it ended."""
        structlog.contextvars.bind_contextvars(job_id=job.id, request_id=job.trace_id)
        job_log = JobLog(self._store, job)
        token = _current_log.set(job_log)
        try:
            return self._run(job, control, job_log)
        except BaseException:  # the runner itself failed; the job did not get a fair run
            log.exception("the runner failed")
            return Outcome(ERROR, "INTERNAL_ERROR", "the runner failed; the jobs service logged the details")
        finally:
            _current_log.reset(token)

    def _run(self, job: JobRecord, control: JobControl, job_log: JobLog) -> Outcome:
        if job.runtime == "PYTHON":
            return Outcome(
                ERROR, "RUNTIME_UNAVAILABLE",
                f"program {job.program_id!r} is an uploaded Python program; uploaded programs need the "
                "sandboxed runner, which is not yet in this deployment",
            )
        main = self._programs.get(job.program_id)
        if main is None:
            return Outcome(
                ERROR, "RUNTIME_UNAVAILABLE",
                f"this release of the jobs service has no built-in program {job.program_id!r}",
            )
        try:
            inputs = loads(job.inputs or "{}")
        except (ValueError, TypeError) as err:
            return _error(job_log, "INVALID_INPUT", f"the inputs could not be decoded: {err}")
        if not isinstance(inputs, dict):
            return _error(job_log, "INVALID_INPUT", "the inputs must be a JSON object")
        backend = self._backend_factory(job, control)
        messenger = UserMessenger(self._store, job.id, control)
        try:
            inspect.signature(main).bind(backend, messenger, **inputs)
        except TypeError as err:
            return _error(job_log, "INVALID_INPUT", f"the inputs do not fit program {job.program_id!r}: {err}")
        log.info("program started", program_id=job.program_id, backend=job.backend)
        try:
            value = main(backend, messenger, **inputs)
        except Exception as err:  # noqa: BLE001 - whatever the program raised ends its job
            return _failure(err, job_log)
        try:
            result = dumps(value)
        except (TypeError, ValueError) as err:
            return _error(job_log, "PROGRAM_ERROR", f"the program returned a value that cannot be encoded: {err}")
        size = len(result.encode())
        if size > MAX_RESULT_BYTES:  # stored DONE, it could never be read back in one message
            message = f"the program returned a result of {size} bytes; at most {MAX_RESULT_BYTES} can be read back"
            return _error(job_log, "PROGRAM_ERROR", message)
        log.info("program returned", program_id=job.program_id, result_bytes=size)
        return Outcome(DONE, result=result)


def _error(job_log: JobLog, reason: str, message: str) -> Outcome:
    """An ERROR outcome whose message the job's own logs show too."""
    job_log.write(logging.ERROR, message)
    return Outcome(ERROR, reason, message)


def _failure(err: Exception, job_log: JobLog) -> Outcome:
    """The outcome of a program that raised err: the first telling exception in its chain decides."""
    for cause in _chain(err):
        if isinstance(cause, JobCancelled):
            return Outcome(CANCELLED, "CANCELLED_BY_USER", "cancelled by a user")
        if isinstance(cause, SuiteError):
            log.error("device call failed", error=str(cause))
            return Outcome(ERROR, "INTERNAL_ERROR", str(cause))
        if isinstance(cause, BackendError):
            message = f"the backend refused or failed the circuits ({cause.reason}): {cause.error.message}"
            return _error(job_log, "BACKEND_ERROR", message)
        if isinstance(cause, InvalidInputError):
            return _error(job_log, "INVALID_INPUT", str(cause))
    job_log.write(logging.ERROR, "".join(traceback.format_exception(err)).rstrip())
    return Outcome(ERROR, "PROGRAM_ERROR", f"{type(err).__name__}: {err}")


def _chain(err: BaseException | None):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__
