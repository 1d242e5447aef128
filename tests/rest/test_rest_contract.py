"""The HTTP mapping read from the protos: its routes, the OpenAPI document, requests built from HTTP."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from openapi_spec_validator import validate
from qruntime.jobs.v1 import job_pb2, jobs_service_pb2

from qruntime_kit.auth import INTERNAL_METHODS
from qruntime_kit.errors import InvalidArgument
from qruntime_suite.rest import HTTP_STATUS, OPENAPI_FILE, FrontDoor
from qruntime_suite.transcoding import build_request, routes


def route(verb: str, template: str):
    return next(r for r in routes() if (r.verb, r.template) == (verb, template))


def test_the_quick_starts_routes_and_the_older_devices_names_are_annotated():
    served = {(r.verb, r.template): r.grpc_path for r in routes()}
    assert served[("GET", "/api/v1/programs")] == "/qruntime.programs.v1.ProgramsService/ListPrograms"
    assert served[("GET", "/api/v1/backends")] == served[("GET", "/api/v1/devices")]
    assert served[("POST", "/api/v1/jobs")] == "/qruntime.jobs.v1.JobsService/CreateJob"
    assert served[("GET", "/api/v1/jobs/{job_id}")] == "/qruntime.jobs.v1.JobsService/GetJob"
    assert served[("GET", "/api/v1/jobs/{job_id}/events")] == "/qruntime.jobs.v1.JobsService/WatchJob"
    assert not set(served.values()) & INTERNAL_METHODS
    assert len(served) == len(routes()), "two bindings share a verb and path"


def test_the_openapi_document_validates_and_documents_exactly_the_served_routes():
    document = json.loads(OPENAPI_FILE.read_text())
    validate(document)
    documented = {(verb.upper(), path) for path, operations in document["paths"].items() for verb in operations}

    async def served_routes():
        channel = grpc.aio.insecure_channel("127.0.0.1:1")  # never called
        app = FrontDoor(channel).app
        await channel.close()
        return {(r.method, r.resource.canonical) for r in app.router.routes()
                if r.resource.canonical.startswith(("/api/v1", "/identity")) and r.method != "HEAD"}

    served = asyncio.run(served_routes())
    # aiohttp names path variables v0, v1...; the document names the fields they set.
    by_template = {(r.verb, r.aiohttp_path()): (r.verb, r.openapi_path()) for r in routes()}
    assert {by_template.get(s, s) for s in served} == documented


def test_every_grpc_code_has_an_http_status():
    assert set(HTTP_STATUS) == set(grpc.StatusCode) - {grpc.StatusCode.OK}


def test_a_request_is_built_from_its_body_query_and_path():
    get = build_request(route("GET", "/api/v1/jobs/{job_id}"), {"job_id": "j1"}, {"view": ["JOB_VIEW_FULL"]}, b"")
    assert get == jobs_service_pb2.GetJobRequest(job_id="j1", view=job_pb2.JOB_VIEW_FULL)
    batch = build_request(route("GET", "/api/v1/jobs:batchGet"), {}, {"job_ids": ["a", "b"]}, b"")
    assert list(batch.job_ids) == ["a", "b"]
    created = build_request(route("POST", "/api/v1/jobs"), {}, {}, json.dumps({
        "program_id": "sampler", "backend": "ibm_lima", "params": {"shots": 10}, "validate_only": True}).encode())
    assert created.options.backend_name == "ibm_lima" and json.loads(created.inputs) == {"shots": 10}
    assert created.validate_only


@pytest.mark.parametrize("query, body, reason", [
    ({"validate_only": ["maybe"]}, b"", "UNKNOWN_PARAMETER"),  # the body is the request: no query
    ({}, b"{", "INVALID_JSON"),
    ({}, b'"text"', "INVALID_JSON"),
    ({}, b'{"program_id": ["a"]}', "INVALID_REQUEST"),
    ({}, b'{"options": {"backend_name": "x", "colour": 1}}', "INVALID_REQUEST"),
])
def test_bad_requests_are_invalid_argument_with_a_reason(query, body, reason):
    with pytest.raises(InvalidArgument) as caught:
        build_request(route("POST", "/api/v1/jobs"), {}, query, body)
    assert caught.value.reason == reason


def test_query_values_are_typed_by_their_fields():
    listing = route("GET", "/api/v1/jobs")
    assert build_request(listing, {}, {"page_size": ["5"], "state": ["JOB_STATE_DONE"]}, b"").page_size == 5
    for query, reason in [({"page_size": ["five"]}, "INVALID_REQUEST"), ({"nope": ["1"]}, "UNKNOWN_PARAMETER")]:
        with pytest.raises(InvalidArgument) as caught:
            build_request(listing, {}, query, b"")
        assert caught.value.reason == reason


def test_a_taken_http_port_stops_the_start_with_a_clear_message():
    import socket

    from qruntime_suite.rest import HttpFrontDoor

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        front_door = HttpFrontDoor("127.0.0.1", taken.getsockname()[1], "127.0.0.1:1")
        with pytest.raises(SystemExit, match="choose another --http-port"):
            asyncio.run(front_door.start())
