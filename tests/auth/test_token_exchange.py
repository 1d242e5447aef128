"""AuthService.ExchangeToken over a real socket: one account token, an instance token for any
instance its user may use, with CreateToken's checks and revocation intact."""

from __future__ import annotations

import dataclasses
import time

import grpc
import jwt
import pytest
from qruntime.auth.v1 import auth_pb2, auth_service_pb2, auth_service_pb2_grpc

from qruntime_auth.keys import key_id_of
from qruntime_kit.errors import from_rpc_error
from qruntime_kit.tokens import INSTANCE_AUDIENCES


@dataclasses.dataclass
class Member:
    """A user who is a plain member of an account with three instances: Manager on "first", Reader
    on "second", no role on "third"."""

    key: str
    user_id: str
    account_id: str
    instances: dict[str, str]  # name -> CRN


def make_member(suite, tag: str) -> Member:
    store = suite.auth_store
    owner = store.create_user(f"owner-{tag}@example.org")
    account = store.create_account(f"account-{tag}", owner)
    user = store.create_user(f"member-{tag}@example.org")
    store.invite(account, user)
    store.answer_invitation(account, user, True)
    instances = {}
    for name, role in (("first", "manager"), ("second", "reader"), ("third", None)):
        row = store.create_instance(account, name, "lite")
        instances[name] = row["crn"]
        if role:
            store.create_policy(account, "user", user, row["id"], role)
    return Member(store.create_user_key(user)[0], user, account, instances)


def account_token(suite, key: str, audiences=()) -> str:
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        return stub.CreateToken(auth_service_pb2.CreateTokenRequest(
            api_key=key, account="-", audiences=audiences)).token


def exchange(suite, token: str, instance: str, audiences=()) -> auth_service_pb2.ExchangeTokenResponse:
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        return stub.ExchangeToken(auth_service_pb2.ExchangeTokenRequest(instance=instance, audiences=audiences),
                                  metadata=(("authorization", f"Bearer {token}"),))


