"""The auth service over a real socket: API keys become tokens that the kit verifies."""

from __future__ import annotations

import json
import os
import stat
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from qruntime.auth.v1 import auth_pb2, auth_service_pb2, auth_service_pb2_grpc
from qruntime.programs.v1 import programs_service_pb2, programs_service_pb2_grpc

from qruntime_auth.keys import key_id_of, new_api_key, split_api_key
from qruntime_auth.tokens import TokenIssuer
from qruntime_kit.errors import from_rpc_error
from qruntime_kit.secrets import write_private


def create_token(suite, api_key: str, instance: str = "", account: str = "", audiences=()):
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        return stub.CreateToken(auth_service_pb2.CreateTokenRequest(api_key=api_key, instance=instance,
                                                                    account=account, audiences=audiences))


def error_of(call):
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return from_rpc_error(caught.value)


def get_instance(suite, token: str):
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        return stub.GetInstance(auth_service_pb2.GetInstanceRequest(), metadata=suite.metadata(token)).instance


def test_bootstrap_writes_owner_only_file_with_a_key_for_a_lite_and_a_standard_instance(start_suite):
    suite = start_suite()
    path = suite.data_dir / "bootstrap.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    bootstrap = json.loads(path.read_text())
    assert bootstrap["url"] == suite.address
    assert bootstrap["instance"] == bootstrap["instances"]["lite"]
    for plan, enum in (("lite", auth_pb2.PLAN_LITE), ("standard", auth_pb2.PLAN_STANDARD)):
        crn = bootstrap["instances"][plan]
        assert crn.startswith("crn:v1:qruntime:public:quantum-computing:local:a/" + bootstrap["account_id"] + ":")
        assert crn.endswith("::")
        response = create_token(suite, bootstrap["api_key"], crn)
        assert (response.instance.crn, response.instance.plan, response.instance.name) == (crn, enum, plan)
        assert list(response.roles) == [auth_pb2.ROLE_MANAGER] and response.role == auth_pb2.ROLE_MANAGER
        assert time.time() < response.expire_time.seconds <= time.time() + 3600


def test_every_file_of_the_data_folder_is_owner_only_even_in_a_folder_open_to_all(start_suite, tmp_path):
    shared = tmp_path / "open"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    suite = start_suite("programs", data_dir=str(shared))
    suite.token()
    files = [p for p in shared.rglob("*") if p.is_file()]
    assert {"auth.db", "programs.db", "key-hash.secret", "bootstrap.json"} <= {p.name for p in files}
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {p.name: "0o600" for p in files}


@pytest.mark.parametrize("name", ["auth.db", "bootstrap.json", "key-hash.secret"])
def test_a_secret_file_others_can_read_stops_the_start_with_a_clear_message(start_suite, tmp_path, name):
    data = tmp_path / "data"
    start_suite(data_dir=str(data))
    (data / name).chmod(0o644)
    with pytest.raises(SystemExit) as caught:
        start_suite(data_dir=str(data))
    assert name in str(caught.value) and "0644" in str(caught.value) and "chmod 600" in str(caught.value)


def test_instance_can_be_named_by_name(start_suite):
    suite = start_suite()
    assert create_token(suite, suite.api_key, "lite").instance.crn == suite.instance


