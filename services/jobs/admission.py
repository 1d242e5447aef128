"""Per-instance admission limits of CreateJob: jobs queued at once and submissions per minute.

Each refusal is RESOURCE_EXHAUSTED with a stable reason, the limit and the count in its metadata,
and a RetryInfo saying when a retry may pass. The counts come from the shared store, so the limits
hold across replicas (two submissions racing at the limit may both pass: a limit is a guard against
floods, not an exact quota). The third limit, jobs running at once, is the executor's: past it, jobs
wait in the queue (store.claim_next_queued)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from qruntime_kit.errors import ResourceExhausted

from .store import JobStore, utcnow

WINDOW = dt.timedelta(minutes=1)
QUEUE_RETRY_SECONDS = 30.0  # queued jobs leave as they run: how soon is unknowable, so a fair pause


@dataclasses.dataclass(frozen=True)
class AdmissionLimits:
    """0 means no limit."""

    max_queued: int = 0
    max_submissions_per_minute: int = 0

    @property
    def any(self) -> bool:
        return bool(self.max_queued or self.max_submissions_per_minute)


def check_admission(store: JobStore, instance: str, limits: AdmissionLimits) -> None:
    """Refuse a new job of instance when it would pass one of the limits (blocking: a store read)."""
    if not limits.any:
        return
    now = utcnow()
    queued, recent, oldest_recent = store.admission_counts(instance, since=now - WINDOW)
    if limits.max_queued and queued >= limits.max_queued:
        raise ResourceExhausted(
            f"instance {instance} has {queued} jobs queued, its limit; submit more as they start to run",
            reason="TOO_MANY_QUEUED_JOBS", retry_after=QUEUE_RETRY_SECONDS,
            metadata={"limit": limits.max_queued, "queued": queued},
        )
    if limits.max_submissions_per_minute and recent >= limits.max_submissions_per_minute:
        wait = max((oldest_recent + WINDOW - now).total_seconds(), 0.1) if oldest_recent else WINDOW.total_seconds()
        raise ResourceExhausted(
            f"instance {instance} submitted {recent} jobs in the last minute, its limit; retry in {wait:.0f} s",
            reason="TOO_MANY_SUBMISSIONS", retry_after=wait,
            metadata={"limit": limits.max_submissions_per_minute, "submitted": recent},
        )
