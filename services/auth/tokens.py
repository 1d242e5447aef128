"""Turning API keys into signed tokens: the rules of who gets which rights, and signing-key rotation."""

from __future__ import annotations

import datetime as dt
import threading
import time

import jwt

from qruntime_kit.auth import (
    ACCOUNT_ADMINS,
    SERVICE,
    SERVICE_CALLS,
    SERVICE_DELEGATIONS,
    USER,
    Principal,
    actions_of,
    audience_of,
)
from qruntime_kit.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from qruntime_kit.tokens import (
    ACCOUNT_AUDIENCES,
    INSTANCE_AUDIENCES,
    MAX_LIFETIME_SECONDS,
    USER_AUDIENCES,
    decode_claims,
    issue_token,
    new_private_key_pem,
    principal_of,
    public_key,
    public_key_pem,
)

from .store import AuthStore

TOKEN_TTL_SECONDS = 3600  # like IBM Cloud IAM tokens: an hour, renewed by the client with its key
DELEGATED_TTL_SECONDS = 300  # a service acting for a user needs the token for one request's calls
SIGNING_KEY_ROTATION_SECONDS = 30 * 24 * 3600


def _invalid_key() -> Unauthenticated:
    return Unauthenticated("the API key is not valid (unknown, deleted or disabled)", reason="API_KEY_INVALID")


