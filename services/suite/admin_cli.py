"""`qruntime admin ...`: manage users, invitations, accounts, instances, access groups, policies,
API keys and read the audit trail, through the AdminService of a running suite.

The caller's API key comes from QRUNTIME_API_KEY, --api-key-file, or the saved account
(~/.qiskit/qiskit-ibm.json, --account NAME); the url from --url, QRUNTIME_URL or that account.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict
from qruntime.admin.v1 import admin_pb2, admin_service_pb2, admin_service_pb2_grpc
from qruntime.auth.v1 import auth_pb2, auth_service_pb2, auth_service_pb2_grpc

from qruntime_kit import tls
from qruntime_kit.errors import from_rpc_error

PLANS = {"lite": auth_pb2.PLAN_LITE, "standard": auth_pb2.PLAN_STANDARD}
ROLES = {"reader": auth_pb2.ROLE_READER, "writer": auth_pb2.ROLE_WRITER, "manager": auth_pb2.ROLE_MANAGER}
ACCOUNT_ROLES = {"administrator": admin_pb2.ACCOUNT_ROLE_ADMINISTRATOR, "member": admin_pb2.ACCOUNT_ROLE_MEMBER}
pb = admin_service_pb2


class AdminError(Exception):
    """A problem to report in one line, exit status 1."""


_USER = ("user", {"help": "user id or e-mail address"})
_KEY = ("key_id", {"help": "the key's id (the 16 hex digits after qrk_)"})
_GROUP = ("group", {"help": "access group id or name"})
_ALL = {"page_size": 1000}
_SERVICE_ID = ("--service-id", {"default": "", "help": "a service ID of your account (administrators)"})


def _choice(table: dict, what: str) -> dict:
    return {"choices": sorted(table), "help": f"{what}: " + ", ".join(sorted(table))}


def _policy(a: argparse.Namespace) -> admin_pb2.Policy:
    policy = admin_pb2.Policy(instance=a.instance, role=ROLES[a.role])
    if a.user:
        policy.user_id = a.user
    else:
        policy.access_group_id = a.group
    return policy


_POLICY_ARGUMENTS = (
    ("--user", {"help": "user id or e-mail address (or give --group)"}),
    ("--group", {"help": "access group id or name (or give --user)"}),
    ("--instance", {"default": "", "help": "CRN or name; omitted: every instance of the account"}),
    ("--role", {"required": True, **_choice(ROLES, "role")}),
)

# (noun, verb): (help, the AdminService RPC, the request from the parsed arguments, the arguments)
COMMANDS = {
    ("user", "create"): ("create a user with a first API key (operators)", "CreateUser",
                         lambda a: pb.CreateUserRequest(email=a.email, name=a.name, operator=a.operator),
                         (("email", {}), ("--name", {"default": ""}),
                          ("--operator", {"action": "store_true", "help": "make the user an operator too"}))),
    ("user", "list"): ("list the account's members and invited users", "ListUsers",
                       lambda a: pb.ListUsersRequest(**_ALL), ()),
    ("user", "disable"): ("disable a user: their keys and tokens stop working (operators)", "DisableUser",
                          lambda a: pb.DisableUserRequest(user=a.user), (_USER,)),
    ("user", "enable"): ("enable a disabled user (operators)", "EnableUser",
                         lambda a: pb.EnableUserRequest(user=a.user), (_USER,)),
    ("user", "invite"): ("invite an existing user into the account", "InviteUser",
                         lambda a: pb.InviteUserRequest(user=a.user, role=ACCOUNT_ROLES[a.role]),
                         (_USER, ("--role", {"default": "member", **_choice(ACCOUNT_ROLES, "account role")}))),
    ("user", "remove"): ("remove a user from the account, with their policies", "RemoveMember",
                         lambda a: pb.RemoveMemberRequest(user=a.user), (_USER,)),
    ("account", "create"): ("create an account owned by an existing user (operators)", "CreateAccount",
                            lambda a: pb.CreateAccountRequest(name=a.name, owner=a.owner),
                            (("name", {}), ("--owner", {"required": True, "help": "user id or e-mail address"}))),
    ("invitation", "list"): ("list your pending invitations", "ListInvitations",
                             lambda a: pb.ListInvitationsRequest(**_ALL), ()),
    ("invitation", "accept"): ("accept an invitation into an account", "AcceptInvitation",
                               lambda a: pb.AcceptInvitationRequest(account_id=a.account_id), (("account_id", {}),)),
    ("invitation", "decline"): ("decline an invitation into an account", "DeclineInvitation",
                                lambda a: pb.DeclineInvitationRequest(account_id=a.account_id), (("account_id", {}),)),
    ("instance", "create"): ("create a service instance", "CreateInstance",
                             lambda a: pb.CreateInstanceRequest(name=a.name, plan=PLANS[a.plan]),
                             (("name", {}), ("--plan", {"required": True, **_choice(PLANS, "plan")}))),
    ("instance", "list"): ("list the account's instances", "ListInstances",
                           lambda a: pb.ListInstancesRequest(**_ALL), ()),
    ("instance", "delete"): ("delete an instance and its policies", "DeleteInstance",
                             lambda a: pb.DeleteInstanceRequest(instance=a.instance),
                             (("instance", {"help": "CRN or name"}),)),
    ("group", "create"): ("create an access group", "CreateAccessGroup",
                          lambda a: pb.CreateAccessGroupRequest(name=a.name), (("name", {}),)),
    ("group", "list"): ("list the account's access groups", "ListAccessGroups",
                        lambda a: pb.ListAccessGroupsRequest(**_ALL), ()),
    ("group", "delete"): ("delete an access group and its policies", "DeleteAccessGroup",
                          lambda a: pb.DeleteAccessGroupRequest(access_group=a.group), (_GROUP,)),
    ("group", "add-member"): ("add a user to an access group", "AddAccessGroupMember",
                              lambda a: pb.AddAccessGroupMemberRequest(access_group=a.group, user=a.user),
                              (_GROUP, _USER)),
    ("group", "remove-member"): ("remove a user from an access group", "RemoveAccessGroupMember",
                                 lambda a: pb.RemoveAccessGroupMemberRequest(access_group=a.group, user=a.user),
                                 (_GROUP, _USER)),
    ("policy", "create"): ("grant a role on an instance (or all) to a user or a group", "CreatePolicy",
                           lambda a: pb.CreatePolicyRequest(policy=_policy(a)), _POLICY_ARGUMENTS),
    ("policy", "list"): ("list the account's policies", "ListPolicies", lambda a: pb.ListPoliciesRequest(**_ALL), ()),
    ("policy", "delete"): ("delete a policy", "DeletePolicy",
                           lambda a: pb.DeletePolicyRequest(policy_id=a.policy_id), (("policy_id", {}),)),
    ("service-id", "create"): ("create a service ID (automation) with a first API key, shown once",
                               "CreateServiceId", lambda a: pb.CreateServiceIdRequest(name=a.name), (("name", {}),)),
    ("key", "create"): ("create an API key for yourself or a service ID (its secret is shown once)", "CreateApiKey",
                        lambda a: pb.CreateApiKeyRequest(name=a.name, user=a.service_id),
                        (("--name", {"default": ""}), _SERVICE_ID)),
    ("key", "list"): ("list your (or a service ID's) API keys, without secrets", "ListApiKeys",
                      lambda a: pb.ListApiKeysRequest(user=a.service_id, **_ALL), (_SERVICE_ID,)),
    ("key", "disable"): ("disable one of your API keys", "DisableApiKey",
                         lambda a: pb.DisableApiKeyRequest(key_id=a.key_id), (_KEY,)),
    ("key", "enable"): ("enable one of your API keys", "EnableApiKey",
                        lambda a: pb.EnableApiKeyRequest(key_id=a.key_id), (_KEY,)),
    ("key", "delete"): ("delete one of your API keys", "DeleteApiKey",
                        lambda a: pb.DeleteApiKeyRequest(key_id=a.key_id), (_KEY,)),
    ("audit", "list"): ("list the account's audit trail, newest first", "ListAuditEvents",
                        lambda a: pb.ListAuditEventsRequest(filter=a.filter, page_size=a.limit),
                        (("--filter", {"default": "", "help": "e.g. 'action=quantum-computing.job.* outcome=denied'"}),
                         ("--limit", {"type": int, "default": 100}))),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qruntime admin", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None,
                        help="host:port of the suite (env QRUNTIME_URL; default: the saved account's)")
    parser.add_argument("--api-key-file", default=None,
                        help="file holding your API key (default: env QRUNTIME_API_KEY, then the saved account's)")
    parser.add_argument("--account", default=None, help="name of the saved account to use")
    parser.add_argument("--ca-file", default=os.environ.get("QRUNTIME_CA_FILE", ""),
                        help="PEM CA bundle of a suite that serves TLS (env QRUNTIME_CA_FILE)")
    parser.add_argument("--account-id", dest="acting_account", default="-",
                        help="the account to act in, if you belong to several")
    parser.add_argument("--json", action="store_true", help="print the response as JSON, for scripts")
    nouns = parser.add_subparsers(dest="noun", required=True)
    noun_parsers: dict[str, argparse._SubParsersAction] = {}
    for (noun, verb), (help_, _rpc, _build, arguments) in COMMANDS.items():
        if noun not in noun_parsers:
            noun_parsers[noun] = nouns.add_parser(noun, help=f"{noun} commands").add_subparsers(
                dest="verb", required=True)
        verb_parser = noun_parsers[noun].add_parser(verb, help=help_, description=help_)
        for name, options in arguments:
            verb_parser.add_argument(name, **options)
    return parser


def credentials(args: argparse.Namespace) -> tuple[str, str]:
    """(url, api key) from the flags, the environment or the saved account."""
    api_key = ""
    if args.api_key_file:
        try:
            api_key = Path(args.api_key_file).read_text().strip()
        except OSError as err:
            raise AdminError(f"cannot read --api-key-file: {err.strerror}") from None
    api_key = api_key or os.environ.get("QRUNTIME_API_KEY", "").strip()
    url = args.url or os.environ.get("QRUNTIME_URL", "")
    if not api_key or not url:
        from qruntime._accounts import load_account
        from qruntime.exceptions import AccountsError

        try:
            saved = load_account(args.account)
        except AccountsError as err:
            raise AdminError(f"no API key: set QRUNTIME_API_KEY, pass --api-key-file, or save an account ({err})") \
                from None
        api_key, url = api_key or saved.token, url or saved.url
    return url, api_key


def run(args: argparse.Namespace) -> dict:
    url, api_key = credentials(args)
    _help, rpc, build, _arguments = COMMANDS[(args.noun, args.verb)]
    if (args.noun, args.verb) == ("policy", "create") and bool(args.user) == bool(args.group):
        raise AdminError("give exactly one of --user and --group")
    request = build(args)
    with tls.channel(url, tls.channel_credentials(args.ca_file)) as channel:
        try:
            token = auth_service_pb2_grpc.AuthServiceStub(channel).CreateToken(
                auth_service_pb2.CreateTokenRequest(api_key=api_key, account=args.acting_account), timeout=30).token
            stub = admin_service_pb2_grpc.AdminServiceStub(channel)
            response = getattr(stub, rpc)(request, metadata=(("authorization", f"Bearer {token}"),), timeout=30)
        except grpc.RpcError as err:
            error = from_rpc_error(err)
            fields = "".join(f"; {f}: {d}" for f, d in error.field_violations)
            raise AdminError(f"{error.message} ({error.reason}{fields})") from None
    return MessageToDict(response, preserving_proto_field_name=True)


def show(result: dict) -> str:
    """A person's view of a response: one line per listed item, key: value otherwise."""
    if not result:
        return "done"
    lines = []
    for field, value in result.items():
        if field == "next_page_token":
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                flat = {k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in item.items()}
                lines.append("  ".join(f"{k}={v}" for k, v in flat.items()))
            else:
                lines.append(f"{field}: {item}")
    return "\n".join(lines) or "(none)"


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except AdminError as err:
        print(f"qruntime admin: error: {err}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else show(result))
