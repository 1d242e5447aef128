"""The embedded suite: the four services composed in one process, on one port.

It is only a way of composing the same components a standalone service serves: each keeps its own
store (data_dir/<service>.db), and calls between them go over gRPC to this same server, through the
same token checks.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from qruntime_auth.component import AuthSettings
from qruntime_devices.component import DevicesSettings
from qruntime_jobs.settings import JobsSettings
from qruntime_kit.server import Component
from qruntime_kit.settings import setting
from qruntime_programs.component import ProgramsSettings

from .rest import HttpSettings

SERVICES = ("auth", "programs", "devices", "jobs")


@dataclasses.dataclass(frozen=True)
class SuiteSettings(JobsSettings, DevicesSettings, AuthSettings, ProgramsSettings, HttpSettings):
    """Settings of the embedded suite: every setting of the services it composes, on one port, and
    the port of its HTTP/JSON API and web console."""

    port: int = setting(8443, "port to listen on; 0 picks a free one")


def _settings_for(cls: type, settings: Any) -> Any:
    """The service's own settings object, taking every field the suite's settings have."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name in names})


def build_components(
    settings: SuiteSettings, services: Sequence[str] = SERVICES, *, devices_backends: Mapping | None = None
) -> list[Component]:
    """Build the named services' components from one settings object, auth first. Serve them
    with start_server(..., front_door=True): clients call this same port.

    Each service's component module names its settings class SETTINGS and builds with build_component.
    devices_backends replaces the devices service's default backends (e.g. to add real hardware).
    """
    components = []
    for name in (n for n in SERVICES if n in services):
        module = importlib.import_module(f"qruntime_{name}.component")
        extra = {"backends": devices_backends} if name == "devices" and devices_backends is not None else {}
        own = _settings_for(module.SETTINGS, settings)
        if name == "auth" and settings.resolved_service_key():
            # The suite's service key is the jobs service's identity (the one service that calls others).
            own = dataclasses.replace(own, service_keys=f"jobs={settings.resolved_service_key()},{own.service_keys}")
        components.append(module.build_component(own, **extra))
    return components