class TokenIssuer:
    """Checks API keys and signs tokens with the newest signing key, rotating it once it is old.

    An old key keeps verifying (ListSigningKeys lists it) until every token it signed has expired."""

    def __init__(self, store: AuthStore, rotation_seconds: float = SIGNING_KEY_ROTATION_SECONDS) -> None:
        self._store = store
        self._rotation = rotation_seconds
        self._lock = threading.Lock()
        self._key: dict | None = None

    def create_token(
        self, api_key: str, instance: str, account: str = "", audiences: tuple[str, ...] = ()
    ) -> tuple[str, int, dict | None, frozenset[str]]:
        """(token, expiry, instance row, roles) for a valid user key with roles on the instance; with
        no instance but an account ("-": the user's only one), (token, expiry, None, no roles) for
        the account."""
        if not api_key:
            raise InvalidArgument(
                "api_key is required", reason="API_KEY_MISSING",
                field_violations=[("api_key", "give the API key you were issued")],
            )
        owner = self._store.owner_of_key(api_key)
        if owner is None:
            raise _invalid_key()
        unknown = sorted(set(audiences) - set(USER_AUDIENCES))
        if unknown:
            raise InvalidArgument(f"unknown audiences {unknown}; known: {list(USER_AUDIENCES)}",
                                  reason="INVALID_AUDIENCE", field_violations=[("audiences", "service short names")])
        wanted = tuple(audiences) or (INSTANCE_AUDIENCES if instance else ACCOUNT_AUDIENCES)
        if owner.kind == SERVICE:
            raise PermissionDenied(
                "a service key cannot be exchanged here; the suite's services use CreateServiceToken on "
                "the auth service's internal address", reason="SERVICE_KEY_NOT_ACCEPTED",
            )
        user = self._enabled_user(owner.user_id)
        accounts = self._accounts_of(user)
        if not instance and account:
            return (*self._account_token(user, owner.key_id, accounts, account, wanted), None, frozenset())
        return self._instance_token(user, owner.key_id, accounts, instance, wanted)

    def exchange_token(self, claims: dict, instance: str, audiences: tuple[str, ...] = ()
                       ) -> tuple[str, int, dict, frozenset[str]]:
        """(token, expiry, instance row, roles) for the user of verified claims, on the instance: the
        checks of create_token with the API key the claims name, plus the claims' own revocation,
        read from the store now (a verifier's poll may be seconds old, and the new token's later
        issue time would escape a revocation made meanwhile). Expires no later than the claims."""
        if claims["kind"] != USER or claims.get("actor"):
            raise PermissionDenied("only a user's own token can be exchanged", reason="NOT_A_USER_TOKEN")
        key_id = claims.get("akid", "")
        key = self._store.api_key(key_id) if key_id else None
        if key is None or key["disabled"] or key["user_id"] != claims["sub"]:
            raise _invalid_key()
        revoked = {r["subject"] for r in self._store.revocations_since(claims["iat"])}
        if claims["sub"] in revoked or key_id in revoked:
            raise Unauthenticated("the bearer token was revoked (its API key, its user or their roles changed); "
                                  "get a new one with your API key", reason="TOKEN_REVOKED")
        unknown = sorted(set(audiences) - set(USER_AUDIENCES))
        if unknown:
            raise InvalidArgument(f"unknown audiences {unknown}; known: {list(INSTANCE_AUDIENCES)}",
                                  reason="INVALID_AUDIENCE", field_violations=[("audiences", "service short names")])
        # An account token may become any instance token; a narrowed token never becomes a wider one.
        own = {claims["aud"]} if isinstance(claims["aud"], str) else set(claims["aud"])
        allowed = set(INSTANCE_AUDIENCES) if "admin" in own else own & set(INSTANCE_AUDIENCES)
        wanted = tuple(audiences) or tuple(sorted(allowed))
        if set(wanted) - allowed:
            raise PermissionDenied(
                f"this token may be exchanged only for {sorted(allowed)}, not {sorted(set(wanted) - allowed)}",
                reason="AUDIENCE_NOT_ALLOWED", field_violations=[("audiences", f"a subset of {sorted(allowed)}")])
        user = self._enabled_user(claims["sub"])
        return self._instance_token(user, key_id, self._accounts_of(user), instance, wanted,
                                    expires_by=int(claims["exp"]))

    def _enabled_user(self, user_id: str) -> dict:
        user = self._store.user(user_id)
        if user is None or user["disabled"]:
            raise PermissionDenied("this user is disabled", reason="USER_DISABLED")
        return user

    def _accounts_of(self, user: dict) -> list[str]:
        return [m["account_id"] for m in self._store.memberships_of(user["id"]) if m["state"] == "active"]

    def _instance_token(self, user: dict, key_id: str, accounts: list[str], instance: str,
                        audiences: tuple[str, ...], expires_by: int | None = None
                        ) -> tuple[str, int, dict, frozenset[str]]:
        if not instance:
            raise InvalidArgument(
                "instance is required: give the CRN or the name of your service instance",
                reason="INSTANCE_MISSING", field_violations=[("instance", "a CRN (crn:v1:...) or an instance name")],
            )
        row = self._store.find_instance(accounts, instance)
        if row is None:
            raise NotFound(f"instance {instance!r} not found in your accounts", reason="INSTANCE_NOT_FOUND",
                           metadata={"instance": instance})
        roles = self._store.roles_of(user["id"], row)
        membership = self._store.membership(row["account_id"], user["id"])
        if not roles and membership["role"] not in ACCOUNT_ADMINS:
            raise PermissionDenied(f"you have no role on instance {row['name']!r}", reason="NO_ROLE_ON_INSTANCE",
                                   metadata={"instance": row["crn"]})
        principal = Principal(
            subject=user["id"], kind=USER, account_id=row["account_id"], instance_crn=row["crn"],
            plan=row["plan"], actions=actions_of(roles), account_role=membership["role"],
            operator=bool(user["operator"]),
        )
        return (*self._sign(principal, audiences, key_id, expires_by=expires_by), row, roles)

    def _account_token(self, user: dict, key_id: str, accounts: list[str], account: str,
                       audiences: tuple[str, ...]) -> tuple[str, int]:
        if account == "-" and not accounts:
            # A user no account has taken in yet: enough to see and answer invitations, manage own keys.
            return self._sign(Principal(subject=user["id"], kind=USER, operator=bool(user["operator"])),
                              audiences, key_id)
        if account == "-":
            if len(accounts) != 1:
                raise InvalidArgument(
                    f"you belong to {len(accounts)} accounts; name one", reason="ACCOUNT_AMBIGUOUS",
                    field_violations=[("account", "an account id")])
            account = accounts[0]
        if account not in accounts:
            raise NotFound(f"account {account!r} not found among yours", reason="ACCOUNT_NOT_FOUND",
                           metadata={"account": account})
        role = self._store.membership(account, user["id"])["role"]
        principal = Principal(subject=user["id"], kind=USER, account_id=account, account_role=role,
                              operator=bool(user["operator"]))
        return self._sign(principal, audiences, key_id)

    def create_service_token(self, service_key: str) -> tuple[str, int]:
        """(token, expiry) for one of the suite's services, for exactly the services it may call."""
        owner = self._store.owner_of_key(service_key)
        if owner is None or owner.kind != SERVICE:
            raise _invalid_key()
        principal = Principal(subject=owner.service_name, kind=SERVICE)
        audiences = {audience_of(m) for m in SERVICE_CALLS.get(owner.service_name, ())}
        return self._sign(principal, audiences, owner.key_id)

    def create_delegated_token(self, service_key: str, subject_token: str) -> tuple[str, int]:
        """(token, expiry) for a service to send on the subject token's user's behalf: same claims,
        audiences only the services it may call for users, at most DELEGATED_TTL_SECONDS."""
        owner = self._store.owner_of_key(service_key)
        if owner is None or owner.kind != SERVICE:
            raise _invalid_key()
        allowed = SERVICE_DELEGATIONS.get(owner.service_name)
        if not allowed:
            raise PermissionDenied(f"the {owner.service_name} service acts for no user", reason="NO_DELEGATION")
        try:
            key_id = jwt.get_unverified_header(subject_token).get("kid", "")
        except jwt.PyJWTError:
            raise Unauthenticated("the subject token is not a token this service issued",
                                  reason="TOKEN_INVALID") from None
        pem = next((k["public_key_pem"] for k in self._store.signing_keys() if k["key_id"] == key_id), None)
        if pem is None:
            raise Unauthenticated("the subject token was signed by an unknown key", reason="TOKEN_INVALID")
        claims = decode_claims(subject_token, public_key(pem), owner.service_name)
        if claims["kind"] != USER:
            raise PermissionDenied("only a user's token can be delegated", reason="NOT_A_USER_TOKEN")
        revoked = {r["subject"]: r["revoke_time"]
                   for r in self._store.revocations_since(claims["iat"])}
        if claims["sub"] in revoked or claims.get("akid", "") in revoked:
            raise Unauthenticated("the subject token was revoked", reason="TOKEN_REVOKED")
        return self._sign(principal_of(claims), allowed, claims.get("akid", ""), expires_by=int(claims["exp"]),
                          ttl_seconds=DELEGATED_TTL_SECONDS, actor=owner.service_name)

    def _sign(self, principal: Principal, audiences, api_key_id: str, *, ttl_seconds: int | None = None,
              expires_by: int | None = None, actor: str = "") -> tuple[str, int]:
        key = self._signing_key()
        ttl_seconds = TOKEN_TTL_SECONDS if ttl_seconds is None else ttl_seconds  # read now: tests change it
        return issue_token(principal, key_id=key["key_id"], private_key_pem=key["private_key_pem"],
                           ttl_seconds=min(ttl_seconds, MAX_LIFETIME_SECONDS), audiences=audiences,
                           api_key_id=api_key_id, expires_by=expires_by, actor=actor)

    def _signing_key(self) -> dict:
        with self._lock:
            if self._key is None or self._age(self._key) > self._rotation:
                keys = self._store.signing_keys()
                if not keys or self._age(keys[0]) > self._rotation:
                    private = new_private_key_pem()
                    self._store.add_signing_key(private, public_key_pem(private))
                    # A retired key may still have signed tokens in force: keep it a lifetime longer.
                    keep_after = time.time() - self._rotation - MAX_LIFETIME_SECONDS - 60
                    self._store.retire_signing_keys(dt.datetime.fromtimestamp(keep_after, dt.UTC))
                    keys = self._store.signing_keys()
                self._key = keys[0]
            return self._key

    @staticmethod
    def _age(key: dict) -> float:
        created = key["create_time"]
        if created.tzinfo is None:  # SQLite gives back naive UTC
            created = created.replace(tzinfo=dt.UTC)
        return time.time() - created.timestamp()
