"""The AdminService and `qruntime admin` against a real suite: an operator, an account owner and new
users organise an account as the original's quick start does, through RPCs and the command alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from qruntime.admin.v1 import admin_pb2, admin_service_pb2_grpc
from qruntime.admin.v1 import admin_service_pb2 as pb
from qruntime.auth.v1 import auth_pb2, auth_service_pb2, auth_service_pb2_grpc

from qruntime_auth.keys import key_id_of
from qruntime_kit.errors import from_rpc_error
from qruntime_suite import admin_cli


class Admin:
    """AdminService calls with one API key's account token."""

    def __init__(self, suite, api_key: str, account: str = "-") -> None:
        self.suite, self.api_key = suite, api_key
        self.channel = suite.channel()
        auth = auth_service_pb2_grpc.AuthServiceStub(self.channel)
        self.token = auth.CreateToken(auth_service_pb2.CreateTokenRequest(api_key=api_key, account=account)).token
        self.stub = admin_service_pb2_grpc.AdminServiceStub(self.channel)

    def __getattr__(self, rpc: str):
        method = getattr(self.stub, rpc)
        return lambda request: method(request, metadata=(("authorization", f"Bearer {self.token}"),))

    def error(self, rpc: str, request):
        with pytest.raises(grpc.RpcError) as caught:
            getattr(self, rpc)(request)
        return from_rpc_error(caught.value)


def instance_token(suite, api_key: str, instance: str):
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        return stub.CreateToken(auth_service_pb2.CreateTokenRequest(api_key=api_key, instance=instance))


@pytest.fixture(scope="module")
def suite(start_module_suite):
    return start_module_suite()


def test_an_account_is_organised_through_the_admin_api(suite):
    owner = Admin(suite, suite.api_key)  # the bootstrap owner, an operator
    alice = owner.CreateUser(pb.CreateUserRequest(email="alice@example.org", name="Alice"))
    assert alice.api_key.startswith("qrk_") and alice.user.email == "alice@example.org"
    # Alice exists but belongs to no account yet: she can get no token for the owner's instances.
    err = pytest.raises(grpc.RpcError, instance_token, suite, alice.api_key, suite.instance).value
    assert from_rpc_error(err).reason == "INSTANCE_NOT_FOUND"

    invited = owner.InviteUser(pb.InviteUserRequest(user="alice@example.org"))
    assert invited.membership.state == admin_pb2.MEMBERSHIP_STATE_INVITED
    account_id = invited.membership.account_id
    alice_admin = Admin(suite, alice.api_key)  # in no account yet: her invitations and keys only
    assert [i.account_id for i in alice_admin.ListInvitations(pb.ListInvitationsRequest()).invitations] == [account_id]
    accepted = alice_admin.AcceptInvitation(pb.AcceptInvitationRequest(account_id=account_id))
    assert accepted.membership.state == admin_pb2.MEMBERSHIP_STATE_ACTIVE

    standard = owner.CreateInstance(pb.CreateInstanceRequest(name="physics", plan=auth_pb2.PLAN_STANDARD)).instance
    assert standard.crn.startswith(f"crn:v1:qruntime:public:quantum-computing:local:a/{account_id}:")
    group = owner.CreateAccessGroup(pb.CreateAccessGroupRequest(name="researchers")).access_group
    owner.AddAccessGroupMember(pb.AddAccessGroupMemberRequest(access_group="researchers", user=alice.user.id))
    policy = owner.CreatePolicy(pb.CreatePolicyRequest(policy=admin_pb2.Policy(
        access_group_id=group.id, instance="physics", role=auth_pb2.ROLE_READER))).policy
    assert policy.instance == standard.crn
    owner.CreatePolicy(pb.CreatePolicyRequest(policy=admin_pb2.Policy(
        user_id=alice.user.id, instance=standard.crn, role=auth_pb2.ROLE_WRITER)))
    granted = instance_token(suite, alice.api_key, "physics")
    assert sorted(granted.roles) == [auth_pb2.ROLE_READER, auth_pb2.ROLE_WRITER]  # additive
    assert granted.instance.plan == auth_pb2.PLAN_STANDARD

    # Alice is a member, not an administrator: she manages only her own keys.
    alice_member = Admin(suite, alice.api_key)
    err = alice_member.error("CreateInstance", pb.CreateInstanceRequest(name="mine", plan=auth_pb2.PLAN_LITE))
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACCOUNT_ADMIN_REQUIRED")
    made = alice_member.CreateApiKey(pb.CreateApiKeyRequest(name="laptop"))
    listed = alice_member.ListApiKeys(pb.ListApiKeysRequest()).keys
    assert {k.name for k in listed} == {"first", "laptop"} and all("qrk_" not in str(k) for k in listed)
    assert made.key.id == key_id_of(made.api_key)

    # Removing the group's policy leaves her Writer role; removing her from the account, nothing.
    owner.DeletePolicy(pb.DeletePolicyRequest(policy_id=policy.id))
    assert list(instance_token(suite, alice.api_key, "physics").roles) == [auth_pb2.ROLE_WRITER]
    owner.RemoveMember(pb.RemoveMemberRequest(user="alice@example.org"))
    err = pytest.raises(grpc.RpcError, instance_token, suite, alice.api_key, "physics").value
    assert from_rpc_error(err).reason == "INSTANCE_NOT_FOUND"


