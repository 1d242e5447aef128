"""A suite (auth, programs, devices, jobs in one kit server) with its HTTP front door, for httpx."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from qruntime_suite.rest import IAM_GRANT, FrontDoor, HttpFrontDoor


@dataclasses.dataclass
class RestSuite:
    suite: object  # conftest.RunningSuite
    url: str
    front_door: FrontDoor

    def token(self, api_key: str | None = None) -> str:
        """A token from /identity/token with the API key alone, as IBM Cloud's IAM gives one."""
        response = httpx.post(f"{self.url}/identity/token",
                              data={"grant_type": IAM_GRANT, "apikey": api_key or self.suite.api_key})
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def client(self, api_key: str | None = None, instance: str | None = None, **headers: str) -> httpx.Client:
        """An HTTP client signed in as the quick start says: a token from /identity/token, sent as
        'Authorization: Bearer' with the instance's Service-CRN on every call."""
        return httpx.Client(base_url=self.url, timeout=60, headers={
            "Authorization": f"Bearer {self.token(api_key)}", "Service-CRN": instance or self.suite.instance,
            **headers})


@pytest.fixture(scope="module")
def rest(start_module_suite):
    suite = start_module_suite("programs", "devices", "jobs")
    front_door = HttpFrontDoor("127.0.0.1", 0, suite.address)
    suite.run(front_door.start())
    yield RestSuite(suite, front_door.url, front_door.front_door)
    suite.run(front_door.stop())
