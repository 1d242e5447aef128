"""The connection layer against the real suite: bearer token and request id on every call, token
caching and refresh, and pages followed behind iteration."""

from __future__ import annotations

import re
import threading
import time

import grpc
import pytest
from client_support import INSTANCE_NAME, LITE_SIMULATORS, plant_token, signed_token
from qruntime import IBMRuntimeService
from qruntime._channel import REFRESH_MARGIN_S, Transport, _TokenSource
from qruntime.auth.v1 import auth_service_pb2_grpc
from qruntime.devices.v1 import devices_service_pb2
from qruntime.exceptions import IBMNotAuthorizedError, NotFoundError
from qruntime.jobs.v1 import jobs_service_pb2
from qruntime.programs.v1 import programs_service_pb2

import qruntime_auth.tokens
from qruntime_kit.tokens import new_private_key_pem

# They start worker processes (program hosts, simulation workers): seconds each, so not in the fast set.
pytestmark = pytest.mark.slow


HEX_ID = r"[0-9a-f]{32}"


def test_every_call_sends_the_token_and_a_fresh_request_id_the_server_echoes(service, recorder) -> None:
    for _ in range(3):
        with pytest.raises(NotFoundError) as info:
            service.job("missing")
        assert info.value.reason == "JOB_NOT_FOUND"  # so the server took the token
    calls = recorder.calls("GetJob")
    token = service._transport.tokens.token()
    assert [c.sent["authorization"] for c in calls] == [f"Bearer {token}"] * 3
    ids = [c.sent["x-request-id"] for c in calls]
    assert all(re.fullmatch(HEX_ID, i) for i in ids) and len(set(ids)) == 3
    # The server answers with the request id it received: the one the client sent.
    assert [c.echoed["x-request-id"] for c in calls] == ids
    assert all(c.code == grpc.StatusCode.NOT_FOUND for c in calls)

    service.jobs()
    [listed] = recorder.calls("ListJobs")
    assert listed.code == grpc.StatusCode.OK and listed.echoed["x-request-id"] == listed.sent["x-request-id"]
    assert listed.sent["x-request-id"] not in ids


def test_error_names_the_request_id_it_was_sent_with(service, recorder) -> None:
    with pytest.raises(NotFoundError) as info:
        service.program("missing")
    assert info.value.reason == "PROGRAM_NOT_FOUND"
    [call] = recorder.calls("GetProgram")
    assert info.value.request_id == call.sent["x-request-id"] == call.echoed["x-request-id"]


def test_key_is_checked_at_once_and_instance_resolved(suite, account, recorder) -> None:
    with pytest.raises(IBMNotAuthorizedError) as info:
        IBMRuntimeService(token="qrk_00_wrong", instance=INSTANCE_NAME, url=suite.address)
    assert info.value.reason == "API_KEY_INVALID"
    with pytest.raises(NotFoundError) as info:
        IBMRuntimeService(token=account[0], instance="no-such-instance", url=suite.address)
    assert info.value.reason == "INSTANCE_NOT_FOUND"
    assert [c.code for c in recorder.calls("CreateToken")] == [grpc.StatusCode.UNAUTHENTICATED,
                                                              grpc.StatusCode.NOT_FOUND]
    with IBMRuntimeService(token=account[0], instance=INSTANCE_NAME, url=suite.address) as service:
        assert service.instance == account[1]  # the name resolved to the CRN
        assert repr(service) == f"<IBMRuntimeService(url={suite.address!r}, instance={account[1]!r})>"
    assert len(recorder.calls("CreateToken")) == 3  # one per service object, at its creation


def test_token_is_cached_while_far_from_expiry(service, recorder) -> None:
    for _ in range(3):
        service.jobs()
    assert len(recorder.calls("CreateToken")) == 1  # the one at creation
    assert len({c.sent["authorization"] for c in recorder.calls("ListJobs")}) == 1


def test_token_source_reuses_a_token_then_renews_it_within_a_minute_of_expiry(suite, account) -> None:
    now = [0.0]
    with grpc.insecure_channel(suite.address) as channel:
        source = _TokenSource(auth_service_pb2_grpc.AuthServiceStub(channel), account[0], INSTANCE_NAME,
                              clock=lambda: now[0])
        now[0] = time.time()
        first = source.token()
        expiry = source.response.expire_time.ToSeconds()
        assert 3500 < expiry - now[0] <= 3600  # the auth service's tokens live an hour
        assert source.token() == first and source.response.instance.crn == account[1]
        now[0] = expiry - REFRESH_MARGIN_S - 1  # 61 s before expiry: still kept
        assert source.token() == first
        now[0] = expiry - REFRESH_MARGIN_S + 1  # 59 s before expiry: replaced
        second = source.token()
        assert second != first
        now[0] = time.time()  # the new token has its own hour
        assert source.token() == second
        assert source.refresh(stale=first) == second  # someone else renewed it already: kept
        assert source.refresh(stale=second) != second


