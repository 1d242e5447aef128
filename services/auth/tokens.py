"""Turning API keys into signed tokens: the rules of who gets which rights."""

from __future__ import annotations

from qruntime_kit.auth import ROLE_ACTIONS, SERVICE, USER, Principal
from qruntime_kit.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from qruntime_kit.tokens import issue_token, new_private_key_pem, public_key_pem

from .store import AuthStore

TOKEN_TTL_SECONDS = 3600  # like IBM Cloud IAM tokens: an hour, renewed by the client with its key


class TokenIssuer:
    """Checks API keys and signs tokens with the newest signing key."""

    def __init__(self, store: AuthStore) -> None:
        self._store = store
        keys = store.signing_keys()
        if not keys:
            private = new_private_key_pem()
            store.add_signing_key(private, public_key_pem(private))
            keys = store.signing_keys()
        self._key_id, self._private_pem = keys[0]["key_id"], keys[0]["private_key_pem"]

    def create_token(self, api_key: str, instance: str) -> tuple[str, int, dict | None, str]:
        """(token, expiry, instance row or None for services, role) for a valid key."""
        if not api_key:
            raise InvalidArgument(
                "api_key is required", reason="API_KEY_MISSING",
                field_violations=[("api_key", "give the API key you were issued")],
            )
        owner = self._store.owner_of_key(api_key)
        if owner is None:
            raise Unauthenticated("the API key is not valid", reason="API_KEY_INVALID")
        if owner.kind == SERVICE:
            principal = Principal(subject=owner.service_name or "service", kind=SERVICE)
            return (*self._sign(principal), None, "")
        if not instance:
            raise InvalidArgument(
                "instance is required: give the CRN or the name of your service instance",
                reason="INSTANCE_MISSING", field_violations=[("instance", "a CRN (crn:v1:...) or an instance name")],
            )
        row = self._store.find_instance(owner.account_id, instance)
        if row is None:
            raise NotFound(f"instance {instance!r} not found in your account", reason="INSTANCE_NOT_FOUND",
                           metadata={"instance": instance})
        role = self._store.role_of(owner.user_id, row["id"])
        if role is None:
            raise PermissionDenied(f"you have no role on instance {row['name']!r}", reason="NO_ROLE_ON_INSTANCE",
                                   metadata={"instance": row["crn"]})
        principal = Principal(
            subject=owner.user_id, kind=USER, account_id=owner.account_id, instance_crn=row["crn"],
            plan=row["plan"], actions=frozenset(ROLE_ACTIONS[role]),
        )
        return (*self._sign(principal), row, role)

    def _sign(self, principal: Principal) -> tuple[str, int]:
        return issue_token(principal, key_id=self._key_id, private_key_pem=self._private_pem,
                           ttl_seconds=TOKEN_TTL_SECONDS)
