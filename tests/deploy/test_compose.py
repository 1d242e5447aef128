"""docker-compose.yml and the Dockerfile, checked statically: no Docker engine runs here.

Every container's command is parsed by the real settings loader of the program it starts, with the
container's environment, so a misspelt flag or a port that does not agree fails here.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from qruntime_kit.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def settings_class(command: list[str]) -> tuple[type, list[str]]:
    """The settings class of the program a command starts, and the command's flags."""
    if command[:2] == ["qruntime", "gateway"]:
        from qruntime_suite.gateway import GatewaySettings

        return GatewaySettings, command[2:]
    service = command[0].removeprefix("qruntime-")
    return importlib.import_module(f"qruntime_{service}.component").SETTINGS, command[1:]


def parsed(name: str, monkeypatch) -> object:
    spec = SERVICES[name]
    for key, value in spec.get("environment", {}).items():
        monkeypatch.setenv(key, str(value))
    cls, flags = settings_class(spec["command"])
    return load_settings(cls, flags)


QRUNTIME_SERVICES = [n for n, s in SERVICES.items() if s.get("command")]


def test_every_service_runs_the_one_image():
    assert set(QRUNTIME_SERVICES) == {"auth", "programs", "jobs", "devices", "gateway"}
    assert all(SERVICES[n].get("build") == "." for n in QRUNTIME_SERVICES)


@pytest.mark.parametrize("name", QRUNTIME_SERVICES)
def test_command_is_an_installed_entry_point_and_its_flags_parse(name, monkeypatch):
    assert SERVICES[name]["command"][0] in SCRIPTS
    settings = parsed(name, monkeypatch)
    assert settings.host == "0.0.0.0"
    assert settings.database_url.startswith("postgresql://")


@pytest.mark.parametrize("name", QRUNTIME_SERVICES)
def test_healthcheck_probes_the_port_the_service_listens_on(name, monkeypatch):
    probe = SERVICES[name]["healthcheck"]["test"]
    assert probe[1:4] == ["python", "-m", "qruntime_suite.probe"]
    assert probe[4] == f"127.0.0.1:{parsed(name, monkeypatch).port}"


def _port_of(name: str, monkeypatch) -> int:
    return parsed(name, monkeypatch).port


def test_addresses_between_services_agree(monkeypatch):
    gateway = parsed("gateway", monkeypatch)
    jobs = parsed("jobs", monkeypatch)
    wanted = {
        "auth": [gateway.auth_url, jobs.auth_url],
        "programs": [gateway.programs_url, jobs.programs_url],
        "jobs": [gateway.jobs_url],
        "devices": [gateway.devices_url, jobs.devices_url],
    }
    for target, urls in wanted.items():
        for url in urls:
            assert url == f"{target}:{_port_of(target, monkeypatch)}", (target, url)


def test_only_the_gateway_is_published(monkeypatch):
    published = {n: SERVICES[n].get("ports") for n in QRUNTIME_SERVICES if SERVICES[n].get("ports")}
    gateway = parsed("gateway", monkeypatch)
    assert published == {"gateway": [f"8443:{gateway.port}", f"8080:{gateway.http_port}"]}


def test_each_calling_service_holds_its_own_key_auth_knows_them_and_all_wait_for_postgres():
    holders = {n: SERVICES[n]["environment"]["QRUNTIME_SERVICE_KEY"]
               for n in QRUNTIME_SERVICES if "QRUNTIME_SERVICE_KEY" in SERVICES[n]["environment"]}
    assert set(holders) == {"jobs", "programs", "devices"}
    known = dict(item.split("=", 1) for item in SERVICES["auth"]["environment"]["QRUNTIME_SERVICE_KEYS"].split(","))
    assert known == holders  # the same variable for each: auth knows exactly the keys the services hold
    assert len(set(holders.values())) == 3
    for name in QRUNTIME_SERVICES:
        assert SERVICES[name]["environment"]["QRUNTIME_DATABASE_URL"].startswith("postgresql://")
        assert SERVICES[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_dockerfile_copies_what_exists_and_installs_pinned():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+)$", dockerfile, flags=re.MULTILINE):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), source
    assert "-c constraints.txt" in dockerfile
