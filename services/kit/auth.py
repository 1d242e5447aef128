"""The verified caller of the current RPC, set by the auth interceptor."""

from __future__ import annotations

import contextvars
import dataclasses

from .errors import FailedPrecondition, PermissionDenied, Unauthenticated

USER, SERVICE = "user", "service"

# What each IAM role may do on an instance; each role includes the ones before it.
ROLE_ACTIONS = {
    "reader": ("program.read", "job.read"),
    "writer": ("program.read", "job.read", "program.create", "program.update", "job.create"),
    "manager": (
        "program.read", "job.read", "program.create", "program.update", "job.create",
        "program.delete", "job.delete",
    ),
}


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling, on which instance, with which rights, and the token that proved it."""

    subject: str
    kind: str
    account_id: str = ""
    instance_crn: str = ""
    plan: str = ""
    actions: frozenset[str] = frozenset()
    token: str = dataclasses.field(default="", repr=False)

    @property
    def is_service(self) -> bool:
        return self.kind == SERVICE

    def require(self, action: str) -> None:
        """Raise PermissionDenied unless the principal may take the action (services may take any)."""
        if self.is_service or action in self.actions:
            return
        raise PermissionDenied(
            f"your role on this instance does not allow {action}",
            reason="ACTION_NOT_ALLOWED",
            metadata={"action": action, "instance": self.instance_crn},
        )

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
