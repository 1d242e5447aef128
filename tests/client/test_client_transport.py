"""The connection layer: bearer token and request id on every call, token caching and refresh."""

from __future__ import annotations

import re
import threading

import pytest
from qruntime import IBMRuntimeService
from qruntime.exceptions import IBMNotAuthorizedError, NotFoundError


def test_every_call_sends_the_token_and_a_fresh_request_id(fake, service) -> None:
    for _ in range(3):
        with pytest.raises(NotFoundError):
            service.job("missing")
    calls = fake.calls("GetJob")
    assert [c["authorization"] for c in calls] == ["Bearer token-1"] * 3
    ids = [c["x-request-id"] for c in calls]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == 3


def test_error_names_the_request_id_it_was_sent_with(fake, service) -> None:
    with pytest.raises(NotFoundError) as info:
        service.job("missing")
    assert info.value.reason == "JOB_NOT_FOUND"
    assert info.value.request_id == fake.calls("GetJob")[-1]["x-request-id"]


def test_key_is_checked_at_once_and_instance_resolved(fake) -> None:
    with pytest.raises(IBMNotAuthorizedError) as info:
        IBMRuntimeService(token="wrong-key", instance="my-instance", url=fake.url)
    assert info.value.reason == "INVALID_API_KEY"
    with IBMRuntimeService(token="good-key", instance="my-instance", url=fake.url) as service:
        assert service.instance.startswith("crn:v1:")
    assert fake.auth.issued == ["token-1"]


def test_token_is_cached_while_far_from_expiry(fake, service) -> None:
    for _ in range(3):
        service.jobs()
    assert fake.auth.issued == ["token-1"]


def test_token_is_renewed_within_a_minute_of_expiry(fake) -> None:
    fake.auth.expire_in_s = 59  # inside the 60 s margin: every call needs a new token
    with IBMRuntimeService(token="good-key", instance="i", url=fake.url) as service:
        service.jobs()
        service.jobs()
    assert fake.auth.issued == ["token-1", "token-2", "token-3"]
    assert [c["authorization"] for c in fake.calls("ListJobs")] == ["Bearer token-2", "Bearer token-3"]


def test_token_expired_is_refreshed_and_retried_once_with_the_same_request_id(fake, service) -> None:
    fake.auth.expired.add("token-1")
    assert service.jobs() == []
    calls = fake.calls("ListJobs")
    assert [c["authorization"] for c in calls] == ["Bearer token-1", "Bearer token-2"]
    assert calls[0]["x-request-id"] == calls[1]["x-request-id"]
    service.jobs()
    assert fake.auth.issued == ["token-1", "token-2"]  # the new token is kept


def test_token_expired_twice_gives_up(fake, service) -> None:
    fake.auth.expire_all = True
    with pytest.raises(IBMNotAuthorizedError) as info:
        service.jobs()
    assert info.value.reason == "TOKEN_EXPIRED"
    assert len(fake.calls("ListJobs")) == 2


def test_other_unauthenticated_reasons_are_not_retried(fake, service) -> None:
    fake.auth.issued.remove("token-1")  # the server no longer knows the token
    with pytest.raises(IBMNotAuthorizedError) as info:
        service.jobs()
    assert info.value.reason == "TOKEN_INVALID"
    assert len(fake.calls("ListJobs")) == 1


def test_concurrent_calls_share_one_refresh(fake, service) -> None:
    fake.auth.expired.add("token-1")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            service.jobs()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert fake.auth.issued == ["token-1", "token-2"]
