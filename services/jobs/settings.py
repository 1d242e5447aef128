"""Settings of the jobs service: the kit's server settings plus where its peers are and how it runs jobs."""

from __future__ import annotations

import dataclasses

from qruntime_kit.settings import ServerSettings, setting


@dataclasses.dataclass(frozen=True)
class JobsSettings(ServerSettings):
    """Settings of the qruntime jobs service."""

    port: int = setting(8446, "port to listen on; 0 picks a free one")
    programs_url: str = setting("", "host:port of the programs service; empty: this same server")
    devices_url: str = setting("", "host:port of the devices service; empty: this same server")
    workers: int = setting(4, "how many jobs this replica runs at once")
    lease_seconds: float = setting(
        30.0, "a RUNNING job whose replica has not renewed its claim for this long is requeued"
    )
    max_attempts: int = setting(2, "how many times a job may be started before its worker's deaths end it ERROR")
    warm_hosts: int = setting(2, "program hosts for built-in programs kept started ahead of demand")
    warm_sandboxed_hosts: int = setting(1, "sandboxed program hosts for uploaded programs kept started ahead of demand")
    program_memory_bytes: int = setting(2 << 30, "hard memory limit of one program's host, in bytes")
    program_processes: int = setting(256, "the most processes and threads one program's host may have at once")
    watch_poll_seconds: float = setting(
        0.5, "how often a watched job is checked for what other replicas wrote and for its queue position"
    )
    sandbox: bool = setting(True, "run uploaded programs in the bubblewrap sandbox; off: refuse to run them")
    max_running_per_instance: int = setting(
        0, "the most jobs of one instance running at once across all replicas (more wait queued); 0: no limit"
    )
    max_queued_per_instance: int = setting(
        0, "the most jobs one instance may have queued; CreateJob past it is RESOURCE_EXHAUSTED; 0: no limit"
    )
    max_submissions_per_minute: int = setting(
        0, "the most jobs one instance may create in a minute; past it RESOURCE_EXHAUSTED; 0: no limit"
    )
    max_input_upload_bytes: int = setting(
        256 << 20, "the largest job inputs uploaded in chunks (CreateInputUpload), in bytes"
    )
    max_upload_bytes_per_instance: int = setting(
        1 << 30, "the bytes one instance's unfinished input uploads may hold together; past it CreateInputUpload "
        "is RESOURCE_EXHAUSTED; 0: no limit"
    )
    input_upload_seconds: float = setting(
        3600.0, "how long an input upload may wait for the CreateJob that uses it before it is deleted"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = []
        if self.workers < 1:
            problems.append(f"workers must be at least 1, got {self.workers}")
        if self.max_attempts < 1:
            problems.append(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.warm_hosts < 0 or self.warm_sandboxed_hosts < 0:
            problems.append("warm_hosts and warm_sandboxed_hosts must be 0 or more")
        if self.program_memory_bytes < 256 << 20:
            problems.append(f"program_memory_bytes must be at least 256 MiB, got {self.program_memory_bytes}")
        if self.program_processes < 16:
            problems.append(f"program_processes must be at least 16, got {self.program_processes}")
        if self.max_input_upload_bytes < 1:
            problems.append(f"max_input_upload_bytes must be at least 1, got {self.max_input_upload_bytes}")
        if self.input_upload_seconds <= 0:
            problems.append(f"input_upload_seconds must be positive, got {self.input_upload_seconds}")
        for name in ("max_running_per_instance", "max_queued_per_instance", "max_submissions_per_minute",
                     "max_upload_bytes_per_instance"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be 0 (no limit) or more, got {getattr(self, name)}")
        if self.watch_poll_seconds <= 0:
            problems.append(f"watch_poll_seconds must be positive, got {self.watch_poll_seconds}")
        if self.lease_seconds <= 0:
            problems.append(f"lease_seconds must be positive, got {self.lease_seconds}")
        if problems:
            raise ValueError("invalid settings: " + "; ".join(problems))
