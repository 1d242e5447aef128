"""AdminService over gRPC: users, invitations, accounts, instances, access groups, policies, API keys.

Every call acts on the account of the caller's token. Managing the account takes its owner or an
administrator; creating users and accounts and disabling users takes an operator; API keys and
invitations are the caller's own. Another account's things are NOT_FOUND, as if they did not exist.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re

from qruntime.admin.v1 import admin_pb2, admin_service_pb2, admin_service_pb2_grpc

from qruntime_kit.auth import Principal, current_principal
from qruntime_kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from qruntime_kit.store import decode_page_token, encode_page_token, page_size

from .servicer import PLANS, ROLES, instance_message, timestamp
from .store import AuthStore

OUTCOMES = {"success": admin_pb2.AUDIT_OUTCOME_SUCCESS, "denied": admin_pb2.AUDIT_OUTCOME_DENIED,
            "failure": admin_pb2.AUDIT_OUTCOME_FAILURE}
_OUTCOME_NAMES = {v: k for k, v in OUTCOMES.items()}
_AUDIT_FILTER_KEYS = {"subject", "instance", "action", "outcome", "request_id", "since"}
ACCOUNT_ROLES = {"owner": admin_pb2.ACCOUNT_ROLE_OWNER, "administrator": admin_pb2.ACCOUNT_ROLE_ADMINISTRATOR,
                 "member": admin_pb2.ACCOUNT_ROLE_MEMBER}
STATES = {"invited": admin_pb2.MEMBERSHIP_STATE_INVITED, "active": admin_pb2.MEMBERSHIP_STATE_ACTIVE}
_PLAN_NAMES = {v: k for k, v in PLANS.items()}
_ROLE_NAMES = {v: k for k, v in ROLES.items()}
_ACCOUNT_ROLE_NAMES = {v: k for k, v in ACCOUNT_ROLES.items()}
MAX_NAME = 200


def user_message(row: dict) -> admin_pb2.User:
    return admin_pb2.User(id=row["id"], email=row["email"], name=row["name"], disabled=row["disabled"],
                          operator=row["operator"], create_time=timestamp(row["create_time"]),
                          service_id_account_id=row["service_id_account_id"] or "")


def membership_message(row: dict, user: dict) -> admin_pb2.Membership:
    return admin_pb2.Membership(account_id=row["account_id"], account_name=row.get("account_name", ""),
                                user=user_message(user), role=ACCOUNT_ROLES[row["role"]],
                                state=STATES[row["state"]], create_time=timestamp(row["create_time"]))


def key_message(row: dict) -> admin_pb2.ApiKey:
    return admin_pb2.ApiKey(id=row["id"], name=row["name"], user_id=row["user_id"] or "", disabled=row["disabled"],
                            create_time=timestamp(row["create_time"]))


def paged(rows: list, request, listing: str) -> tuple[list, str]:
    """One page of rows and the next page's token (offsets: these lists are short and stable)."""
    size = page_size(request.page_size, default=100, maximum=1000)
    position = decode_page_token(request.page_token, offset=int, listing=str)
    if position is not None and position["listing"] != listing:
        raise InvalidArgument("page_token is from another listing", reason="INVALID_PAGE_TOKEN",
                              field_violations=[("page_token", "pass the next_page_token of this listing")])
    start = position["offset"] if position else 0
    page = rows[start:start + size]
    more = start + size < len(rows)
    return page, encode_page_token({"offset": start + size, "listing": listing}) if more else ""


