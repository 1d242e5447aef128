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

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = []
        if self.workers < 1:
            problems.append(f"workers must be at least 1, got {self.workers}")
        if self.lease_seconds <= 0:
            problems.append(f"lease_seconds must be positive, got {self.lease_seconds}")
        if problems:
            raise ValueError("invalid settings: " + "; ".join(problems))
