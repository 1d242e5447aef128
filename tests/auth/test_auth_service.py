"""The auth service over a real socket: API keys become tokens that the kit verifies."""

from __future__ import annotations

import json
import os
import stat

import grpc
import pytest
from qruntime.auth.v1 import auth_pb2, auth_service_pb2, auth_service_pb2_grpc

from qruntime_auth.bootstrap import write_private
from qruntime_auth.store import new_api_key
from qruntime_kit.errors import from_rpc_error


def create_token(suite, api_key: str, instance: str = ""):
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        return stub.CreateToken(auth_service_pb2.CreateTokenRequest(api_key=api_key, instance=instance))


def error_of(call):
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return from_rpc_error(caught.value)


def test_bootstrap_writes_owner_only_file_with_a_working_key(start_suite):
    suite = start_suite()
    path = suite.data_dir / "bootstrap.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    bootstrap = json.loads(path.read_text())
    assert bootstrap["url"] == suite.address
    assert bootstrap["instance"].startswith("crn:v1:")
    response = create_token(suite, bootstrap["api_key"], bootstrap["instance"])
    assert response.instance.crn == bootstrap["instance"]
    assert response.instance.plan == auth_pb2.PLAN_LITE
    assert response.role == auth_pb2.ROLE_MANAGER
    assert response.expire_time.seconds > 0


def test_instance_can_be_named_by_name(start_suite):
    suite = start_suite()
    assert create_token(suite, suite.api_key, "default").instance.crn == suite.instance


@pytest.mark.parametrize(
    ("key", "instance", "code", "reason"),
    [
        ("", "default", grpc.StatusCode.INVALID_ARGUMENT, "API_KEY_MISSING"),
        ("not-a-key", "default", grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID"),
        ("qrk_0000_wrong", "default", grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID"),
    ],
)
def test_bad_keys_are_refused(start_suite, key, instance, code, reason):
    suite = start_suite()
    err = error_of(lambda: create_token(suite, key, instance))
    assert (err.code, err.reason) == (code, reason)


def test_right_key_wrong_secret_is_refused(start_suite):
    suite = start_suite()
    prefix, key_id, _secret = suite.api_key.split("_")
    err = error_of(lambda: create_token(suite, f"{prefix}_{key_id}_forged", "default"))
    assert err.reason == "API_KEY_INVALID"


def test_user_key_needs_an_instance_of_its_own_account(start_suite):
    suite = start_suite()
    assert error_of(lambda: create_token(suite, suite.api_key, "")).reason == "INSTANCE_MISSING"
    _other_key, other_crn = suite.make_user(instance_name="theirs")
    err = error_of(lambda: create_token(suite, suite.api_key, other_crn))
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "INSTANCE_NOT_FOUND")


def test_service_key_gets_a_service_token(start_suite):
    suite = start_suite()
    response = create_token(suite, suite.service_key)
    assert response.token and not response.HasField("instance")


def test_get_instance_needs_a_valid_token(start_suite):
    suite = start_suite()
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        err = error_of(lambda: stub.GetInstance(auth_service_pb2.GetInstanceRequest()))
        assert (err.code, err.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
        err = error_of(lambda: stub.GetInstance(auth_service_pb2.GetInstanceRequest(),
                                                metadata=(("authorization", "Bearer garbage"),)))
        assert err.reason == "TOKEN_INVALID"
        instance = stub.GetInstance(auth_service_pb2.GetInstanceRequest(), metadata=suite.metadata()).instance
        assert instance.crn == suite.instance and instance.name == "default"


def test_signing_key_survives_a_restart(start_suite, tmp_path):
    first = start_suite(data_dir=str(tmp_path / "shared"))
    token = first.token()
    second = start_suite(data_dir=str(tmp_path / "shared"))  # same store: same key, no new bootstrap
    with second.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        instance = stub.GetInstance(auth_service_pb2.GetInstanceRequest(), metadata=second.metadata(token)).instance
    assert instance.crn == first.instance


def test_a_new_service_key_replaces_the_old_one(start_suite, tmp_path):
    first = start_suite(data_dir=str(tmp_path / "shared"))
    old_key = first.service_key
    assert create_token(first, old_key).token
    second = start_suite(data_dir=str(tmp_path / "shared"))  # the deployment rotated its service key
    assert create_token(second, second.service_key).token
    err = error_of(lambda: create_token(second, old_key))
    assert (err.code, err.reason) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")


def test_a_service_key_whose_secret_changed_takes_the_new_secret(start_suite, tmp_path):
    prefix, key_id, _ = new_api_key().split("_")
    start_suite(data_dir=str(tmp_path / "shared"), service_key=f"{prefix}_{key_id}_first-secret")
    suite = start_suite(data_dir=str(tmp_path / "shared"), service_key=f"{prefix}_{key_id}_second-secret")
    assert create_token(suite, f"{prefix}_{key_id}_second-secret").token
    assert error_of(lambda: create_token(suite, f"{prefix}_{key_id}_first-secret")).reason == "API_KEY_INVALID"


def test_a_private_file_is_owner_only_even_over_a_stale_temporary_file(tmp_path):
    path = tmp_path / "bootstrap.json"
    stale = tmp_path / "bootstrap.json.tmp"  # left by a crash, or planted, with wider rights
    stale.write_text("old")
    stale.chmod(0o644)
    write_private(path, "secret\n")
    assert path.read_text() == "secret\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