def _name(value: str, field: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_NAME:
        raise InvalidArgument(f"{field} must be 1 to {MAX_NAME} characters", reason="INVALID_NAME",
                              field_violations=[(field, f"1 to {MAX_NAME} characters")])
    return value


def audit_message(row: dict) -> admin_pb2.AuditEvent:
    return admin_pb2.AuditEvent(
        id=row["id"], time=timestamp(row["time"]), account_id=row["account_id"], subject=row["subject"],
        instance=row["instance"], action=row["action"], method=row["method"], outcome=OUTCOMES[row["outcome"]],
        code=row["code"], reason=row["reason"], request_id=row["request_id"], target=row["target"])


def audit_row(event: admin_pb2.AuditEvent) -> dict:
    return {"time": event.time.ToNanoseconds() / 1e9, "account_id": event.account_id, "subject": event.subject,
            "instance": event.instance, "action": event.action, "method": event.method,
            "outcome": _OUTCOME_NAMES.get(event.outcome, "failure"), "code": event.code, "reason": event.reason,
            "request_id": event.request_id, "target": event.target}


def parse_audit_filter(text: str) -> dict:
    """"subject=u action=quantum-computing.job.* since=2026-12-01T00:00:00Z" -> column -> value."""
    where = {}
    for term in text.split():
        key, sep, value = term.partition("=")
        if not sep or key not in _AUDIT_FILTER_KEYS or not value or key in where:
            raise InvalidArgument(
                f"filter term {term[:100]!r} is not one of {sorted(_AUDIT_FILTER_KEYS)} as key=value, each once",
                reason="INVALID_FILTER", field_violations=[("filter", "key=value terms: " + ", ".join(
                    sorted(_AUDIT_FILTER_KEYS)))])
        if key == "since":
            try:
                value = dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                raise InvalidArgument(f"since={value[:40]!r} is not an RFC 3339 time", reason="INVALID_FILTER",
                                      field_violations=[("filter", "since=2026-12-01T00:00:00Z")]) from None
        elif key == "outcome" and value not in OUTCOMES:
            raise InvalidArgument(f"outcome must be one of {sorted(OUTCOMES)}", reason="INVALID_FILTER",
                                  field_violations=[("filter", "outcome=success|denied|failure")])
        elif key == "action" and not re.fullmatch(r"[a-z0-9.-]+\*?", value):
            raise InvalidArgument("action must be a full action name, or a prefix ending in *",
                                  reason="INVALID_FILTER",
                                  field_violations=[("filter", "action=quantum-computing.job.*")])
        where[key] = value
    return where


def _admin(principal: Principal) -> str:
    """The caller's account, if they administer it."""
    if not principal.is_account_admin:
        raise PermissionDenied("only the account's owner and administrators may do this",
                               reason="ACCOUNT_ADMIN_REQUIRED", metadata={"account": principal.account_id})
    return principal.account_id


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, store: AuthStore) -> None:
        self._store = store

    async def _run(self, function, *args):
        return await asyncio.to_thread(function, *args)

    # Lookups -----------------------------------------------------------------------------------
    def _user(self, ref: str, field: str = "user") -> dict:
        row = self._store.user(ref) if ref else None
        if row is None:
            raise NotFound(f"user {ref!r} not found", reason="USER_NOT_FOUND", metadata={field: ref})
        return row

    def _member(self, account_id: str, ref: str, field: str = "user") -> dict:
        """A user of the account (active or invited); others' users are NOT_FOUND."""
        row = self._store.user(ref) if ref else None
        if row is None or self._store.membership(account_id, row["id"]) is None:
            raise NotFound(f"user {ref!r} not found in this account", reason="USER_NOT_FOUND", metadata={field: ref})
        return row

    def _instance(self, account_id: str, ref: str, field: str = "instance") -> dict:
        row = self._store.find_instance([account_id], ref) if ref else None
        if row is None:
            raise NotFound(f"instance {ref!r} not found in this account", reason="INSTANCE_NOT_FOUND",
                           metadata={field: ref})
        return row

    def _group(self, account_id: str, ref: str) -> dict:
        row = self._store.group(account_id, ref) if ref else None
        if row is None:
            raise NotFound(f"access group {ref!r} not found", reason="ACCESS_GROUP_NOT_FOUND",
                           metadata={"access_group": ref})
        return row

    def _group_message(self, row: dict) -> admin_pb2.AccessGroup:
        return admin_pb2.AccessGroup(id=row["id"], name=row["name"], member_ids=self._store.group_member_ids(row["id"]),
                                     create_time=timestamp(row["create_time"]))

    def _key_holder(self, principal: Principal, user_ref: str) -> str:
        """Whose keys a call is about: the caller's own, or (for account administrators) a service
        ID of their account."""
        if not user_ref:
            return principal.subject
        account_id = _admin(principal)
        row = self._store.user(user_ref)
        if row is None or row["service_id_account_id"] != account_id:
            raise NotFound(f"service ID {user_ref!r} not found in this account", reason="SERVICE_ID_NOT_FOUND",
                           metadata={"user": user_ref})
        return row["id"]

    def _own_key(self, principal: Principal, key_id: str) -> dict:
        """A key of the caller's, or of a service ID of the account the caller administers."""
        row = self._store.api_key(key_id) if key_id else None
        holder = self._store.user(row["user_id"]) if row and row["user_id"] else None
        managed = (holder is not None and principal.is_account_admin
                   and holder["service_id_account_id"] == principal.account_id)
        if row is None or not (row["user_id"] == principal.subject or managed):
            raise NotFound(f"API key {key_id!r} not found among yours", reason="API_KEY_NOT_FOUND",
                           metadata={"key_id": key_id})
        return row

    # Users and accounts -------------------------------------------------------------------------
    async def CreateUser(self, request, context):
        current_principal().require_operator()
        email = _name(request.email, "email")
        if "@" not in email:
            raise InvalidArgument("email must be an e-mail address", reason="INVALID_EMAIL",
                                  field_violations=[("email", "an e-mail address")])

        def create():
            if self._store.user(email) is not None:
                raise AlreadyExists(f"a user with e-mail {email!r} exists", reason="USER_EXISTS")
            user_id = self._store.create_user(email, request.name.strip(), operator=request.operator)
            api_key, _ = self._store.create_user_key(user_id, name="first")
            return self._store.user(user_id), api_key

        user, api_key = await self._run(create)
        return admin_service_pb2.CreateUserResponse(user=user_message(user), api_key=api_key)

    async def ListUsers(self, request, context):
        account_id = _admin(current_principal())
        rows = await self._run(self._store.account_members, account_id)
        page, token = paged(rows, request, "users")
        return admin_service_pb2.ListUsersResponse(next_page_token=token, memberships=[
            admin_pb2.Membership(account_id=account_id, user=user_message(r), role=ACCOUNT_ROLES[r["role"]],
                                 state=STATES[r["state"]]) for r in page])

    async def _set_disabled(self, ref: str, disabled: bool) -> admin_pb2.User:
        current_principal().require_operator()

        def change():
            user = self._user(ref)
            self._store.set_user_disabled(user["id"], disabled)
            return self._store.user(user["id"])

        return user_message(await self._run(change))

    async def DisableUser(self, request, context):
        return admin_service_pb2.DisableUserResponse(user=await self._set_disabled(request.user, True))

    async def EnableUser(self, request, context):
        return admin_service_pb2.EnableUserResponse(user=await self._set_disabled(request.user, False))

    async def CreateAccount(self, request, context):
        current_principal().require_operator()
        name = _name(request.name, "name")

        def create():
            return self._store.create_account(name, self._user(request.owner, "owner")["id"])

        return admin_service_pb2.CreateAccountResponse(account_id=await self._run(create))

    # Invitations ---------------------------------------------------------------------------------
    async def InviteUser(self, request, context):
        account_id = _admin(current_principal())
        role = _ACCOUNT_ROLE_NAMES.get(request.role or admin_pb2.ACCOUNT_ROLE_MEMBER)
        if role is None or role == "owner":
            raise InvalidArgument("role must be administrator or member", reason="INVALID_ACCOUNT_ROLE",
                                  field_violations=[("role", "ACCOUNT_ROLE_ADMINISTRATOR or ACCOUNT_ROLE_MEMBER")])

        def invite():
            user = self._user(request.user)
            if self._store.membership(account_id, user["id"]) is not None:
                raise AlreadyExists(f"{user['email']} is already invited to or a member of this account",
                                    reason="ALREADY_MEMBER")
            self._store.invite(account_id, user["id"], role)
            return self._store.membership(account_id, user["id"]), user

        row, user = await self._run(invite)
        return admin_service_pb2.InviteUserResponse(membership=membership_message(row, user))

    async def ListInvitations(self, request, context):
        principal = current_principal()

        def invitations():
            user = self._store.user(principal.subject)
            return [(m, user) for m in self._store.memberships_of(principal.subject) if m["state"] == "invited"]

        page, token = paged(await self._run(invitations), request, "invitations")
        return admin_service_pb2.ListInvitationsResponse(
            invitations=[membership_message(m, u) for m, u in page], next_page_token=token)

    async def _answer(self, account_id: str, accept: bool):
        principal = current_principal()

        def answer():
            if not self._store.answer_invitation(account_id, principal.subject, accept):
                raise NotFound(f"no invitation from account {account_id!r}", reason="INVITATION_NOT_FOUND",
                               metadata={"account_id": account_id})
            membership = self._store.membership(account_id, principal.subject)
            return membership, self._store.user(principal.subject)

        return await self._run(answer)

    async def AcceptInvitation(self, request, context):
        membership, user = await self._answer(request.account_id, True)
        return admin_service_pb2.AcceptInvitationResponse(membership=membership_message(membership, user))

    async def DeclineInvitation(self, request, context):
        await self._answer(request.account_id, False)
        return admin_service_pb2.DeclineInvitationResponse()

    async def RemoveMember(self, request, context):
        account_id = _admin(current_principal())

        def remove():
            user = self._member(account_id, request.user)
            if self._store.membership(account_id, user["id"])["role"] == "owner":
                raise FailedPrecondition("the account's owner cannot be removed", reason="OWNER_CANNOT_BE_REMOVED")
            self._store.remove_member(account_id, user["id"])

        await self._run(remove)
        return admin_service_pb2.RemoveMemberResponse()

    # Instances -------------------------------------------------------------------------------
    async def CreateInstance(self, request, context):
        account_id = _admin(current_principal())
        name = _name(request.name, "name")
        plan = _PLAN_NAMES.get(request.plan)
        if plan is None:
            raise InvalidArgument("plan must be PLAN_LITE or PLAN_STANDARD", reason="INVALID_PLAN",
                                  field_violations=[("plan", "PLAN_LITE (simulators) or PLAN_STANDARD (physical)")])
        if name.startswith("crn:"):
            raise InvalidArgument("an instance name must not look like a CRN", reason="INVALID_NAME",
                                  field_violations=[("name", "must not start with 'crn:'")])

        def create():
            if self._store.find_instance([account_id], name) is not None:
                raise AlreadyExists(f"the account has an instance named {name!r}", reason="INSTANCE_EXISTS")
            return self._store.create_instance(account_id, name, plan)

        return admin_service_pb2.CreateInstanceResponse(instance=instance_message(await self._run(create)))

    async def ListInstances(self, request, context):
        principal = current_principal()
        rows = await self._run(self._store.account_instances, principal.account_id)
        page, token = paged(rows, request, "instances")
        return admin_service_pb2.ListInstancesResponse(instances=[instance_message(r) for r in page],
                                                       next_page_token=token)

    async def DeleteInstance(self, request, context):
        account_id = _admin(current_principal())

        def delete():
            self._store.delete_instance(self._instance(account_id, request.instance)["id"])

        await self._run(delete)
        return admin_service_pb2.DeleteInstanceResponse()

    # Access groups -----------------------------------------------------------------------------
    async def CreateAccessGroup(self, request, context):
        account_id = _admin(current_principal())
        name = _name(request.name, "name")

        def create():
            if self._store.group(account_id, name) is not None:
                raise AlreadyExists(f"the account has an access group named {name!r}", reason="ACCESS_GROUP_EXISTS")
            return self._group_message(self._store.create_group(account_id, name))

        return admin_service_pb2.CreateAccessGroupResponse(access_group=await self._run(create))

    async def ListAccessGroups(self, request, context):
        account_id = _admin(current_principal())

        def groups():
            return [self._group_message(g) for g in self._store.account_groups(account_id)]

        page, token = paged(await self._run(groups), request, "groups")
        return admin_service_pb2.ListAccessGroupsResponse(access_groups=page, next_page_token=token)

    async def DeleteAccessGroup(self, request, context):
        account_id = _admin(current_principal())
        await self._run(lambda: self._store.delete_group(self._group(account_id, request.access_group)["id"]))
        return admin_service_pb2.DeleteAccessGroupResponse()

    async def _change_group(self, request, add: bool):
        account_id = _admin(current_principal())

        def change():
            group = self._group(account_id, request.access_group)
            user = self._member(account_id, request.user)
            (self._store.add_group_member if add else self._store.remove_group_member)(group["id"], user["id"])
            return self._group_message(group)

        return await self._run(change)

    async def AddAccessGroupMember(self, request, context):
        return admin_service_pb2.AddAccessGroupMemberResponse(access_group=await self._change_group(request, True))

    async def RemoveAccessGroupMember(self, request, context):
        return admin_service_pb2.RemoveAccessGroupMemberResponse(
            access_group=await self._change_group(request, False))

    # Policies -------------------------------------------------------------------------------
    def _policy_message(self, row: dict, crns: dict[str, str]) -> admin_pb2.Policy:
        policy = admin_pb2.Policy(id=row["id"], instance=crns.get(row["instance_id"], ""), role=ROLES[row["role"]],
                                  create_time=timestamp(row["create_time"]))
        if row["subject_kind"] == "user":
            policy.user_id = row["subject_id"]
        else:
            policy.access_group_id = row["subject_id"]
        return policy

    def _crns(self, account_id: str) -> dict[str, str]:
        return {r["id"]: r["crn"] for r in self._store.account_instances(account_id)}

    async def CreatePolicy(self, request, context):
        account_id = _admin(current_principal())
        wanted = request.policy
        role = _ROLE_NAMES.get(wanted.role)
        if role is None:
            raise InvalidArgument("policy.role must be ROLE_READER, ROLE_WRITER or ROLE_MANAGER",
                                  reason="INVALID_ROLE", field_violations=[("policy.role", "a role")])
        subject = wanted.WhichOneof("subject")
        if subject is None:
            raise InvalidArgument("a policy names a user or an access group", reason="POLICY_SUBJECT_MISSING",
                                  field_violations=[("policy.user_id", "a user id, or set policy.access_group_id")])

        def create():
            if subject == "user_id":
                kind, subject_id = "user", self._member(account_id, wanted.user_id, "policy.user_id")["id"]
            else:
                kind, subject_id = "group", self._group(account_id, wanted.access_group_id)["id"]
            instance_id = None  # every instance of the account
            if wanted.instance:
                instance_id = self._instance(account_id, wanted.instance, "policy.instance")["id"]
            row = self._store.create_policy(account_id, kind, subject_id, instance_id, role)
            return self._policy_message(row, self._crns(account_id))

        return admin_service_pb2.CreatePolicyResponse(policy=await self._run(create))

    async def ListPolicies(self, request, context):
        account_id = _admin(current_principal())

        def policies():
            crns = self._crns(account_id)
            return [self._policy_message(p, crns) for p in self._store.account_policies(account_id)]

        page, token = paged(await self._run(policies), request, "policies")
        return admin_service_pb2.ListPoliciesResponse(policies=page, next_page_token=token)

    async def DeletePolicy(self, request, context):
        account_id = _admin(current_principal())

        def delete():
            row = self._store.policy(account_id, request.policy_id) if request.policy_id else None
            if row is None:
                raise NotFound(f"policy {request.policy_id!r} not found", reason="POLICY_NOT_FOUND",
                               metadata={"policy_id": request.policy_id})
            self._store.delete_policy(row)

        await self._run(delete)
        return admin_service_pb2.DeletePolicyResponse()

    # Audit trail ------------------------------------------------------------------------------
    async def ListAuditEvents(self, request, context):
        account_id = _admin(current_principal())
        where = parse_audit_filter(request.filter)
        size = page_size(request.page_size, default=100, maximum=1000)
        position = decode_page_token(request.page_token, before=int, filter=str)
        if position is not None and position["filter"] != request.filter:
            raise InvalidArgument("page_token was made for another filter", reason="INVALID_PAGE_TOKEN",
                                  field_violations=[("page_token", "use it with the filter that made it")])
        rows = await self._run(lambda: self._store.audit_events(
            account_id, where=where, before_id=position["before"] if position else None, limit=size + 1))
        response = admin_service_pb2.ListAuditEventsResponse(events=[audit_message(r) for r in rows[:size]])
        if len(rows) > size:
            response.next_page_token = encode_page_token({"before": rows[size - 1]["id"], "filter": request.filter})
        return response

    async def RecordAuditEvents(self, request, context):
        current_principal().require_suite_service()
        await self._run(self._store.append_audit_events, [audit_row(e) for e in request.events])
        return admin_service_pb2.RecordAuditEventsResponse()

    # API keys ----------------------------------------------------------------------------------
    async def CreateServiceId(self, request, context):
        account_id = _admin(current_principal())
        name = _name(request.name, "name")
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name):
            raise InvalidArgument("a service ID's name is 1 to 64 letters, digits, '.', '_' or '-'",
                                  reason="INVALID_NAME", field_violations=[("name", "[A-Za-z0-9._-]{1,64}")])

        def create():
            if self._store.user(f"{name}@service-id.{account_id}") is not None:
                raise AlreadyExists(f"the account has a service ID named {name!r}", reason="SERVICE_ID_EXISTS")
            user_id = self._store.create_service_id(account_id, name)
            api_key, _ = self._store.create_user_key(user_id, name="first")
            return self._store.user(user_id), api_key

        user, api_key = await self._run(create)
        return admin_service_pb2.CreateServiceIdResponse(user=user_message(user), api_key=api_key)

    async def CreateApiKey(self, request, context):
        principal = current_principal()
        name = request.name.strip()[:MAX_NAME]

        def create():
            return self._store.create_user_key(self._key_holder(principal, request.user), name)

        api_key, row = await self._run(create)
        return admin_service_pb2.CreateApiKeyResponse(key=key_message(row), api_key=api_key)

    async def ListApiKeys(self, request, context):
        principal = current_principal()
        rows = await self._run(lambda: self._store.user_keys(self._key_holder(principal, request.user)))
        page, token = paged(rows, request, "keys")
        return admin_service_pb2.ListApiKeysResponse(keys=[key_message(r) for r in page], next_page_token=token)

    async def _set_key_disabled(self, key_id: str, disabled: bool) -> admin_pb2.ApiKey:
        principal = current_principal()

        def change():
            self._own_key(principal, key_id)
            self._store.set_key_disabled(key_id, disabled)
            return self._store.api_key(key_id)

        return key_message(await self._run(change))

    async def DisableApiKey(self, request, context):
        return admin_service_pb2.DisableApiKeyResponse(key=await self._set_key_disabled(request.key_id, True))

    async def EnableApiKey(self, request, context):
        return admin_service_pb2.EnableApiKeyResponse(key=await self._set_key_disabled(request.key_id, False))

    async def DeleteApiKey(self, request, context):
        principal = current_principal()

        def delete():
            self._own_key(principal, request.key_id)
            self._store.delete_key(request.key_id)

        await self._run(delete)
        return admin_service_pb2.DeleteApiKeyResponse()

