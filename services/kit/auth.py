"""Who may do what: the role table, the services' own calls, and the verified caller of an RPC.

Everything here is data every service reads the same way; the auth service puts a user's actions
into their token, the auth interceptor checks a service's calls, servicers call Principal.require.
"""

from __future__ import annotations

import contextvars
import dataclasses

from .errors import FailedPrecondition, PermissionDenied, Unauthenticated

USER, SERVICE = "user", "service"
ACTION_NAMESPACE = "quantum-computing."

# The original service's IAM table, by action: which instance roles allow it. Roles are additive
# (a user with Writer and Reader may do both columns); none includes another.
ACTION_ROLES: dict[str, frozenset[str]] = {
    "quantum-computing.program.create": frozenset({"manager", "writer"}),
    "quantum-computing.program.update": frozenset({"manager", "writer"}),
    "quantum-computing.program.delete": frozenset({"manager", "writer"}),
    "quantum-computing.program.read": frozenset({"manager", "reader"}),
    "quantum-computing.job.create": frozenset({"manager", "writer"}),
    "quantum-computing.job.delete": frozenset({"manager", "writer"}),
    "quantum-computing.job.read": frozenset({"manager", "reader"}),
}
ROLES = ("manager", "writer", "reader")


def actions_of(roles: set[str] | frozenset[str]) -> frozenset[str]:
    """Every action the roles together allow."""
    return frozenset(action for action, allowed in ACTION_ROLES.items() if allowed & set(roles))


# Account-level roles, for managing the account itself (users, instances, groups, policies, keys,
# the audit trail). The operator is the deployment's own: it may also manage backends.
ACCOUNT_ROLES = ("owner", "administrator", "member")
ACCOUNT_ADMINS = frozenset({"owner", "administrator"})

# What every service of the suite calls on auth to do its part of access control: learn of revoked
# tokens, and append the calls it served or refused to the audit trail. Only service tokens may.
SUITE_DUTIES = frozenset({
    "/qruntime.auth.v1.AuthService/ListRevocations",
    "/qruntime.admin.v1.AdminService/RecordAuditEvents",
})

# What each of the suite's own services may call, exactly: a service token gets no other method.
# jobs runs a job's circuits, reads the program (at the version) it is about to run, and reads
# backends' descriptions and checks circuits for the job it runs; it cannot list anybody's jobs.
SERVICE_CALLS: dict[str, frozenset[str]] = {
    "jobs": SUITE_DUTIES | {
        "/qruntime.devices.v1.DevicesService/RunCircuits",
        "/qruntime.devices.v1.DevicesService/CheckCircuits",
        "/qruntime.devices.v1.DevicesService/GetBackend",
        "/qruntime.devices.v1.DevicesService/ListBackends",
        "/qruntime.programs.v1.ProgramsService/GetProgram",
    },
    "programs": SUITE_DUTIES,
    "devices": SUITE_DUTIES,
}

# The services each of the suite's services may call on a user's behalf, with a delegated token
# (AuthService.CreateDelegatedToken) that names only them.
SERVICE_DELEGATIONS: dict[str, frozenset[str]] = {"jobs": frozenset({"programs", "devices"})}

# Methods that only the suite's services call on one another and that the front door (the gateway,
# or `qruntime up`'s own port) never serves to the outside.
INTERNAL_METHODS = frozenset({
    "/qruntime.auth.v1.AuthService/CreateServiceToken",
    "/qruntime.auth.v1.AuthService/ListRevocations",
    "/qruntime.auth.v1.AuthService/CreateDelegatedToken",
    "/qruntime.admin.v1.AdminService/RecordAuditEvents",
})


# The caller's address, as the front door (the gateway) saw it; believed only from trusted proxies.
FORWARDED_FOR_KEY = "x-forwarded-for"


def peer_host(peer: str) -> str:
    """"ipv4:127.0.0.1:5000" -> "ipv4:127.0.0.1" (a client's ports change; its address does not)."""
    return peer.rpartition(":")[0] or peer


def audience_of(method: str) -> str:
    """The audience a token must name to call method: its service's short name ("jobs" for
    "/qruntime.jobs.v1.JobsService/GetJob"); "" for methods outside qruntime's packages."""
    package = method.lstrip("/").partition("/")[0].split(".")
    return package[1] if len(package) > 2 and package[0] == "qruntime" else ""


def full_action(action: str) -> str:
    """"job.create" or "quantum-computing.job.create" -> the full name."""
    return action if action.startswith(ACTION_NAMESPACE) else ACTION_NAMESPACE + action


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling, on which instance, with which rights, and the token that proved it."""

    subject: str
    kind: str
    account_id: str = ""
    instance_crn: str = ""
    plan: str = ""
    actions: frozenset[str] = frozenset()
    account_role: str = ""  # owner, administrator or member of account_id; users only
    operator: bool = False  # may manage the deployment's backends
    token: str = dataclasses.field(default="", repr=False)

    @property
    def is_service(self) -> bool:
        return self.kind == SERVICE

    @property
    def is_account_admin(self) -> bool:
        return self.kind == USER and self.account_role in ACCOUNT_ADMINS

    def require(self, action: str) -> None:
        """Raise PermissionDenied unless the principal may take the action. A service's calls are
        limited per method by the auth interceptor (SERVICE_CALLS), so within them it may act."""
        self.require_any(action)

    def require_any(self, *actions: str) -> None:
        """Raise PermissionDenied unless the principal may take one of the actions (the first named
        in the error)."""
        names = [full_action(a) for a in actions]
        if self.is_service or any(name in self.actions for name in names):
            return
        raise PermissionDenied(
            f"your roles on this instance do not allow {names[0]}",
            reason="ACTION_NOT_ALLOWED",
            metadata={"action": names[0], "instance": self.instance_crn},
        )

    def require_operator(self) -> None:
        """Raise PermissionDenied unless the principal is one of the deployment's operators (for
        backend maintenance and the like)."""
        if not (self.kind == USER and self.operator):
            raise PermissionDenied("only the deployment's operators may do this", reason="OPERATOR_REQUIRED")

    def require_suite_service(self) -> None:
        """Raise PermissionDenied unless the principal is one of the suite's own services (for the
        methods only they call on one another)."""
        if not self.is_service:
            raise PermissionDenied("only the suite's own services may call this", reason="SERVICE_ONLY")

    def require_instance(self, resources: str) -> str:
        """The instance the token is scoped to; FailedPrecondition for a token that names none
        (a service's), since `resources` ("jobs", "programs") belong to an instance."""
        if not self.instance_crn:
            raise FailedPrecondition(
                f"{resources} belong to an instance, and this token names none; get a token for an instance",
                reason="INSTANCE_REQUIRED",
            )
        return self.instance_crn


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def current_principal() -> Principal:
    """The caller of the RPC being served; Unauthenticated on a public method."""
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("this call needs a bearer token", reason="TOKEN_MISSING")
    return principal


def set_principal(principal: Principal | None) -> contextvars.Token:
    return _current.set(principal)


def reset_principal(token: contextvars.Token) -> None:
    _current.reset(token)