def refused(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = from_rpc_error(caught.value)
    return error.code, error.reason


def get_instance(suite, token: str) -> str:
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        return stub.GetInstance(auth_service_pb2.GetInstanceRequest(),
                                metadata=(("authorization", f"Bearer {token}"),)).instance.crn


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


@pytest.fixture(scope="module")
def suite(start_module_suite):
    return start_module_suite()


def test_one_account_token_serves_every_instance_the_user_has_a_role_on(suite):
    member = make_member(suite, "every")
    source = account_token(suite, member.key)
    first = exchange(suite, source, member.instances["first"])
    second = exchange(suite, source, "second")  # by name, as a Service-CRN header may
    assert first.instance.crn == member.instances["first"] and list(first.roles) == [auth_pb2.ROLE_MANAGER]
    assert second.instance.crn == member.instances["second"] and list(second.roles) == [auth_pb2.ROLE_READER]
    assert get_instance(suite, first.token) == member.instances["first"]
    assert get_instance(suite, second.token) == member.instances["second"]
    derived, original = claims(first.token), claims(source)
    assert (derived["sub"], derived["akid"]) == (original["sub"], original["akid"])  # revoked with them
    assert sorted(derived["aud"]) == sorted(INSTANCE_AUDIENCES) and derived["exp"] <= original["exp"]
    assert first.expire_time.seconds == derived["exp"]
    assert "quantum-computing.job.create" in derived["act"] and "quantum-computing.job.create" not in claims(
        second.token)["act"]


def test_no_role_is_403_another_account_404_and_no_instance_400(suite):
    member = make_member(suite, "denied")
    stranger = make_member(suite, "stranger")
    source = account_token(suite, member.key)
    assert refused(lambda: exchange(suite, source, "third")) == (grpc.StatusCode.PERMISSION_DENIED,
                                                                  "NO_ROLE_ON_INSTANCE")
    assert refused(lambda: exchange(suite, source, stranger.instances["first"])) == (
        grpc.StatusCode.NOT_FOUND, "INSTANCE_NOT_FOUND")
    assert refused(lambda: exchange(suite, source, "")) == (grpc.StatusCode.INVALID_ARGUMENT, "INSTANCE_MISSING")
    assert refused(lambda: exchange(suite, "not-a-token", "first")) == (grpc.StatusCode.UNAUTHENTICATED,
                                                                         "TOKEN_INVALID")


def test_a_token_cannot_be_widened_nor_a_service_s_or_a_delegated_one_exchanged(suite):
    member = make_member(suite, "narrow")
    with suite.channel() as channel:
        narrow = auth_service_pb2_grpc.AuthServiceStub(channel).CreateToken(auth_service_pb2.CreateTokenRequest(
            api_key=member.key, instance="first", audiences=["auth", "programs"])).token
    assert sorted(claims(exchange(suite, narrow, "second").token)["aud"]) == ["auth", "programs"]
    assert refused(lambda: exchange(suite, narrow, "second", ["jobs"])) == (grpc.StatusCode.PERMISSION_DENIED,
                                                                            "AUDIENCE_NOT_ALLOWED")
    source = account_token(suite, member.key)
    assert refused(lambda: exchange(suite, source, "first", ["admin"]))[1] == "AUDIENCE_NOT_ALLOWED"
    assert refused(lambda: exchange(suite, source, "first", ["everything"]))[1] == "INVALID_AUDIENCE"
    only_admin = account_token(suite, member.key, ["admin"])  # names no "auth": cannot even ask
    assert refused(lambda: exchange(suite, only_admin, "first"))[1] == "TOKEN_WRONG_AUDIENCE"
    assert refused(lambda: exchange(suite, suite.token(suite.service_key), "first")) == (
        grpc.StatusCode.PERMISSION_DENIED, "SERVICE_CALL_NOT_ALLOWED")
    user_token = suite.token()
    delegated, _ = suite.run(suite.suite.components[0].delegate(suite.service_key, user_token))
    assert refused(lambda: exchange(suite, delegated, suite.instance))[1] == "TOKEN_WRONG_AUDIENCE"


def until_refused(suite, token: str, seconds: float = 5.0) -> str:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            get_instance(suite, token)
        except grpc.RpcError as err:
            return from_rpc_error(err).reason
        time.sleep(0.2)
    return "still accepted"


def test_a_deleted_key_cuts_its_tokens_and_their_exchange_at_once_and_derived_ones_within_5_s(suite):
    member = make_member(suite, "deleted")
    source = account_token(suite, member.key)
    derived = exchange(suite, source, "first").token
    suite.auth_store.delete_key(key_id_of(member.key))
    assert refused(lambda: exchange(suite, source, "second")) == (grpc.StatusCode.UNAUTHENTICATED,
                                                                   "API_KEY_INVALID")
    assert until_refused(suite, derived) == "TOKEN_REVOKED"


def test_a_disabled_user_and_a_removed_role_cut_the_derived_tokens(suite):
    disabled = make_member(suite, "disabled")
    source = account_token(suite, disabled.key)
    derived = exchange(suite, source, "first").token
    suite.auth_store.set_user_disabled(disabled.user_id, True)
    assert refused(lambda: exchange(suite, source, "first")) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    assert until_refused(suite, derived) == "TOKEN_REVOKED"

    demoted = make_member(suite, "demoted")
    store = suite.auth_store
    source = account_token(suite, demoted.key)
    derived = exchange(suite, source, "second").token
    policy = next(p for p in store.account_policies(demoted.account_id) if p["subject_id"] == demoted.user_id
                  and p["role"] == "reader")
    store.delete_policy(policy)
    assert refused(lambda: exchange(suite, source, "second"))[1] == "TOKEN_REVOKED"  # the source went too
    assert until_refused(suite, derived) == "TOKEN_REVOKED"
    time.sleep(0.01)  # a new sign-in after the revocation: the role is gone, the other one stays
    fresh = account_token(suite, demoted.key)
    assert refused(lambda: exchange(suite, fresh, "second"))[1] == "NO_ROLE_ON_INSTANCE"
    assert get_instance(suite, exchange(suite, fresh, "first").token) == demoted.instances["first"]