@pytest.mark.parametrize(
    ("key", "instance", "code", "reason"),
    [
        ("", "lite", grpc.StatusCode.INVALID_ARGUMENT, "API_KEY_MISSING"),
        ("not-a-key", "lite", grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID"),
        ("qrk_0000_wrong", "lite", grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID"),
        (new_api_key(), "lite", grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID"),  # well-formed, unknown
    ],
)
def test_bad_keys_are_refused(start_suite, key, instance, code, reason):
    suite = start_suite()
    err = error_of(lambda: create_token(suite, key, instance))
    assert (err.code, err.reason) == (code, reason)


def test_a_key_has_a_prefix_an_id_and_a_checksum_that_catches_a_typo():
    key = new_api_key()
    assert key.startswith("qrk_") and len(key_id_of(key)) == 16
    assert split_api_key(key) is not None
    typo = key[:-10] + ("A" if key[-10] != "A" else "B") + key[-9:]
    assert split_api_key(typo) is None and key_id_of(typo) == ""


def test_right_key_id_wrong_secret_is_refused_and_the_store_keeps_no_secret(start_suite):
    suite = start_suite()
    key_id = key_id_of(suite.api_key)
    forged_body = f"qrk_{key_id}_{new_api_key().split('_')[2]}"  # a valid checksum over another secret
    err = error_of(lambda: create_token(suite, forged_body, "lite"))
    assert err.reason == "API_KEY_INVALID"
    secret = split_api_key(suite.api_key)[1]
    assert secret.encode() not in (suite.data_dir / "auth.db").read_bytes()


def test_user_key_needs_an_instance_of_its_own_account(start_suite):
    suite = start_suite()
    assert error_of(lambda: create_token(suite, suite.api_key, "")).reason == "INSTANCE_MISSING"
    _other_key, other_crn = suite.make_user(instance_name="theirs")
    err = error_of(lambda: create_token(suite, suite.api_key, other_crn))
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "INSTANCE_NOT_FOUND")


def test_an_account_token_is_for_no_instance(start_suite):
    suite = start_suite()
    response = create_token(suite, suite.api_key, account="-")
    assert response.token and not response.HasField("instance")
    err = error_of(lambda: get_instance(suite, response.token))
    assert err.reason == "INSTANCE_NOT_FOUND"


def test_a_service_key_is_refused_at_the_front_door_both_ways(start_suite):
    suite = start_suite()
    err = error_of(lambda: create_token(suite, suite.service_key))
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SERVICE_KEY_NOT_ACCEPTED")
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        err = error_of(lambda: stub.CreateServiceToken(
            auth_service_pb2.CreateServiceTokenRequest(service_key=suite.service_key)))
        assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "INTERNAL_METHOD")
        err = error_of(lambda: stub.ListRevocations(auth_service_pb2.ListRevocationsRequest()))
        assert err.reason == "INTERNAL_METHOD"


def test_a_service_token_allows_exactly_its_services_calls(start_suite):
    suite = start_suite("programs")
    token = suite.token(suite.service_key)
    with suite.channel() as channel:
        programs = programs_service_pb2_grpc.ProgramsServiceStub(channel)
        got = programs.GetProgram(programs_service_pb2.GetProgramRequest(program_id="sampler"),
                                  metadata=suite.metadata(token))
        assert got.program.id == "sampler"
        err = error_of(lambda: programs.ListPrograms(programs_service_pb2.ListProgramsRequest(),
                                                     metadata=suite.metadata(token)))
        assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SERVICE_CALL_NOT_ALLOWED")
    err = error_of(lambda: get_instance(suite, token))  # auth is an audience (revocations), GetInstance no call
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SERVICE_CALL_NOT_ALLOWED")


def test_get_instance_needs_a_valid_token(start_suite):
    suite = start_suite()
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        err = error_of(lambda: stub.GetInstance(auth_service_pb2.GetInstanceRequest()))
        assert (err.code, err.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
        err = error_of(lambda: stub.GetInstance(auth_service_pb2.GetInstanceRequest(),
                                                metadata=(("authorization", "Bearer garbage"),)))
        assert err.reason == "TOKEN_INVALID"
    instance = get_instance(suite, suite.token())
    assert instance.crn == suite.instance and instance.name == "lite"


def test_signing_key_survives_a_restart(start_suite, tmp_path):
    first = start_suite(data_dir=str(tmp_path / "shared"))
    token = first.token()
    second = start_suite(data_dir=str(tmp_path / "shared"))  # same store: same key, no new bootstrap
    assert get_instance(second, token).crn == first.instance


def test_a_rotated_signing_key_still_verifies_the_tokens_it_signed(start_suite):
    suite = start_suite()
    old_token = suite.token()
    auth = suite.suite.components[0]
    auth.issuer = TokenIssuer(auth.store, rotation_seconds=0)  # every token from now on: a new key
    suite.run(auth.exchange_service_key(suite.service_key))
    listed = [k.key_id for k in list_signing_keys(suite)]
    assert len(listed) >= 2
    assert get_instance(suite, old_token).crn == suite.instance


def list_signing_keys(suite):
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        return stub.ListSigningKeys(auth_service_pb2.ListSigningKeysRequest()).signing_keys


def test_a_new_service_key_replaces_the_old_one(start_suite, tmp_path):
    first = start_suite(data_dir=str(tmp_path / "shared"))
    old_key = first.service_key
    assert first.token(old_key)
    second = start_suite(data_dir=str(tmp_path / "shared"))  # the deployment rotated its service key
    assert second.token(second.service_key)
    with pytest.raises(Exception) as caught:
        second.run(second.suite.components[0].exchange_service_key(old_key))
    assert getattr(caught.value, "reason", "") == "API_KEY_INVALID"


def test_revocation_takes_effect_within_five_seconds(start_suite):
    suite = start_suite()
    store = suite.auth_store
    key, crn = suite.make_user(instance_name="revoked")
    token = suite.token(key, crn)
    assert get_instance(suite, token).crn == crn
    store.delete_key(key_id_of(key))
    started = time.monotonic()
    while True:
        try:
            get_instance(suite, token)
        except grpc.RpcError as err:
            assert from_rpc_error(err).reason == "TOKEN_REVOKED"
            break
        assert time.monotonic() - started < 5, "a deleted key's token still works after 5 s"
        time.sleep(0.2)
    assert error_of(lambda: create_token(suite, key, crn)).reason == "API_KEY_INVALID"


def test_a_disabled_user_s_tokens_and_keys_stop_working(start_suite):
    suite = start_suite()
    key, crn = suite.make_user(instance_name="disabled")
    token = suite.token(key, crn)
    user_id = suite.auth_store.api_key(key_id_of(key))["user_id"]
    suite.auth_store.set_user_disabled(user_id, True)
    time.sleep(2.5)  # one poll of the revocations
    assert error_of(lambda: get_instance(suite, token)).reason == "TOKEN_REVOKED"
    assert error_of(lambda: create_token(suite, key, crn)).reason == "USER_DISABLED"


def test_token_requests_are_rate_limited_per_key_with_retry_info(start_suite):
    suite = start_suite(token_requests_per_key=0.5)
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        request = auth_service_pb2.CreateTokenRequest(api_key=suite.api_key, instance=suite.instance)
        for _ in range(20):  # the burst
            stub.CreateToken(request)
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateToken(request)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = rpc_status.from_call(caught.value).details
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in details) and 0 < retry.retry_delay.ToNanoseconds() <= 2.1e9
    assert from_rpc_error(caught.value).reason == "TOO_MANY_TOKEN_REQUESTS"


def test_a_private_file_is_owner_only_even_over_a_stale_temporary_file(tmp_path):
    path = tmp_path / "bootstrap.json"
    stale = tmp_path / "bootstrap.json.tmp"  # left by a crash, or planted, with wider rights
    stale.write_text("old")
    stale.chmod(0o644)
    write_private(path, "secret\n")
    assert path.read_text() == "secret\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_behind_the_gateway_the_per_peer_limit_counts_the_caller_not_what_it_claims(start_suite):
    from qruntime_suite.gateway import GatewaySettings, start_gateway

    suite = start_suite(trusted_proxies="ipv4:127.0.0.1", token_requests_per_peer=0.01)
    gateway = suite.run(start_gateway(GatewaySettings(port=0, http_port=0, auth_url=suite.address, grace_seconds=0)))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = auth_service_pb2_grpc.AuthServiceStub(channel)
            codes = []
            for attempt in range(101):  # each claiming another address: the gateway says the real one
                with pytest.raises(grpc.RpcError) as caught:
                    stub.CreateToken(auth_service_pb2.CreateTokenRequest(api_key="not-a-key", instance="lite"),
                                     metadata=(("x-forwarded-for", f"ipv4:10.0.0.{attempt}"),))
                codes.append(caught.value.code())
    finally:
        suite.run(gateway.stop(0))
    assert codes[:100] == [grpc.StatusCode.UNAUTHENTICATED] * 100  # the burst of 100
    assert codes[100] == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_what_jobs_sends_for_a_user_is_a_delegated_token_no_other_service_takes(start_suite):
    import jwt as pyjwt

    suite = start_suite("programs")
    auth = suite.suite.components[0]
    user_token = suite.token()
    delegated, expiry = suite.run(auth.delegate(suite.service_key, user_token))
    claims = pyjwt.decode(delegated, options={"verify_signature": False})
    assert sorted(claims["aud"]) == ["devices", "programs"] and claims["actor"] == "jobs"
    assert expiry - time.time() <= 300 and claims["sub"] == pyjwt.decode(
        user_token, options={"verify_signature": False})["sub"]
    with suite.channel() as channel:
        programs = programs_service_pb2_grpc.ProgramsServiceStub(channel)
        listed = programs.ListPrograms(programs_service_pb2.ListProgramsRequest(), metadata=suite.metadata(delegated))
        assert {"sampler", "hello-world"} <= {p.id for p in listed.programs}  # the user's rights
    assert error_of(lambda: get_instance(suite, delegated)).reason == "TOKEN_WRONG_AUDIENCE"  # auth: not its audience
    # Only a token meant for jobs can be delegated by jobs, only with jobs' own key.
    narrow = create_token(suite, suite.api_key, suite.instance, audiences=["programs"]).token
    with pytest.raises(Exception) as caught:
        suite.run(auth.delegate(suite.service_key, narrow))
    assert getattr(caught.value, "reason", "") == "TOKEN_WRONG_AUDIENCE"
    with pytest.raises(Exception) as caught:
        suite.run(auth.delegate(suite.api_key, user_token))
    assert getattr(caught.value, "reason", "") == "API_KEY_INVALID"
    assert error_of(lambda: get_instance(suite, narrow)).reason == "TOKEN_WRONG_AUDIENCE"
    assert error_of(lambda: create_token(suite, suite.api_key, suite.instance, audiences=["everything"])).reason \
        == "INVALID_AUDIENCE"


def test_an_instance_token_cannot_manage_the_account_and_an_account_token_runs_nothing(start_suite):
    from qruntime.admin.v1 import admin_service_pb2, admin_service_pb2_grpc

    suite = start_suite("programs")
    with suite.channel() as channel:
        admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        programs = programs_service_pb2_grpc.ProgramsServiceStub(channel)
        request = admin_service_pb2.ListInstancesRequest()
        with pytest.raises(grpc.RpcError) as caught:  # what jobs sees of a user is no use to the admin API
            admin.ListInstances(request, metadata=suite.metadata(suite.token()))
        assert from_rpc_error(caught.value).reason == "TOKEN_WRONG_AUDIENCE"
        account = create_token(suite, suite.api_key, account="-").token
        assert len(admin.ListInstances(request, metadata=suite.metadata(account)).instances) == 2
        with pytest.raises(grpc.RpcError) as caught:
            programs.ListPrograms(programs_service_pb2.ListProgramsRequest(), metadata=suite.metadata(account))
        assert from_rpc_error(caught.value).reason == "TOKEN_WRONG_AUDIENCE"