def test_another_account_s_things_are_not_found_and_not_listed(suite):
    owner = Admin(suite, suite.api_key)
    bob = owner.CreateUser(pb.CreateUserRequest(email="bob@example.org"))
    other_account = owner.CreateAccount(pb.CreateAccountRequest(name="bob's", owner="bob@example.org")).account_id
    bob_admin = Admin(suite, bob.api_key, account=other_account)
    bob_admin.CreateInstance(pb.CreateInstanceRequest(name="bobs", plan=auth_pb2.PLAN_LITE))
    assert [i.name for i in bob_admin.ListInstances(pb.ListInstancesRequest()).instances] == ["bobs"]
    assert "bobs" not in [i.name for i in owner.ListInstances(pb.ListInstancesRequest()).instances]
    for rpc, request in [
        ("DeleteInstance", pb.DeleteInstanceRequest(instance=suite.instance)),
        ("CreatePolicy", pb.CreatePolicyRequest(policy=admin_pb2.Policy(
            user_id=bob.user.id, instance=suite.instance, role=auth_pb2.ROLE_MANAGER))),
        ("RemoveMember", pb.RemoveMemberRequest(user="admin@localhost")),
    ]:
        assert bob_admin.error(rpc, request).code == grpc.StatusCode.NOT_FOUND, rpc
    # Bob is no operator: he cannot make users, or disable the owner.
    assert bob_admin.error("CreateUser", pb.CreateUserRequest(email="x@example.org")).reason == "OPERATOR_REQUIRED"
    assert bob_admin.error("DisableUser", pb.DisableUserRequest(user="admin@localhost")).reason == "OPERATOR_REQUIRED"
    assert bob_admin.error("DeleteApiKey", pb.DeleteApiKeyRequest(
        key_id=key_id_of(suite.api_key))).reason == "API_KEY_NOT_FOUND"


def test_bad_requests_are_typed_errors(suite):
    owner = Admin(suite, suite.api_key)
    err = owner.error("CreateInstance", pb.CreateInstanceRequest(name="x"))
    assert (err.code, err.reason, err.field_violations[0][0]) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PLAN",
                                                                   "plan")
    err = owner.error("CreateInstance", pb.CreateInstanceRequest(name="lite", plan=auth_pb2.PLAN_LITE))
    assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, "INSTANCE_EXISTS")
    err = owner.error("CreatePolicy", pb.CreatePolicyRequest(policy=admin_pb2.Policy(role=auth_pb2.ROLE_READER)))
    assert err.reason == "POLICY_SUBJECT_MISSING"
    err = owner.error("CreateUser", pb.CreateUserRequest(email="admin@localhost"))
    assert err.reason == "USER_EXISTS"
    err = owner.error("ListPolicies", pb.ListPoliciesRequest(page_token="garbage"))
    assert err.reason == "INVALID_PAGE_TOKEN"