def test_short_lived_tokens_are_renewed_before_each_call(suite, account, recorder, monkeypatch) -> None:
    monkeypatch.setattr(qruntime_auth.tokens, "TOKEN_TTL_SECONDS", 59)  # inside the 60 s margin
    with IBMRuntimeService(token=account[0], instance=INSTANCE_NAME, url=suite.address) as service:
        service.jobs()
        service.jobs()
    assert len(recorder.calls("CreateToken")) == 3
    sent = [c.sent["authorization"] for c in recorder.calls("ListJobs")]
    assert len(set(sent)) == 2  # each call went with a token of its own


def test_token_expired_is_refreshed_and_retried_once_with_the_same_request_id(suite, service, recorder) -> None:
    expired = signed_token(suite, like=service._transport.tokens.token(), ttl_seconds=-120)
    plant_token(service, expired)
    assert service.jobs() == []
    first, second = recorder.calls("ListJobs")
    assert first.code == grpc.StatusCode.UNAUTHENTICATED and second.code == grpc.StatusCode.OK
    assert first.sent["authorization"] == f"Bearer {expired}" != second.sent["authorization"]
    assert first.sent["x-request-id"] == second.sent["x-request-id"] == second.echoed["x-request-id"]
    assert len(recorder.calls("CreateToken")) == 2  # creation, then the refresh
    service.jobs()
    assert len(recorder.calls("CreateToken")) == 2  # the new token is kept
    assert recorder.calls("ListJobs")[-1].sent["authorization"] == second.sent["authorization"]


def test_token_expired_twice_gives_up(suite, service, recorder, monkeypatch) -> None:
    plant_token(service, signed_token(suite, like=service._transport.tokens.token(), ttl_seconds=-120))
    monkeypatch.setattr(qruntime_auth.tokens, "TOKEN_TTL_SECONDS", -120)  # auth now issues expired tokens
    with pytest.raises(IBMNotAuthorizedError) as info:
        service.jobs()
    assert info.value.reason == "TOKEN_EXPIRED"
    assert len(recorder.calls("ListJobs")) == 2


@pytest.mark.parametrize("kind", ["garbage", "foreign key"])
def test_other_unauthenticated_reasons_are_not_retried(suite, service, recorder, kind) -> None:
    token = "not-a-token" if kind == "garbage" else signed_token(
        suite, like=service._transport.tokens.token(), ttl_seconds=3600, private_key_pem=new_private_key_pem())
    plant_token(service, token)
    with pytest.raises(IBMNotAuthorizedError) as info:
        service.jobs()
    assert info.value.reason == "TOKEN_INVALID"
    assert len(recorder.calls("ListJobs")) == 1
    assert len(recorder.calls("CreateToken")) == 1  # the one at creation


def test_concurrent_calls_share_one_refresh(suite, service, recorder) -> None:
    plant_token(service, signed_token(suite, like=service._transport.tokens.token(), ttl_seconds=-120))
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
    assert len(recorder.calls("CreateToken")) == 2  # creation, then one refresh for all six


def test_pages_are_followed_behind_iteration(service, recorder) -> None:
    """The servers' pages hold up to 200 items; small page sizes show the client follows their tokens."""
    transport: Transport = service._transport
    jobs = [service.run("hello-world", {"iterations": 2}) for _ in range(3)]
    for job in jobs:
        job.result(timeout=30)

    def every(method, request, field: str) -> tuple[list, int]:
        pages = []
        items = []
        for item in transport.paginate(method, request, field):
            items.append(item)
            if request.page_token not in pages:
                pages.append(request.page_token)
        return items, len(pages)

    listed, pages = every(transport.jobs.ListJobs, jobs_service_pb2.ListJobsRequest(page_size=2), "jobs")
    assert [j.id for j in listed] == [j.job_id for j in jobs[::-1]] and pages == 2
    listed, pages = every(transport.devices.ListBackends, devices_service_pb2.ListBackendsRequest(page_size=1),
                          "backends")
    assert [b.name for b in listed] == LITE_SIMULATORS and pages == len(LITE_SIMULATORS)
    listed, pages = every(transport.programs.ListPrograms,
                          programs_service_pb2.ListProgramsRequest(page_size=2), "programs")
    assert [p.id for p in listed][:1] == ["estimator"] and pages >= 2
    assert [p.id for p in listed] == [p.program_id for p in service.programs()]
    listed, pages = every(transport.jobs.ListJobLogs,
                          jobs_service_pb2.ListJobLogsRequest(job_id=jobs[0].job_id, page_size=1), "entries")
    # The backend chosen for it, and the program's two lines.
    assert len(listed) == len(jobs[0].logs().splitlines()) == pages == 4
    listed, pages = every(transport.jobs.ListJobInterimResults,
                          jobs_service_pb2.ListJobInterimResultsRequest(job_id=jobs[0].job_id, page_size=1),
                          "interim_results")
    assert len(listed) == pages == 2
    # A listing is lazy: taking the first item asks for the first page only.
    calls = len(recorder.calls("ListJobs"))
    first = next(transport.paginate(transport.jobs.ListJobs, jobs_service_pb2.ListJobsRequest(page_size=1), "jobs"))
    assert first.id == jobs[-1].job_id and len(recorder.calls("ListJobs")) == calls + 1