def test_a_deleted_key_and_a_removed_role_end_tokens_within_five_seconds(suite):
    owner = Admin(suite, suite.api_key)
    carol = owner.CreateUser(pb.CreateUserRequest(email="carol@example.org"))
    owner.InviteUser(pb.InviteUserRequest(user=carol.user.id))
    Admin(suite, carol.api_key).AcceptInvitation(
        pb.AcceptInvitationRequest(account_id=owner.ListInstances(pb.ListInstancesRequest()).instances[0].account_id))
    policy = owner.CreatePolicy(pb.CreatePolicyRequest(policy=admin_pb2.Policy(
        user_id=carol.user.id, instance="lite", role=auth_pb2.ROLE_READER))).policy
    token = instance_token(suite, carol.api_key, "lite").token
    owner.DeletePolicy(pb.DeletePolicyRequest(policy_id=policy.id))
    assert refused_within(suite, token, 5.0) == "TOKEN_REVOKED"


def refused_within(suite, token: str, seconds: float) -> str:
    started = time.monotonic()
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        while time.monotonic() - started < seconds:
            try:
                stub.GetInstance(auth_service_pb2.GetInstanceRequest(), metadata=suite.metadata(token))
            except grpc.RpcError as err:
                return from_rpc_error(err).reason
            time.sleep(0.2)
    return "still accepted"


def admin_command(suite, *argv: str, api_key: str | None = None) -> tuple[int, str, str]:
    """`qruntime admin ...` run in this process, as main() runs it: (exit status, output, error)."""
    env = {"QRUNTIME_URL": suite.address, "QRUNTIME_API_KEY": api_key or suite.api_key}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        args = admin_cli.build_parser().parse_args(list(argv))
        result = admin_cli.run(args)
        return 0, json.dumps(result) if args.json else admin_cli.show(result), ""
    except admin_cli.AdminError as err:
        return 1, "", str(err)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v


def test_the_admin_command_end_to_end(suite, tmp_path):
    code, out, _ = admin_command(suite, "--json", "user", "create", "dave@example.org")
    assert code == 0
    dave = json.loads(out)
    assert dave["user"]["email"] == "dave@example.org" and dave["api_key"].startswith("qrk_")
    assert admin_command(suite, "user", "invite", "dave@example.org", "--role", "administrator")[0] == 0
    code, out, _ = admin_command(suite, "--json", "invitation", "list", api_key=dave["api_key"])
    assert code == 0
    account_id = json.loads(out)["invitations"][0]["account_id"]
    assert admin_command(suite, "invitation", "accept", account_id, api_key=dave["api_key"])[0] == 0
    # Dave administers the account now.
    code, out, _ = admin_command(suite, "--json", "instance", "create", "dave-lite", "--plan", "lite",
                                 api_key=dave["api_key"])
    assert code == 0 and json.loads(out)["instance"]["plan"] == "PLAN_LITE"
    assert admin_command(suite, "group", "create", "team", api_key=dave["api_key"])[0] == 0
    assert admin_command(suite, "group", "add-member", "team", "dave@example.org")[0] == 0
    code, out, _ = admin_command(suite, "policy", "create", "--group", "team", "--instance", "dave-lite",
                                 "--role", "manager")
    assert code == 0 and "role=ROLE_MANAGER" in out
    code, out, _ = admin_command(suite, "--json", "policy", "list")
    assert any(p.get("access_group_id") for p in json.loads(out)["policies"])
    code, out, _ = admin_command(suite, "instance", "list")
    assert "name=dave-lite" in out and "plan=PLAN_LITE" in out
    code, out, _ = admin_command(suite, "--json", "key", "create", "--name", "ci", api_key=dave["api_key"])
    key_id = json.loads(out)["key"]["id"]
    code, out, _ = admin_command(suite, "key", "list", api_key=dave["api_key"])
    assert key_id in out and "qrk_" not in out
    assert admin_command(suite, "key", "delete", key_id, api_key=dave["api_key"])[0] == 0
    # Clear errors, exit status 1, and no secret in them.
    code, _, err = admin_command(suite, "instance", "create", "dave-lite", "--plan", "lite")
    assert code == 1 and "INSTANCE_EXISTS" in err
    code, _, err = admin_command(suite, "user", "list", api_key=dave["api_key"][:-3] + "xyz")
    assert code == 1 and "API_KEY_INVALID" in err and dave["api_key"][8:] not in err


@pytest.mark.slow
def test_the_admin_command_is_an_installed_entry_point(suite):
    qruntime = Path(sys.executable).with_name("qruntime")
    env = {**os.environ, "QRUNTIME_URL": suite.address, "QRUNTIME_API_KEY": suite.api_key}
    done = subprocess.run([str(qruntime), "admin", "--json", "instance", "list"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert {i["name"] for i in json.loads(done.stdout)["instances"]} >= {"lite", "standard"}
    help_ = subprocess.run([str(qruntime), "admin", "policy", "create", "--help"], capture_output=True, text=True,
                           timeout=60)
    assert help_.returncode == 0 and "--instance" in help_.stdout


def test_the_client_names_its_account_and_lists_its_account_s_instances(suite):
    from qruntime import IBMRuntimeService

    with IBMRuntimeService(token=suite.api_key, instance="lite", url=suite.address) as service:
        account = service.active_account()
        assert (account["instance"], account["url"], account["channel"]) == (suite.instance, suite.address,
                                                                                "ibm_cloud")
        bootstrap = json.loads((suite.data_dir / "bootstrap.json").read_text())
        assert set(bootstrap["instances"].values()) <= set(service.instances())


def test_a_service_id_automates_with_keys_its_account_s_administrators_manage(suite):
    owner = Admin(suite, suite.api_key)
    made = owner.CreateServiceId(pb.CreateServiceIdRequest(name="nightly-ci"))
    robot = made.user
    assert robot.service_id_account_id and robot.id.startswith("serviceid-") and made.api_key.startswith("qrk_")
    assert owner.error("CreateServiceId", pb.CreateServiceIdRequest(name="nightly-ci")).reason == "SERVICE_ID_EXISTS"
    owner.CreatePolicy(pb.CreatePolicyRequest(policy=admin_pb2.Policy(
        user_id=robot.id, instance="lite", role=auth_pb2.ROLE_WRITER)))
    assert list(instance_token(suite, made.api_key, "lite").roles) == [auth_pb2.ROLE_WRITER]
    second = owner.CreateApiKey(pb.CreateApiKeyRequest(name="rotated", user=robot.id))
    keys = owner.ListApiKeys(pb.ListApiKeysRequest(user=robot.id)).keys
    assert {k.name for k in keys} == {"first", "rotated"} and {k.user_id for k in keys} == {robot.id}
    owner.DeleteApiKey(pb.DeleteApiKeyRequest(key_id=key_id_of(made.api_key)))
    assert instance_token(suite, second.api_key, "lite").token
    # Another account's administrator cannot touch it; removing it from the account ends it.
    stranger_key, _ = suite.make_user(instance_name="robots-neighbours")
    stranger = Admin(suite, stranger_key)
    assert stranger.error("ListApiKeys", pb.ListApiKeysRequest(user=robot.id)).reason == "SERVICE_ID_NOT_FOUND"
    assert stranger.error("DeleteApiKey", pb.DeleteApiKeyRequest(
        key_id=key_id_of(second.api_key))).reason == "API_KEY_NOT_FOUND"
    owner.RemoveMember(pb.RemoveMemberRequest(user=robot.id))
    err = pytest.raises(grpc.RpcError, instance_token, suite, second.api_key, "lite").value
    assert from_rpc_error(err).reason == "API_KEY_INVALID"
